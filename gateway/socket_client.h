// SocketClient: a small blocking client of the gateway's own protocol, for commands such as
// `gateway verify` that talk to a running gateway. One request at a time.
#pragma once

#include <functional>
#include <msgpack.hpp>
#include <string>

#include "gateway/message.h"
#include "services/status.h"

namespace gateway {

class SocketClient {
 public:
  ~SocketClient();
  // Connects and, when `token` is not empty, authenticates with hello.
  static services::Result<std::unique_ptr<SocketClient>> Connect(const std::string& socket_path,
                                                                 const std::string& token = "");

  struct Response {
    uint32_t status = 0;
    msgpack::object_handle body;
  };
  // Sends [id, op, args] with args packed by `pack_args` (one map) and waits up to `timeout_ms`.
  services::Result<Response> Call(const std::string& op,
                                  const std::function<void(Packer&)>& pack_args,
                                  int timeout_ms = 60'000);

 private:
  explicit SocketClient(int fd) : fd_(fd) {}
  int fd_;
  uint64_t next_id_ = 1;
};

}  // namespace gateway
