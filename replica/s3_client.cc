#include "replica/s3_client.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>

#include "replica/s3_etag.h"
#include "replica/s3_url.h"

namespace replica {

using services::Result;
using services::Status;

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

// Full jitter (AWS's "exponential backoff and jitter"): a random wait in [0, cap) spreads out
// clients that failed together instead of having them retry in lockstep.
int64_t BackoffMs(int retry, int64_t base_ms, int64_t max_ms) {
  int64_t cap = base_ms;
  for (int i = 1; i < retry && cap < max_ms; ++i) cap *= 2;
  cap = std::min(cap, max_ms);
  if (cap <= 0) return 0;
  thread_local std::mt19937_64 rng(std::random_device{}());
  return std::uniform_int_distribution<int64_t>(0, cap - 1)(rng);
}

bool IsRetryableStatus(long status, const std::string& code) {
  // 501 means "not implemented": asking again will not implement it.
  if (status >= 500 && status != 501) return true;
  if (status == 429) return true;
  // AWS answers 409 ConditionalRequestConflict when two conditional writes to one key race and
  // asks the caller to try again.
  return status == 409 && code == "ConditionalRequestConflict";
}

bool Is2xx(long status) { return status >= 200 && status < 300; }

// What to check, for the errors a misconfiguration causes; the store's own code and message
// come first in the error, this follows.
std::string S3ErrorHint(long status, const S3ErrorBody& e, const std::string& region) {
  const std::string& c = e.code;
  if (c == "SignatureDoesNotMatch") {
    return "check secret_access_key (or AWS_SECRET_ACCESS_KEY) and that this machine's clock is "
           "right";
  }
  if (c == "InvalidAccessKeyId") return "check access_key_id (or AWS_ACCESS_KEY_ID)";
  if (c == "RequestTimeTooSkewed") return "this machine's clock is off; fix it (NTP)";
  if (c == "ExpiredToken" || c == "InvalidToken") {
    return "the session token expired or is wrong; refresh session_token (AWS_SESSION_TOKEN)";
  }
  if (c == "NoSuchBucket") return "create the bucket or fix the bucket in the replica url";
  if (c == "AuthorizationHeaderMalformed" || c == "PermanentRedirect" || status == 301) {
    return "the bucket may live in another region than " + region + "; set region" +
           (e.region.empty() ? std::string() : " to " + e.region);
  }
  if (status == 403) {
    return "check the credentials and that they may read, write, list and delete in this bucket";
  }
  if (status == 404) return "the object does not exist";
  if (status >= 500 || status == 429) {
    return "the store kept failing or throttling; it may be down or overloaded, try again later";
  }
  return "the store refused the request";
}

Status ValidateS3Options(const S3Options& o) {
  // S3 refuses parts under 5 MiB (but the last); smaller ones would only work on some stores.
  if (o.part_size < (5 << 20)) {
    return Status::InvalidArgument("S3 part_size must be at least 5 MiB (S3's minimum part size)");
  }
  if (o.multipart_threshold < 1) {
    return Status::InvalidArgument("S3 multipart_threshold must be positive");
  }
  if (o.max_attempts < 1 || o.max_attempts > 100) {
    return Status::InvalidArgument("S3 max_attempts must be between 1 and 100");
  }
  if (o.delete_batch_size < 1 || o.delete_batch_size > 1000) {
    return Status::InvalidArgument("S3 delete_batch_size must be between 1 and 1000");
  }
  if (o.list_page_size < 1 || o.list_page_size > 1000) {
    return Status::InvalidArgument("S3 list_page_size must be between 1 and 1000");
  }
  if (o.retry_base_ms < 0 || o.retry_max_backoff_ms < 0) {
    return Status::InvalidArgument("S3 retry backoff must not be negative");
  }
  return Status::Ok();
}

Status FsyncParentDir(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IoError("cannot open directory " + dir + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::IoError("cannot fsync directory " + dir + ": " + std::strerror(err));
  return Status::Ok();
}

}  // namespace

bool S3Client::IsNotImplemented(const S3ErrorBody& error, long status) {
  return status == 501 || error.code == "NotImplemented";
}

Status S3Client::ReadFully(int fd, int64_t offset, int64_t n, std::string* out) {
  out->resize(static_cast<size_t>(n));
  int64_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, out->data() + done, static_cast<size_t>(n - done), offset + done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::IoError(std::string("cannot read: ") + std::strerror(errno));
    if (r == 0) return Status::IoError("the file shrank while it was being uploaded");
    done += r;
  }
  return Status::Ok();
}

