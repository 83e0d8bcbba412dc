// HttpClient: one HTTP request at a time per call, over libcurl, with connections kept alive.
//
// It knows nothing of S3: no signing, no retries, no status interpretation. It sends what it is
// given and reports what came back, or why nothing did (a transport failure) and whether trying
// again may help. Retries and backoff belong to the caller, which knows which requests are safe
// to repeat.
//
// Threads: Send() is safe from any number of threads at once. Each call borrows a curl easy
// handle from a small pool (a handle keeps its connections open between requests, so a busy
// client reuses TCP and TLS sessions); a handle is used by one thread at a time.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace replica {

struct HttpTimeouts {
  int64_t connect_ms = 5000;  // TCP + TLS handshake
  // A transfer slower than low_speed_bytes per second for low_speed_seconds is abandoned (a stalled
  // connection, not a slow but moving one).
  int64_t low_speed_bytes = 1024;
  int64_t low_speed_seconds = 30;
  int64_t request_ms = 0;  // whole request including the body; 0: no limit
};

struct HttpRequest {
  std::string method;  // "GET", "HEAD", "PUT", "POST", "DELETE"
  std::string url;     // already encoded
  std::vector<std::pair<std::string, std::string>> headers;
  std::string_view body;  // the request body; must outlive Send()
  // When >= 0, a 2xx response body is written to this file descriptor (at its current offset)
  // instead of memory. Error responses always land in HttpResponse::body.
  int response_fd = -1;
};

struct HttpResponse {
  long status = 0;                             // HTTP status code
  std::map<std::string, std::string> headers;  // lower-case names; the last value wins
  std::string body;                            // unless written to response_fd
  int64_t body_bytes = 0;                      // bytes received, wherever they went
};

// A request that got no HTTP answer.
struct TransportFailure {
  bool retryable = false;  // a timeout, refused or reset connection, ...: the next try may work
  std::string message;     // curl's description, e.g. "Couldn't connect to server"
};

class HttpClient {
 public:
  explicit HttpClient(HttpTimeouts timeouts);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends `request`. Returns true with `*response` filled for any HTTP status (4xx and 5xx
  // included); returns false with `*failure` filled when no complete response arrived.
  bool Send(const HttpRequest& request, HttpResponse* response, TransportFailure* failure);

 private:
  void* Acquire();  // a CURL*; the type stays out of this header
  void Release(void* handle);

  const HttpTimeouts timeouts_;
  std::mutex mu_;
  std::vector<void*> idle_;  // guarded by mu_; handles with their open connections
};

}  // namespace replica
