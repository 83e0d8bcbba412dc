#include "gateway/connection.h"

#include <cstring>
#include <variant>

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/op_table.h"

namespace gateway {
namespace {

constexpr size_t kReadChunk = 64 * 1024;

}  // namespace

Connection::Connection(uv_loop_t* loop, ConnectionOwner* owner, ConnectionLimits limits,
                       uint64_t id)
    : owner_(owner), limits_(limits), decoder_(limits.max_frame_size), id_(id) {
  uv_pipe_init(loop, &pipe_, 0);
  pipe_.data = this;
  write_req_.data = this;
}

Connection::~Connection() = default;

void Connection::Start() {
  started_ = true;
  UpdateState();
}

void Connection::Reject(ErrorCode code, std::string_view message) {
  AppendError(&out_, 0, code, message);
  close_after_flush_ = true;
  Flush();
}

void Connection::Drain() {
  draining_ = true;
  UpdateState();
}

void Connection::Close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), OnClose);
}

void Connection::OnClose(uv_handle_t* handle) {
  auto* self = static_cast<Connection*>(handle->data);
  self->owner_->ConnectionClosed(self);  // may destroy *self
}

void Connection::OnAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(handle->data);
  std::vector<char>& in = self->in_;
  // Move undecoded bytes to the front so the buffer only grows for a frame that needs it.
  if (self->in_begin_ > 0) {
    std::memmove(in.data(), in.data() + self->in_begin_, self->in_end_ - self->in_begin_);
    self->in_end_ -= self->in_begin_;
    self->in_begin_ = 0;
  }
  size_t want = kReadChunk;
  // A frame whose header has arrived was checked against max_frame_size by the decoder, so
  // growing to its size is bounded by the limit.
  FrameDecoder::Outcome o = self->decoder_.Decode(std::string_view(in.data(), self->in_end_));
  if (o.kind == FrameDecoder::Kind::kNeedMore && o.frame_bytes > self->in_end_) {
    want = std::max(want, o.frame_bytes - self->in_end_);
  }
  if (in.size() < self->in_end_ + want) in.resize(self->in_end_ + want);
  *buf = uv_buf_init(in.data() + self->in_end_, static_cast<unsigned>(in.size() - self->in_end_));
}

void Connection::OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t*) {
  auto* self = static_cast<Connection*>(stream->data);
  if (nread > 0) {
    self->in_end_ += static_cast<size_t>(nread);
    self->owner_->BytesArrived();
    self->ProcessInput();
    return;
  }
  if (nread == 0) return;  // EAGAIN: nothing this time
  if (nread != UV_EOF) {
    Log(LogLevel::kInfo, "connection_error",
        {{"conn", self->id_}, {"error", uv_strerror(static_cast<int>(nread))}});
    self->Close();
    return;
  }
  if (self->in_end_ > self->in_begin_) {
    // The client went away in the middle of a frame: nothing of it can be run.
    Log(LogLevel::kInfo, "connection_truncated_frame",
        {{"conn", self->id_},
         {"buffered_bytes", static_cast<int64_t>(self->in_end_ - self->in_begin_)}});
    self->Close();
    return;
  }
  // The client closed its side: send the replies already made, then close. Requests still being
  // worked on finish (a write still commits) but their replies are dropped, and a waiting
  // dequeue is abandoned rather than handed a job nobody will run.
  self->close_after_flush_ = true;
  self->Flush();
  self->UpdateState();
}

void Connection::ProcessInput() {
  processing_ = true;
  while (!closing_ && !close_after_flush_ && !OverLimits()) {
    std::string_view pending(in_.data() + in_begin_, in_end_ - in_begin_);
    FrameDecoder::Outcome o = decoder_.Decode(pending);
    if (o.kind == FrameDecoder::Kind::kNeedMore) break;
    if (o.kind == FrameDecoder::Kind::kError) {
      // The length is unusable, so where the next frame starts is unknown: answer and hang up.
      if (o.error == FrameDecoder::ErrorKind::kTooLarge) {
        Log(LogLevel::kInfo, "frame_too_large",
            {{"conn", id_}, {"length", static_cast<int64_t>(o.declared_length)}});
        MakeReply(0, "").Error(ErrorCode::kFrameTooLarge,
                               "frame length " + std::to_string(o.declared_length) +
                                   " is over the limit of " +
                                   std::to_string(decoder_.max_payload_bytes()) +
                                   " bytes ([server] max_frame_size); closing this connection");
      } else {
        MakeReply(0, "").Error(ErrorCode::kBadFrame,
                               "frame length 0; every frame holds one msgpack value; closing "
                               "this connection");
      }
      in_begin_ = in_end_ = 0;
      close_after_flush_ = true;
      break;
    }
    in_begin_ += o.consumed;
    HandlePayload(o.payload);
  }
  if (in_begin_ == in_end_) {
    in_begin_ = in_end_ = 0;
    // Give back the memory of a large frame once it is handled.
    if (in_.size() > 4 * kReadChunk) std::vector<char>().swap(in_);
  }
  processing_ = false;
  Flush();
  UpdateState();
}

