// S3Client's multipart upload (PutFileNew of large files): CreateMultipartUpload, UploadPart for
// each part in order, CompleteMultipartUpload, and AbortMultipartUpload when anything fails so
// the store does not keep (and bill for) orphaned parts.
#include <algorithm>
#include <string>
#include <vector>

#include "replica/s3_client.h"
#include "replica/s3_etag.h"

namespace replica {

using services::Result;
using services::Status;

namespace {

// S3 allows at most this many parts in one upload.
constexpr int64_t kMaxParts = 10000;

bool Is2xx(long status) { return status >= 200 && status < 300; }

}  // namespace

Status S3Client::PutFileMultipart(const std::string& full_key, int fd, int64_t size) {
  auto native = UseNativeConditional();
  if (!native.ok()) return native.status();
  if (!*native) {
    // Emulated create-if-absent: look first. The upload can still race another writer.
    auto info = HeadFull(full_key);
    if (info.ok()) {
      return Status::AlreadyExists("S3 object " + ObjectUrlForMessages(full_key) +
                                   " already exists");
    }
    if (info.status().code() != Status::Code::kNotFound) return info.status();
  }
  // Bigger parts when the file would need more than S3's part limit, rounded up to whole MiB.
  int64_t part_size = std::max(options_.part_size, (size + kMaxParts - 1) / kMaxParts);
  part_size = (part_size + (1 << 20) - 1) / (1 << 20) * (1 << 20);

  Call start{"POST", full_key};
  start.query = {{"uploads", ""}};
  start.headers = {{"Content-Type", "application/octet-stream"}};
  auto started = Execute(start);
  if (!started.ok()) return started.status();
  if (!Is2xx(started->http.status)) return ErrorFor(start, *started);
  auto upload_id = ParseUploadId(started->http.body);
  if (!upload_id.ok()) return upload_id.status();

  std::vector<std::pair<int, std::string>> parts;
  std::vector<std::string> md5s;
  std::string buffer;
  for (int64_t offset = 0; offset < size; offset += part_size) {
    int number = static_cast<int>(parts.size()) + 1;
    Status s = ReadFully(fd, offset, std::min(part_size, size - offset), &buffer);
    if (!s.ok()) {
      AbortMultipart(full_key, *upload_id);
      return s;
    }
    Call part{"PUT", full_key};
    part.query = {{"partNumber", std::to_string(number)}, {"uploadId", *upload_id}};
    part.body = buffer;
    auto reply = Execute(part);
    Status failed;
    if (!reply.ok()) {
      failed = reply.status();
    } else if (!Is2xx(reply->http.status)) {
      failed = ErrorFor(part, *reply);
    } else if (!reply->http.headers.contains("etag")) {
      failed = Status::IoError("S3 upload of part " + std::to_string(number) + " of " +
                               ObjectUrlForMessages(full_key) + ": the store sent no ETag");
    }
    if (!failed.ok()) {
      AbortMultipart(full_key, *upload_id);
      return failed.WithContext("part " + std::to_string(number));
    }
    parts.emplace_back(number, reply->http.headers.at("etag"));
    md5s.push_back(Md5Raw(buffer));
  }
  Status s = CompleteMultipart(full_key, *upload_id, parts, MultipartEtag(md5s));
  if (!s.ok()) AbortMultipart(full_key, *upload_id);
  return s;
}

Status S3Client::CompleteMultipart(const std::string& full_key, const std::string& upload_id,
                                   const std::vector<std::pair<int, std::string>>& parts,
                                   const std::string& expected_etag) {
  std::string body = CompleteMultipartXml(parts);
  Call call{"POST", full_key};
  call.query = {{"uploadId", upload_id}};
  call.headers = {{"Content-Type", "application/xml"}};
  // The create-if-absent check happens here, when the object would appear (AWS supports
  // If-None-Match on CompleteMultipartUpload).
  bool native = conditional_state_.load() == 1;
  if (native) call.headers.emplace_back("If-None-Match", "*");
  call.body = body;
  call.error_in_200 = true;
  auto reply = Execute(call);
  if (!reply.ok()) return reply.status();
  long status = reply->http.status;
  if (Is2xx(status)) return Status::Ok();
  // A retry after a lost answer finds the upload already completed (NoSuchUpload) or the object
  // already there (412): that is success if the object is ours.
  bool retried_away = reply->attempts > 1 && (status == 412 || reply->error.code == "NoSuchUpload");
  if (retried_away && LandedEarlier(full_key, expected_etag)) return Status::Ok();
  if (status == 412) {
    return Status::AlreadyExists("S3 object " + ObjectUrlForMessages(full_key) +
                                 " already exists (If-None-Match: * refused the upload)");
  }
  if (native && IsNotImplemented(reply->error, status)) {
    // The store refuses the conditional header here: complete without it, after a look.
    MarkConditionalUnsupported("the store answered If-None-Match with NotImplemented");
    if (HeadFull(full_key).ok()) {
      return Status::AlreadyExists("S3 object " + ObjectUrlForMessages(full_key) +
                                   " already exists");
    }
    return CompleteMultipart(full_key, upload_id, parts, expected_etag);
  }
  return ErrorFor(call, *reply);
}

void S3Client::AbortMultipart(const std::string& full_key, const std::string& upload_id) {
  Call call{"DELETE", full_key};
  call.query = {{"uploadId", upload_id}};
  auto reply = Execute(call);
  if (!reply.ok() || (!Is2xx(reply->http.status) && reply->http.status != 404)) {
    Log("S3 could not abort multipart upload " + upload_id + " of " +
        ObjectUrlForMessages(full_key) +
        "; its parts stay in the bucket until a lifecycle rule removes them");
  }
}

}  // namespace replica