// --- Creation and addressing --------------------------------------------------------------------

Result<std::unique_ptr<S3Client>> S3Client::Create(const S3Options& options) {
  S3Options o = options;
  auto url = ParseS3Url(o.url);
  if (!url.ok()) return url.status();
  if (o.region.empty()) o.region = Env("AWS_REGION");
  if (o.region.empty()) o.region = Env("AWS_DEFAULT_REGION");
  if (o.region.empty()) o.region = "us-east-1";
  bool on_aws = o.endpoint.empty();
  if (on_aws) o.endpoint = "https://s3." + o.region + ".amazonaws.com";
  auto endpoint = ParseEndpoint(o.endpoint);
  if (!endpoint.ok()) return endpoint.status();

  SigV4Credentials credentials{o.access_key_id, o.secret_access_key, o.session_token};
  if (credentials.access_key_id.empty()) {
    credentials = {Env("AWS_ACCESS_KEY_ID"), Env("AWS_SECRET_ACCESS_KEY"),
                   Env("AWS_SESSION_TOKEN")};
  }
  if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
    return Status::InvalidArgument(
        "no S3 credentials for " + o.url +
        ": set access_key_id and secret_access_key in [replica] (e.g. \"${AWS_ACCESS_KEY_ID}\") "
        "or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
  }
  GW_RETURN_IF_ERROR(ValidateS3Options(o));

  std::unique_ptr<S3Client> client(new S3Client(o, credentials));
  client->bucket_ = url->bucket;
  client->root_ = url->prefix.empty() ? "" : url->prefix + "/";
  client->scheme_ = endpoint->scheme;
  client->endpoint_host_ = endpoint->host;
  bool dotted = url->bucket.find('.') != std::string::npos;
  client->path_style_ = o.force_path_style.value_or(!on_aws || dotted);
  if (o.conditional_writes == ConditionalWrites::kNative) client->conditional_state_ = 1;
  if (o.conditional_writes == ConditionalWrites::kEmulated) {
    client->conditional_state_ = 2;
    client->conditional_note_ = "conditional writes emulated by configuration";
  }
  return client;
}

S3Client::S3Client(S3Options options, SigV4Credentials credentials)
    : options_(std::move(options)),
      credentials_(std::move(credentials)),
      http_(std::make_unique<HttpClient>(options_.timeouts)) {}

std::string S3Client::Where() const {
  std::string out = "s3://" + bucket_;
  if (!root_.empty()) out += "/" + root_.substr(0, root_.size() - 1);
  return out + " at " + scheme_ + "://" + endpoint_host_;
}

std::string S3Client::Describe() const {
  std::string out = Where();
  if (conditional_state_.load() == 2) {
    std::lock_guard lock(conditional_mu_);
    out += " (" + conditional_note_ + ")";
  }
  return out;
}

std::string S3Client::FullKey(const std::string& key) const { return root_ + key; }

std::string S3Client::ObjectUrlForMessages(const std::string& full_key) const {
  return "s3://" + bucket_ + "/" + full_key + " at " + scheme_ + "://" + endpoint_host_;
}

S3Client::Target S3Client::MakeTarget(const std::string& full_key) const {
  Target t;
  if (path_style_) {
    t.host = endpoint_host_;
    t.path = "/" + bucket_ + (full_key.empty() ? "" : "/" + full_key);
  } else {
    t.host = bucket_ + "." + endpoint_host_;
    t.path = "/" + full_key;
  }
  t.url = scheme_ + "://" + t.host + UriEncode(t.path, true);
  return t;
}

void S3Client::Log(const std::string& message) const {
  if (options_.log) options_.log(message);
}

ClientStats S3Client::Stats() const {
  return {requests_.load(), bytes_sent_.load(), bytes_received_.load(), retries_.load()};
}

// --- Sending, retrying, explaining failures -----------------------------------------------------