void Connection::HandlePayload(std::string_view payload) {
  std::variant<Request, RequestError> decoded = DecodeRequest(payload);
  if (auto* err = std::get_if<RequestError>(&decoded)) {
    MakeReply(err->id, "").Error(err->code, err->message);
    return;
  }
  Request& request = std::get<Request>(decoded);
  Reply reply = MakeReply(request.id, request.op);
  if (owner_->shutting_down()) {
    reply.Error(ErrorCode::kShuttingDown, "the gateway is stopping; reconnect to its successor");
    return;
  }
  if (owner_->token_required() && !authenticated_) {
    if (request.op != "hello") {
      reply.Error(ErrorCode::kUnauthorized,
                  "this gateway requires a token: send hello with 'token' first ([server] token)");
      return;
    }
    const msgpack::object* token = Args(request.args).Find("token");
    if (token == nullptr || token->type != msgpack::type::STR ||
        !owner_->TokenMatches(std::string_view(token->via.str.ptr, token->via.str.size))) {
      Log(LogLevel::kWarn, "auth_failed", {{"conn", id_}});
      reply.Error(ErrorCode::kUnauthorized, "wrong or missing token in hello; closing");
      close_after_flush_ = true;  // one guess per connection
      return;
    }
    authenticated_ = true;
  }
  owner_->ops().Dispatch(request, std::move(reply));
}

Reply Connection::MakeReply(uint64_t id, std::string op) {
  ++inflight_;
  return Reply(weak_from_this(), id, std::move(op));
}

void Connection::ReplyAppended(std::string_view op, uint32_t status) {
  --inflight_;
  owner_->metrics().CountReply(
      op, status, status == 0 ? std::string_view() : ErrorCodeName(static_cast<ErrorCode>(status)));
  if (!processing_) {
    Flush();
    UpdateState();
  }
}

void Connection::Flush() {
  if (closing_ || !writing_.empty() || out_.empty()) return;
  writing_.swap(out_);
  uv_buf_t buf = uv_buf_init(writing_.data(), static_cast<unsigned>(writing_.size()));
  int rc = uv_write(&write_req_, stream(), &buf, 1, OnWrite);
  if (rc != 0) {
    Log(LogLevel::kInfo, "connection_write_error", {{"conn", id_}, {"error", uv_strerror(rc)}});
    writing_.clear();
    Close();
  }
}

void Connection::OnWrite(uv_write_t* req, int status) {
  auto* self = static_cast<Connection*>(req->data);
  self->writing_.clear();
  if (self->closing_) return;
  if (status < 0) {
    Log(LogLevel::kInfo, "connection_write_error",
        {{"conn", self->id_}, {"error", uv_strerror(status)}});
    self->Close();
    return;
  }
  if (self->out_.capacity() > (1u << 20) && self->out_.empty()) std::string().swap(self->out_);
  self->Flush();
  // Replies drained: frames waiting in the input buffer can be processed again.
  if (!self->OverLimits() && self->in_end_ > self->in_begin_ && !self->draining_) {
    self->ProcessInput();
  } else {
    self->UpdateState();
  }
}

bool Connection::OverLimits() const {
  return out_.size() + writing_.size() >= limits_.max_pending_reply_bytes ||
         inflight_ >= limits_.max_inflight_requests;
}

void Connection::UpdateState() {
  if (closing_) return;
  const bool flushed = out_.empty() && writing_.empty();
  if (close_after_flush_ || draining_) {
    if (reading_) {
      uv_read_stop(stream());
      reading_ = false;
    }
    if (flushed && (close_after_flush_ || inflight_ == 0)) Close();
    return;
  }
  // Resume only once below half the limits, so a slow reader is not toggled on every write.
  const bool want_read =
      reading_ ? !OverLimits()
               : out_.size() + writing_.size() < limits_.max_pending_reply_bytes / 2 &&
                     inflight_ < limits_.max_inflight_requests / 2;
  if (want_read && !reading_) {
    int rc = uv_read_start(stream(), OnAlloc, OnRead);
    if (rc != 0) {
      Log(LogLevel::kInfo, "connection_read_error", {{"conn", id_}, {"error", uv_strerror(rc)}});
      Close();
      return;
    }
    reading_ = true;
  } else if (!want_read && reading_) {
    uv_read_stop(stream());
    reading_ = false;
  }
}

}  // namespace gateway
