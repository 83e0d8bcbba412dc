#include "gateway/socket_client.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "gateway/frame_decoder.h"

namespace gateway {

using services::Result;
using services::Status;

SocketClient::~SocketClient() { close(fd_); }

Result<std::unique_ptr<SocketClient>> SocketClient::Connect(const std::string& path,
                                                           const std::string& token) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IoError(std::string("socket: ") + std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    Status st = Status::IoError("cannot connect to the gateway at " + path + ": " +
                                std::strerror(errno) + "; is it running with this config?");
    close(fd);
    return st;
  }
  std::unique_ptr<SocketClient> client(new SocketClient(fd));
  if (!token.empty()) {
    Result<Response> hello = client->Call("hello", [&](Packer& p) {
      p.pack_map(1);
      p.pack("token");
      p.pack(token);
    });
    if (!hello.ok()) return hello.status();
    if (hello->status != 0) {
      return Status::FailedPrecondition("the gateway refused the [server] token of this config");
    }
  }
  return client;
}

Result<SocketClient::Response> SocketClient::Call(const std::string& op,
                                                  const std::function<void(Packer&)>& pack_args,
                                                  int timeout_ms) {
  const uint64_t id = next_id_++;
  std::string out;
  const size_t start = BeginFrame(&out);
  {
    StringSink sink(&out);
    Packer p(sink);
    p.pack_array(3);
    p.pack_uint64(id);
    p.pack(op);
    pack_args(p);
  }
  FinishFrame(&out, start);
  for (size_t sent = 0; sent < out.size();) {
    ssize_t n = send(fd_, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError(std::string("send: ") + std::strerror(errno));
    sent += static_cast<size_t>(n);
  }
  std::string in;
  FrameDecoder decoder(1u << 31);
  for (;;) {
    FrameDecoder::Outcome o = decoder.Decode(in);
    if (o.kind == FrameDecoder::Kind::kError) return Status::Internal("bad frame from the gateway");
    if (o.kind == FrameDecoder::Kind::kOk) {
      msgpack::object_handle h = msgpack::unpack(o.payload.data(), o.payload.size());
      const msgpack::object& r = h.get();
      if (r.type != msgpack::type::ARRAY || r.via.array.size != 3) {
        return Status::Internal("malformed response from the gateway");
      }
      Response resp;
      resp.status = r.via.array.ptr[1].as<uint32_t>();
      resp.body = msgpack::clone(r.via.array.ptr[2]);
      return resp;
    }
    pollfd pfd{fd_, POLLIN, 0};
    int ready = poll(&pfd, 1, timeout_ms);
    if (ready == 0) return Status::IoError("the gateway did not answer " + op + " in time");
    if (ready < 0 && errno != EINTR) return Status::IoError(std::string("poll: ") + std::strerror(errno));
    char buf[65536];
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n == 0) return Status::IoError("the gateway closed the connection");
    if (n < 0 && errno != EINTR) return Status::IoError(std::string("recv: ") + std::strerror(errno));
    if (n > 0) in.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace gateway
