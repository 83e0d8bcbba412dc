// Connection: one client on the Unix socket. Reads frames, dispatches requests through the op
// table, and writes replies, with flow control in both directions (PROTOCOL.md "Flow control").
//
// Lifetime: created by the Server on accept and owned by it through a shared_ptr; Replies hold
// weak_ptrs, so a reply completed after the client left is dropped. The libuv handle is a member,
// and the Server drops its shared_ptr only in the handle's close callback (ConnectionClosed), so
// libuv never sees freed memory.
// Threads: event loop thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gateway/frame_decoder.h"
#include "gateway/message.h"
#include "gateway/reply.h"

namespace gateway {

class Metrics;
class OpTable;
class Connection;

// What a Connection needs from the server that owns it.
class ConnectionOwner {
 public:
  virtual ~ConnectionOwner() = default;
  virtual const OpTable& ops() const = 0;
  virtual Metrics& metrics() = 0;
  virtual bool shutting_down() const = 0;
  // True when connections must present a token in hello before any other op.
  virtual bool token_required() const = 0;
  // Compares in constant time.
  virtual bool TokenMatches(std::string_view token) const = 0;
  // The connection's handle is closed; the owner releases it now.
  virtual void ConnectionClosed(Connection* connection) = 0;
  // Bytes arrived on a connection (the loop may spin for the next ones; see SpinGate).
  virtual void BytesArrived() {}
};

struct ConnectionLimits {
  uint32_t max_frame_size = 32u << 20;
  size_t max_pending_reply_bytes = 8u << 20;  // replies not yet written; reading pauses above
  size_t max_inflight_requests = 4096;        // requests without a reply; reading pauses above
};

class Connection final : public ReplySink, public std::enable_shared_from_this<Connection> {
 public:
  Connection(uv_loop_t* loop, ConnectionOwner* owner, ConnectionLimits limits, uint64_t id);
  ~Connection() override;

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&pipe_); }
  uint64_t id() const { return id_; }
  // True once Start() ran: the connection counts as open until it closes.
  bool started() const { return started_; }

  // Starts reading requests. Call once, after uv_accept succeeded.
  void Start();
  // Sends one error with id 0, then closes (for connections over the limit).
  void Reject(ErrorCode code, std::string_view message);
  // Stops reading; closes once every request read so far is answered and written.
  void Drain();
  // Closes now; unsent replies are dropped.
  void Close();

  // ReplySink.
  std::string* ReplyBuffer() override { return &out_; }
  void ReplyAppended(std::string_view op, uint32_t status) override;

 private:
  static void OnAlloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void OnWrite(uv_write_t* req, int status);
  static void OnClose(uv_handle_t* handle);

  // Decodes and dispatches buffered frames until the buffer is empty or flow control says stop.
  void ProcessInput();
  void HandlePayload(std::string_view payload);
  Reply MakeReply(uint64_t id, std::string op);
  void Flush();
  bool OverLimits() const;
  // Starts or stops reading to match flow control and state; closes a drained connection.
  void UpdateState();

  uv_pipe_t pipe_;
  uv_write_t write_req_;
  ConnectionOwner* owner_;
  ConnectionLimits limits_;
  FrameDecoder decoder_;
  uint64_t id_;

  std::vector<char> in_;  // bytes read; [in_begin_, in_end_) not yet decoded
  size_t in_begin_ = 0;
  size_t in_end_ = 0;
  std::string out_;      // replies appended, not yet handed to libuv
  std::string writing_;  // the bytes of the one uv_write in flight
  size_t inflight_ = 0;  // requests read whose Reply is not complete

  bool reading_ = false;
  bool processing_ = false;  // inside ProcessInput: flush once at the end, not per reply
  bool draining_ = false;
  bool close_after_flush_ = false;
  bool closing_ = false;
  bool started_ = false;
  bool authenticated_ = false;
};

}  // namespace gateway
