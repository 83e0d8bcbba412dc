// Reply: the one answer owed to one request. Handlers get a Reply by value and complete it with
// Ok() or Error(), now or later (an op that waits keeps its Reply until it can answer), so
// responses may leave in any order.
//
// Threads: create, complete and destroy on the event loop thread only; work done elsewhere hands
// its result back to the loop first. If the connection closed meanwhile, completing is a no-op.
// A Reply destroyed without an answer sends an `internal` error, so no request goes unanswered.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "gateway/message.h"

namespace gateway {

// Where replies go: implemented by Connection.
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  // The buffer to append one whole response frame to.
  virtual std::string* ReplyBuffer() = 0;
  // Called right after a frame was appended; `status` 0 is success.
  virtual void ReplyAppended(std::string_view op, uint32_t status) = 0;
};

class Reply {
 public:
  Reply(std::weak_ptr<ReplySink> sink, uint64_t id, std::string op)
      : sink_(std::move(sink)), id_(id), op_(std::move(op)) {}
  Reply(Reply&& other) noexcept
      : sink_(std::move(other.sink_)),
        id_(other.id_),
        op_(std::move(other.op_)),
        done_(other.done_) {
    other.done_ = true;
  }
  Reply& operator=(Reply&&) = delete;
  Reply(const Reply&) = delete;
  ~Reply();

  // Sends status 0 with the body `pack_body(Packer&)` packs (exactly one msgpack value).
  template <typename PackBody>
  void Ok(PackBody&& pack_body) {
    if (done_) return;
    done_ = true;
    if (std::shared_ptr<ReplySink> sink = sink_.lock()) {
      AppendResponse(sink->ReplyBuffer(), id_, 0, std::forward<PackBody>(pack_body));
      sink->ReplyAppended(op_, 0);
    }
  }
  void Error(ErrorCode code, std::string_view message);

  uint64_t id() const { return id_; }
  // False once the connection this reply would go to has closed.
  bool connected() const { return !sink_.expired(); }
  const std::string& op() const { return op_; }

 private:
  std::weak_ptr<ReplySink> sink_;
  uint64_t id_;
  std::string op_;
  bool done_ = false;
};

}  // namespace gateway