Result<S3Client::Reply> S3Client::Execute(const Call& call) {
  Target target = MakeTarget(call.bucket_level ? std::string() : call.full_key);
  std::string url = target.url;
  for (size_t i = 0; i < call.query.size(); ++i) {
    url += (i == 0 ? "?" : "&") + UriEncode(call.query[i].first, false) + "=" +
           UriEncode(call.query[i].second, false);
  }
  std::string sha = call.payload_sha256.empty() ? Sha256Hex(call.body) : call.payload_sha256;
  std::string what =
      "S3 " + call.method + " " + ObjectUrlForMessages(call.bucket_level ? "" : call.full_key);

  for (int attempt = 1;; ++attempt) {
    if (attempt > 1) {
      retries_++;
      std::this_thread::sleep_for(std::chrono::milliseconds(
          BackoffMs(attempt - 1, options_.retry_base_ms, options_.retry_max_backoff_ms)));
    }
    if (call.response_fd >= 0) {
      // A retry rewrites the temporary file from the start, not after a failed try's bytes.
      if (::ftruncate(call.response_fd, 0) != 0 || ::lseek(call.response_fd, 0, SEEK_SET) != 0) {
        return Status::IoError(what +
                               ": cannot rewind the temporary file: " + std::strerror(errno));
      }
    }
    auto now = std::chrono::system_clock::now().time_since_epoch();
    SigV4Request to_sign{call.method, target.host, target.path, call.query, call.headers, sha};
    SigV4Headers sig =
        SignV4(to_sign, credentials_, options_.region, "s3",
               AmzDate(std::chrono::duration_cast<std::chrono::seconds>(now).count()));
    HttpRequest request{call.method, url, call.headers, call.body, call.response_fd};
    request.headers.emplace_back("x-amz-date", sig.amz_date);
    request.headers.emplace_back("x-amz-content-sha256", sig.content_sha256);
    if (!sig.security_token.empty()) {
      request.headers.emplace_back("x-amz-security-token", sig.security_token);
    }
    request.headers.emplace_back("Authorization", sig.authorization);

    requests_++;
    bytes_sent_ += static_cast<int64_t>(call.body.size());
    Reply reply;
    TransportFailure failure;
    if (!http_->Send(request, &reply.http, &failure)) {
      bytes_received_ += reply.http.body_bytes;
      if (failure.retryable && attempt < options_.max_attempts) continue;
      std::string tries = attempt > 1 ? " after " + std::to_string(attempt) + " tries" : "";
      Log(what + " gave up" + tries + ": " + failure.message);
      return Status::IoError(what + " failed" + tries + ": " + failure.message +
                             "; check that the store is running and reachable at " + scheme_ +
                             "://" + endpoint_host_ + " (endpoint) and the network is up");
    }
    bytes_received_ += reply.http.body_bytes;
    reply.attempts = attempt;
    long status = reply.http.status;
    if (!Is2xx(status)) reply.error = ParseErrorBody(reply.http.body);
    if (Is2xx(status) && call.error_in_200 && IsErrorDocument(reply.http.body)) {
      // The answer to a long CompleteMultipartUpload: 200 headers sent early, the error later.
      reply.error = ParseErrorBody(reply.http.body);
      reply.http.status = status = 500;
    }
    if (IsRetryableStatus(status, reply.error.code) && attempt < options_.max_attempts) continue;
    return reply;
  }
}

Status S3Client::ErrorFor(const Call& call, const Reply& reply) const {
  long status = reply.http.status;
  const S3ErrorBody& e = reply.error;
  std::string msg = "S3 " + call.method + " " +
                    ObjectUrlForMessages(call.bucket_level ? "" : call.full_key) + " failed";
  if (reply.attempts > 1) msg += " after " + std::to_string(reply.attempts) + " tries";
  msg += ": " + std::to_string(status);
  if (!e.code.empty()) msg += " " + e.code;
  if (!e.message.empty()) msg += " (" + e.message + ")";
  msg += "; " + S3ErrorHint(status, e, options_.region);
  if (status == 404 && (e.code.empty() || e.code == "NoSuchKey")) return Status::NotFound(msg);
  return Status::IoError(msg);
}

// --- Conditional writes: native or emulated -----------------------------------------------------

