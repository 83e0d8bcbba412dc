#include "gateway/reply.h"

namespace gateway {

Reply::~Reply() {
  if (!done_)
    Error(ErrorCode::kInternal,
          "the server dropped this request without an answer (a bug; please report it)");
}

void Reply::Error(ErrorCode code, std::string_view message) {
  if (done_) return;
  done_ = true;
  if (std::shared_ptr<ReplySink> sink = sink_.lock()) {
    AppendError(sink->ReplyBuffer(), id_, code, message);
    sink->ReplyAppended(op_, static_cast<uint32_t>(code));
  }
}

}  // namespace gateway
