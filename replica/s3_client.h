// S3Client: the ReplicaClient for "s3://bucket/prefix" on AWS S3 or any S3-compatible store.
//
// Requests are signed with AWS Signature V4 (replica/sigv4.h) and sent with libcurl
// (replica/http.h), keeping connections alive between calls. Each request is retried, with
// exponential backoff and full jitter, on 5xx (but 501), 429, timeouts and refused or reset
// connections, up to S3Options::max_attempts tries; 4xx answers other than 429 are final.
//
// Creation is conditional where the store allows it: PutNew and PutFileNew send
// "If-None-Match: *" (a 412 answer is kAlreadyExists) and PutIfMatch sends "If-Match". Some
// S3-compatible servers ignore these headers and overwrite; others answer 501. Unless told
// otherwise (S3Options::conditional_writes), the client finds out once, on the first conditional
// write, by writing and deleting a probe object under the prefix; on a store without support it
// falls back to HEAD-then-PUT, which is not atomic: two writers racing for the same key can both
// "win". Describe() then says so, and S3Options::log is told once.
//
// DeleteMany sends DeleteObjects requests (POST ?delete, up to delete_batch_size keys each, with
// a Content-MD5 header) and checks the result's per-key errors. A store that answers one with 501
// or NotImplemented is remembered: from then on this client deletes one key per request.
//
// PutFileNew of a file larger than multipart_threshold uses a multipart upload (parts of
// part_size bytes, read one at a time so memory stays at one part); a failed upload is aborted.
// GetToFile writes to a temporary file beside the target, fsyncs it, renames it into place and
// fsyncs the directory.
//
// Keys (relative to the prefix) must be non-empty, at most 1024 bytes with the prefix, free of
// control characters, and have no empty, "." or ".." segments (no leading, trailing or double
// "/"); others get kInvalidArgument. S3 itself is laxer, but such keys alias on many
// S3-compatible servers that store objects as files.
//
// Errors beyond those of ReplicaClient: a store that refuses the credentials or the request
// (403, a missing bucket, a wrong region) gives kIoError with a message that says which setting
// to check. Messages never contain the secret key or the session token.
//
// Threads: every method is safe from any number of threads at once. The client must outlive
// the calls made on it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "replica/http.h"
#include "replica/replica_client.h"
#include "replica/s3_xml.h"
#include "replica/sigv4.h"
#include "services/status.h"

namespace replica {

enum class ConditionalWrites {
  kAuto,      // probe the store once, on the first conditional write
  kNative,    // trust the store to honour If-None-Match and If-Match
  kEmulated,  // never send them; HEAD-then-PUT (not atomic)
};

struct S3Options {
  std::string url;       // "s3://bucket" or "s3://bucket/prefix"
  std::string endpoint;  // "http://127.0.0.1:9000", "https://s3.example.com"; empty: AWS
  // Empty: AWS_REGION, then AWS_DEFAULT_REGION, then "us-east-1".
  std::string region;
  // Empty access_key_id: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN from the
  // environment, read once by Create().
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;
  // Unset: path-style ("http://host/bucket/key") when an endpoint is given, virtual-hosted
  // ("https://bucket.s3.region.amazonaws.com/key") on AWS, except for bucket names with dots
  // (which break TLS name checks on virtual hosts).
  std::optional<bool> force_path_style;
  int64_t multipart_threshold = 16 << 20;  // PutFileNew above this size goes up in parts
  int64_t part_size = 8 << 20;             // S3 wants >= 5 MiB for every part but the last
  int max_attempts = 5;                    // tries per request, the first included
  int64_t retry_base_ms = 100;             // backoff before try n is random in [0, base * 2^n)
  int64_t retry_max_backoff_ms = 5000;     // ...capped at this
  int list_page_size = 1000;               // max-keys of each ListObjectsV2 request
  int delete_batch_size = 1000;            // keys per DeleteObjects request (S3 takes <= 1000)
  ConditionalWrites conditional_writes = ConditionalWrites::kAuto;
  HttpTimeouts timeouts;
  // Told about events worth a log line (a fallback to emulated conditional writes, retries that
  // gave up). Never given secrets. May be called from any thread. Null: silent.
  std::function<void(std::string_view)> log;
};

class S3Client final : public ReplicaClient {
 public:
  // kInvalidArgument for a malformed URL, endpoint or option, or when no credentials are found.
  // Does no network I/O.
  static services::Result<std::unique_ptr<S3Client>> Create(const S3Options& options);

  std::string Describe() const override;
  services::Status PutNew(const std::string& key, std::string_view data) override;
  services::Status Put(const std::string& key, std::string_view data) override;
  services::Result<std::string> PutIfMatch(const std::string& key, std::string_view data,
                                           const std::string& etag) override;
  services::Status PutFileNew(const std::string& key, const std::string& path) override;
  services::Result<std::string> Get(const std::string& key) override;
  services::Status GetToFile(const std::string& key, const std::string& path) override;
  services::Result<ObjectInfo> Head(const std::string& key) override;
  services::Result<std::vector<ObjectInfo>> List(const std::string& prefix) override;
  services::Status Delete(const std::string& key) override;
  services::Status DeleteMany(const std::vector<std::string>& keys) override;
  ClientStats Stats() const override;