Result<bool> S3Client::UseNativeConditional() {
  int state = conditional_state_.load();
  if (state != 0) return state == 1;
  std::lock_guard lock(conditional_mu_);
  if (conditional_state_.load() == 0) GW_RETURN_IF_ERROR(ProbeConditional());
  return conditional_state_.load() == 1;
}

Result<bool> S3Client::ConditionalWritesSupported() { return UseNativeConditional(); }

void S3Client::MarkConditionalUnsupported(std::string_view why) {
  {
    std::lock_guard lock(conditional_mu_);
    if (conditional_state_.load() == 2) return;
    conditional_note_ = "conditional writes emulated with HEAD then PUT: " + std::string(why);
    conditional_state_ = 2;
  }
  Log(Where() + ": the store does not support conditional writes (" + std::string(why) +
      "); falling back to HEAD then PUT, which is not atomic: keep a single writer per replica");
}

// Called with conditional_mu_ held. Writes a probe object, then tries to overwrite it with
// If-None-Match: * and with a wrong If-Match: a store that honours them refuses both with 412.
Status S3Client::ProbeConditional() {
  unsigned char rnd[8];
  RAND_bytes(rnd, sizeof(rnd));
  std::string full = root_ + ".gateway-probe/conditional-" + HexBytes(rnd, sizeof(rnd));
  auto created = SendPut(full, "probe", {});
  if (!created.ok()) return created.status();
  if (!Is2xx(created->http.status)) return ErrorFor({"PUT", full}, *created);

  std::string why;
  auto inm = SendPut(full, "probe-if-none-match", {{"If-None-Match", "*"}});
  if (!inm.ok()) return inm.status();
  if (Is2xx(inm->http.status)) why = "the store ignores If-None-Match";
  if (IsNotImplemented(inm->error, inm->http.status)) why = "the store refuses If-None-Match";
  if (why.empty()) {
    auto im =
        SendPut(full, "probe-if-match", {{"If-Match", "\"0123456789abcdef0123456789abcdef\""}});
    if (!im.ok()) return im.status();
    if (Is2xx(im->http.status)) why = "the store ignores If-Match";
    if (IsNotImplemented(im->error, im->http.status)) why = "the store refuses If-Match";
  }
  Execute({"DELETE", full}).status().ok();  // best effort: a leftover probe object is harmless

  if (why.empty()) {
    conditional_state_ = 1;
    return Status::Ok();
  }
  conditional_note_ = "conditional writes emulated with HEAD then PUT: " + why;
  conditional_state_ = 2;
  Log(Where() + ": " + why +
      "; falling back to HEAD then PUT, which is not atomic: keep a "
      "single writer per replica");
  return Status::Ok();
}

bool S3Client::LandedEarlier(const std::string& full_key, const std::string& expected_etag) {
  auto info = HeadFull(full_key);
  return info.ok() && EtagsEqual(info->etag, expected_etag);
}

// --- Writes -------------------------------------------------------------------------------------

Result<S3Client::Reply> S3Client::SendPut(
    const std::string& full_key, std::string_view data,
    std::vector<std::pair<std::string, std::string>> headers) {
  Call call{"PUT", full_key};
  call.headers = std::move(headers);
  call.headers.emplace_back("Content-Type", "application/octet-stream");
  call.body = data;
  return Execute(call);
}

Result<std::string> S3Client::EtagAfterPut(const std::string& full_key, const Reply& reply) {
  auto it = reply.http.headers.find("etag");
  if (it != reply.http.headers.end() && !it->second.empty()) return QuoteEtag(it->second);
  auto info = HeadFull(full_key);
  if (!info.ok()) return info.status();
  return info->etag;
}

Status S3Client::Put(const std::string& key, std::string_view data) {
  GW_RETURN_IF_ERROR(ValidateKey(key, root_));
  std::string full = FullKey(key);
  auto reply = SendPut(full, data, {});
  if (!reply.ok()) return reply.status();
  if (!Is2xx(reply->http.status)) return ErrorFor({"PUT", full}, *reply);
  return Status::Ok();
}

