#include "gateway/reply.h"

#include <chrono>
#include <cstdint>
#include <limits>

#include "gateway/log.h"

namespace gateway {
namespace {

// A storage or internal error is the server's trouble, not the client's, so the operator must see
// it in the log even when every client retries it away. A full disk fails every write, so lines
// are limited to one a second; each line counts the failures it stands for.
void LogServerSideError(ErrorCode code, std::string_view op, std::string_view message) {
  static int64_t last_ms = std::numeric_limits<int64_t>::min() / 2;  // loop thread only
  static int64_t unlogged = 0;
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count();
  if (now_ms - last_ms < 1000) {
    ++unlogged;
    return;
  }
  last_ms = now_ms;
  Log(LogLevel::kError, "request_failed",
      {{"op", op},
       {"code", ErrorCodeName(code)},
       {"detail", message},
       {"failures_since_last_line", unlogged + 1}});
  unlogged = 0;
}

}  // namespace

Reply::~Reply() {
  if (!done_)
    Error(ErrorCode::kInternal,
          "the server dropped this request without an answer (a bug; please report it)");
}

void Reply::Error(ErrorCode code, std::string_view message) {
  if (done_) return;
  done_ = true;
  if (std::shared_ptr<ReplySink> sink = sink_.lock()) {
    // (A request whose client has gone is not the operator's concern: a waiting queue.dequeue
    // of a killed worker is dropped this way.)
    if (code == ErrorCode::kStorageError || code == ErrorCode::kInternal) {
      LogServerSideError(code, op_, message);
    }
    AppendError(sink->ReplyBuffer(), id_, code, message);
    sink->ReplyAppended(op_, static_cast<uint32_t>(code));
  }
}

}  // namespace gateway