  // Whether the store honours conditional writes, probing it if nobody has yet. For tests and
  // `gateway verify`.
  services::Result<bool> ConditionalWritesSupported();

 private:
  // Where a request goes: the Host header, the raw (unencoded) path, and the URL to send.
  struct Target {
    std::string host;
    std::string path;
    std::string url;  // scheme://host + encoded path, without a query
  };
  // One logical request, as many tries as it takes.
  struct Call {
    std::string method;
    std::string full_key = {};  // empty with bucket_level
    bool bucket_level = false;  // ListObjectsV2: the bucket itself
    std::vector<std::pair<std::string, std::string>> query = {};
    std::vector<std::pair<std::string, std::string>> headers = {};
    std::string_view body = {};
    std::string payload_sha256 = {};  // of body; computed by Execute when empty
    int response_fd = -1;             // GetToFile's temporary file, rewound before each try
    bool error_in_200 = false;        // CompleteMultipartUpload: a 200 may carry an <Error>
  };
  struct Reply {
    HttpResponse http;
    int attempts = 0;
    S3ErrorBody error;  // parsed when the status is not 2xx
  };

  S3Client(S3Options options, SigV4Credentials credentials);

  std::string Where() const;  // Describe() without the notes; takes no lock
  std::string FullKey(const std::string& key) const;
  std::string ObjectUrlForMessages(const std::string& full_key) const;
  Target MakeTarget(const std::string& full_key) const;
  // Sends `call`, retrying as the class comment says. A returned Reply is an HTTP answer that
  // was not retried away (any status); an error Status means no usable answer came.
  services::Result<Reply> Execute(const Call& call);
  services::Status ErrorFor(const Call& call, const Reply& reply) const;
  void Log(const std::string& message) const;
  static bool IsNotImplemented(const S3ErrorBody& error, long status);
  // Reads exactly `n` bytes at `offset` into *out.
  static services::Status ReadFully(int fd, int64_t offset, int64_t n, std::string* out);

  services::Result<Reply> SendPut(const std::string& full_key, std::string_view data,
                                  std::vector<std::pair<std::string, std::string>> headers);
  // Sets *unsupported (and returns OK) when the store refuses the conditional header.
  services::Status PutNewNative(const std::string& full_key, std::string_view data,
                                bool* unsupported);
  services::Result<std::string> PutIfMatchNative(const std::string& full_key, std::string_view data,
                                                 const std::string& etag, bool* unsupported);
  // The ETag of a successful PUT: from the answer, else from a HEAD.
  services::Result<std::string> EtagAfterPut(const std::string& full_key, const Reply& reply);
  // After a conditional write was refused on a retry: true when the object holds what we sent,
  // i.e. an earlier try of ours landed and only its answer was lost.
  bool LandedEarlier(const std::string& full_key, const std::string& expected_etag);
  services::Status PutNewEmulated(const std::string& full_key, std::string_view data);
  services::Result<std::string> PutIfMatchEmulated(const std::string& full_key,
                                                   std::string_view data, const std::string& etag);
  services::Result<ObjectInfo> HeadFull(const std::string& full_key);
  services::Status PutFileMultipart(const std::string& full_key, int fd, int64_t size);
  services::Status CompleteMultipart(const std::string& full_key, const std::string& upload_id,
                                     const std::vector<std::pair<int, std::string>>& parts,
                                     const std::string& expected_etag);
  void AbortMultipart(const std::string& full_key, const std::string& upload_id);
  // The store answered a conditional write with 501 / NotImplemented: emulate from now on.
  void MarkConditionalUnsupported(std::string_view why);
  // Whether to send conditional headers; probes the store on first use in kAuto mode.
  services::Result<bool> UseNativeConditional();
  services::Status ProbeConditional();
  // One DeleteObjects request; sets *unsupported (and returns OK) when the store refuses it.
  services::Status DeleteBatch(const std::vector<std::string>& full_keys, bool* unsupported);

  const S3Options options_;
  const SigV4Credentials credentials_;
  std::string bucket_;
  std::string root_;  // "prefix/" or ""
  std::string scheme_;
  std::string endpoint_host_;  // host[:port] of the endpoint
  bool path_style_ = true;
  std::unique_ptr<HttpClient> http_;

  mutable std::mutex conditional_mu_;  // serialises the probe
  // 0 unknown, 1 native, 2 emulated; read without the lock by Describe().
  std::atomic<int> conditional_state_{0};
  std::string conditional_note_;  // guarded by conditional_mu_; why emulated

  // Set once a store answered DeleteObjects with NotImplemented: DeleteMany then loops Delete.
  std::atomic<bool> batch_delete_unsupported_{false};

  std::atomic<int64_t> requests_{0};
  std::atomic<int64_t> bytes_sent_{0};
  std::atomic<int64_t> bytes_received_{0};
  std::atomic<int64_t> retries_{0};
};

}  // namespace replica