Status S3Client::PutNewNative(const std::string& full_key, std::string_view data,
                              bool* unsupported) {
  auto reply = SendPut(full_key, data, {{"If-None-Match", "*"}});
  if (!reply.ok()) return reply.status();
  long status = reply->http.status;
  if (Is2xx(status)) return Status::Ok();
  if (status == 412) {
    if (reply->attempts > 1 && LandedEarlier(full_key, QuotedMd5(data))) return Status::Ok();
    return Status::AlreadyExists("S3 object " + ObjectUrlForMessages(full_key) +
                                 " already exists (If-None-Match: * refused the PUT)");
  }
  if (IsNotImplemented(reply->error, status)) {
    *unsupported = true;
    return Status::Ok();
  }
  return ErrorFor({"PUT", full_key}, *reply);
}

Status S3Client::PutNewEmulated(const std::string& full_key, std::string_view data) {
  auto info = HeadFull(full_key);
  if (info.ok()) {
    return Status::AlreadyExists("S3 object " + ObjectUrlForMessages(full_key) + " already exists");
  }
  if (info.status().code() != Status::Code::kNotFound) return info.status();
  auto reply = SendPut(full_key, data, {});
  if (!reply.ok()) return reply.status();
  if (!Is2xx(reply->http.status)) return ErrorFor({"PUT", full_key}, *reply);
  return Status::Ok();
}

Status S3Client::PutNew(const std::string& key, std::string_view data) {
  GW_RETURN_IF_ERROR(ValidateKey(key, root_));
  std::string full = FullKey(key);
  auto native = UseNativeConditional();
  if (!native.ok()) return native.status();
  if (*native) {
    bool unsupported = false;
    Status s = PutNewNative(full, data, &unsupported);
    if (!unsupported) return s;
    MarkConditionalUnsupported("the store answered If-None-Match with NotImplemented");
  }
  return PutNewEmulated(full, data);
}

Result<std::string> S3Client::PutIfMatchNative(const std::string& full_key, std::string_view data,
                                               const std::string& etag, bool* unsupported) {
  auto reply = etag.empty() ? SendPut(full_key, data, {{"If-None-Match", "*"}})
                            : SendPut(full_key, data, {{"If-Match", etag}});
  if (!reply.ok()) return reply.status();
  long status = reply->http.status;
  if (Is2xx(status)) return EtagAfterPut(full_key, *reply);
  // 404: If-Match on a key that is gone no longer matches either.
  if (status == 412 || (status == 404 && !etag.empty())) {
    std::string ours = QuotedMd5(data);
    if (reply->attempts > 1 && LandedEarlier(full_key, ours)) return ours;
    return Status::FailedPrecondition(
        "S3 object " + ObjectUrlForMessages(full_key) +
        (etag.empty() ? " already exists" : " changed: its ETag is no longer " + etag) +
        " (another writer got there first)");
  }
  if (IsNotImplemented(reply->error, status)) {
    *unsupported = true;
    return std::string();
  }
  return ErrorFor({"PUT", full_key}, *reply);
}

Result<std::string> S3Client::PutIfMatchEmulated(const std::string& full_key, std::string_view data,
                                                 const std::string& etag) {
  auto info = HeadFull(full_key);
  if (!info.ok() && info.status().code() != Status::Code::kNotFound) return info.status();
  bool exists = info.ok();
  if (etag.empty() ? exists : (!exists || !EtagsEqual(info->etag, etag))) {
    return Status::FailedPrecondition(
        "S3 object " + ObjectUrlForMessages(full_key) +
        (etag.empty() ? " already exists" : " changed: its ETag is no longer " + etag) +
        " (another writer got there first)");
  }
  auto reply = SendPut(full_key, data, {});
  if (!reply.ok()) return reply.status();
  if (!Is2xx(reply->http.status)) return ErrorFor({"PUT", full_key}, *reply);
  return EtagAfterPut(full_key, *reply);
}

Result<std::string> S3Client::PutIfMatch(const std::string& key, std::string_view data,
                                         const std::string& etag) {
  GW_RETURN_IF_ERROR(ValidateKey(key, root_));
  std::string full = FullKey(key);
  auto native = UseNativeConditional();
  if (!native.ok()) return native.status();
  if (*native) {
    bool unsupported = false;
    auto r = PutIfMatchNative(full, data, etag, &unsupported);
    if (!unsupported) return r;
    MarkConditionalUnsupported("the store answered If-Match with NotImplemented");
  }
  return PutIfMatchEmulated(full, data, etag);
}

Status S3Client::PutFileNew(const std::string& key, const std::string& path) {
  GW_RETURN_IF_ERROR(ValidateKey(key, root_));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IoError("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    Status s = Status::IoError("cannot stat " + path + ": " + std::strerror(errno));
    ::close(fd);
    return s;
  }
  Status s;
  if (st.st_size <= options_.multipart_threshold) {
    std::string data;
    s = ReadFully(fd, 0, st.st_size, &data);
    if (s.ok()) s = PutNew(key, data);
  } else {
    s = PutFileMultipart(FullKey(key), fd, st.st_size);
  }
  ::close(fd);
  return s.ok() ? s : s.WithContext("uploading " + path);
}

// --- Reads --------------------------------------------------------------------------------------

Result<std::string> S3Client::Get(const std::string& key) {
  GW_RETURN_IF_ERROR(ValidateKey(key, root_));
  Call call{"GET", FullKey(key)};
  auto reply = Execute(call);
  if (!reply.ok()) return reply.status();
  if (!Is2xx(reply->http.status)) return ErrorFor(call, *reply);
  return std::move(reply->http.body);
}

Status S3Client::GetToFile(const std::string& key, const std::string& path) {
  GW_RETURN_IF_ERROR(ValidateKey(key, root_));
  unsigned char rnd[6];
  RAND_bytes(rnd, sizeof(rnd));
  // Beside the target, so the rename stays inside one file system and is atomic.
  std::string tmp = path + ".tmp-" + HexBytes(rnd, sizeof(rnd));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError("cannot create " + tmp + ": " + std::strerror(errno));
  Call call{"GET", FullKey(key)};
  call.response_fd = fd;
  auto reply = Execute(call);
  Status s;
  if (!reply.ok()) {
    s = reply.status();
  } else if (!Is2xx(reply->http.status)) {
    s = ErrorFor(call, *reply);
  } else if (::fsync(fd) != 0) {  // the data is on disk before the name points at it
    s = Status::IoError("cannot fsync " + tmp + ": " + std::strerror(errno));
  }
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = Status::IoError("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return FsyncParentDir(path);  // the rename itself survives a crash
}

Result<ObjectInfo> S3Client::HeadFull(const std::string& full_key) {
  Call call{"HEAD", full_key};
  auto reply = Execute(call);
  if (!reply.ok()) return reply.status();
  if (!Is2xx(reply->http.status)) return ErrorFor(call, *reply);
  ObjectInfo info;
  info.key = full_key.substr(root_.size());
  const auto& h = reply->http.headers;
  if (auto it = h.find("content-length"); it != h.end()) info.size = std::atoll(it->second.c_str());
  if (auto it = h.find("etag"); it != h.end()) info.etag = QuoteEtag(it->second);
  if (auto it = h.find("last-modified"); it != h.end()) {
    time_t t = curl_getdate(it->second.c_str(), nullptr);
    if (t >= 0) info.mtime_ms = static_cast<int64_t>(t) * 1000;
  }
  return info;
}

Result<ObjectInfo> S3Client::Head(const std::string& key) {
  GW_RETURN_IF_ERROR(ValidateKey(key, root_));
  return HeadFull(FullKey(key));
}

Result<std::vector<ObjectInfo>> S3Client::List(const std::string& prefix) {
  std::vector<ObjectInfo> out;
  std::string token;
  for (;;) {
    Call call{"GET"};
    call.bucket_level = true;
    call.query = {{"list-type", "2"},
                  {"prefix", root_ + prefix},
                  {"max-keys", std::to_string(options_.list_page_size)}};
    // No encoding-type=url: our keys have no control characters, so XML carries them as they
    // are, and some servers (rclone 1.75) encode keys lossily when asked ("+" left as is).
    if (!token.empty()) call.query.emplace_back("continuation-token", token);
    auto reply = Execute(call);
    if (!reply.ok()) return reply.status();
    if (!Is2xx(reply->http.status)) return ErrorFor(call, *reply);
    auto page = ParseListObjectsV2(reply->http.body);
    if (!page.ok())
      return page.status().WithContext("S3 list of s3://" + bucket_ + "/" + root_ + prefix);
    for (auto& e : page->entries) {
      // A store that ignored the prefix must not hand us other replicas' objects.
      if (!e.key.starts_with(root_ + prefix)) continue;
      out.push_back({e.key.substr(root_.size()), e.size, e.mtime_ms, QuoteEtag(e.etag)});
    }
    if (!page->truncated) break;
    if (page->next_continuation_token == token) {
      return Status::IoError("S3 list of s3://" + bucket_ + "/" + root_ + prefix +
                             ": the store repeated its continuation token");
    }
    token = page->next_continuation_token;
  }
  std::sort(out.begin(), out.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  return out;
}

Status S3Client::Delete(const std::string& key) {
  GW_RETURN_IF_ERROR(ValidateKey(key, root_));
  Call call{"DELETE", FullKey(key)};
  auto reply = Execute(call);
  if (!reply.ok()) return reply.status();
  if (Is2xx(reply->http.status) || reply->http.status == 404) return Status::Ok();
  return ErrorFor(call, *reply);
}

Status S3Client::DeleteBatch(const std::vector<std::string>& full_keys, bool* unsupported) {
  const std::string body = DeleteObjectsXml(full_keys);
  const std::string md5 = Md5Raw(body);
  // S3 refuses a DeleteObjects request without a checksum of its body.
  unsigned char b64[32];
  const int n = EVP_EncodeBlock(b64, reinterpret_cast<const unsigned char*>(md5.data()),
                                static_cast<int>(md5.size()));
  Call call{"POST"};
  call.bucket_level = true;
  call.query = {{"delete", ""}};
  call.headers = {
      {"Content-MD5", std::string(reinterpret_cast<char*>(b64), static_cast<size_t>(n))},
      {"Content-Type", "application/xml"}};
  call.body = body;
  call.error_in_200 = true;  // a 200 whose body is an <Error> is retried like a 500
  auto reply = Execute(call);
  if (!reply.ok()) return reply.status();
  if (IsNotImplemented(reply->error, reply->http.status)) {
    *unsupported = true;
    return Status::Ok();
  }
  if (!Is2xx(reply->http.status)) return ErrorFor(call, *reply);
  auto errors = ParseDeleteResult(reply->http.body);
  if (!errors.ok()) return errors.status().WithContext("S3 DeleteObjects in s3://" + bucket_);
  size_t failed = 0;
  const S3DeleteError* first = nullptr;
  for (const S3DeleteError& e : *errors) {
    if (e.code == "NoSuchKey") continue;  // already gone, which is what we wanted
    ++failed;
    if (first == nullptr) first = &e;
  }
  if (first == nullptr) return Status::Ok();
  return Status::IoError(
      "S3 DeleteObjects in " + ObjectUrlForMessages("") + " left " + std::to_string(failed) +
      " of " + std::to_string(full_keys.size()) + " keys; first " + first->key + ": " +
      first->code + (first->message.empty() ? "" : " (" + first->message + ")") +
      (first->code == "AccessDenied" ? "; check that the credentials may delete in this bucket"
                                     : ""));
}

Status S3Client::DeleteMany(const std::vector<std::string>& keys) {
  for (const std::string& key : keys) GW_RETURN_IF_ERROR(ValidateKey(key, root_));
  const size_t batch = static_cast<size_t>(options_.delete_batch_size);
  // Every batch is tried even after one failed, so one bad request does not leave the rest of
  // the keys for the next retention pass; the first error is the answer.
  Status first_error = Status::Ok();
  auto note = [&first_error](Status st) {
    if (first_error.ok() && !st.ok()) first_error = std::move(st);
  };
  for (size_t start = 0; start < keys.size(); start += batch) {
    const size_t end = std::min(keys.size(), start + batch);
    if (!batch_delete_unsupported_.load()) {
      std::vector<std::string> full;
      full.reserve(end - start);
      for (size_t i = start; i < end; ++i) full.push_back(FullKey(keys[i]));
      bool unsupported = false;
      Status st = DeleteBatch(full, &unsupported);
      if (!st.ok() || !unsupported) {
        note(std::move(st));
        continue;
      }
      if (!batch_delete_unsupported_.exchange(true)) {
        Log(Where() +
            ": the store answered DeleteObjects with NotImplemented; deleting one "
            "object per request from now on");
      }
    }
    for (size_t i = start; i < end; ++i) note(Delete(keys[i]));
  }
  return first_error;
}

}  // namespace replica
