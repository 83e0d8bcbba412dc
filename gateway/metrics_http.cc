#include "gateway/metrics_http.h"

#include <memory>

#include "gateway/log.h"

namespace gateway {
namespace {

constexpr size_t kMaxRequestHead = 8192;

struct HttpConnection {
  uv_tcp_t tcp;
  uv_write_t write;
  MetricsHttp* server = nullptr;
  std::function<std::string()>* render = nullptr;
  std::string in;
  std::string out;
  char buf[2048];
};

void CloseConnection(HttpConnection* c) {
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
           [](uv_handle_t* h) { delete static_cast<HttpConnection*>(h->data); });
}

void Respond(HttpConnection* c, const char* status, const std::string& type, const std::string& body) {
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
  c->out = std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + type +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
           body;
  uv_buf_t b = uv_buf_init(c->out.data(), static_cast<unsigned>(c->out.size()));
  c->write.data = c;
  if (uv_write(&c->write, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1,
               [](uv_write_t* w, int) { CloseConnection(static_cast<HttpConnection*>(w->data)); }) != 0) {
    CloseConnection(c);
  }
}

void OnRead(uv_stream_t* s, ssize_t n, const uv_buf_t*) {
  auto* c = static_cast<HttpConnection*>(s->data);
  if (n < 0) {
    CloseConnection(c);
    return;
  }
  c->in.append(c->buf, static_cast<size_t>(n));
  const size_t end = c->in.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (c->in.size() > kMaxRequestHead) Respond(c, "431 Request Header Fields Too Large", "text/plain", "too large\n");
    return;
  }
  const std::string line = c->in.substr(0, c->in.find("\r\n"));
  if (line.rfind("GET /metrics ", 0) == 0 || line == "GET /metrics") {
    Respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", (*c->render)());
  } else if (line.rfind("GET ", 0) == 0) {
    Respond(c, "404 Not Found", "text/plain", "only /metrics is served here\n");
  } else {
    Respond(c, "405 Method Not Allowed", "text/plain", "GET /metrics\n");
  }
}

}  // namespace

services::Status MetricsHttp::Start(const std::string& addr) {
  const size_t colon = addr.rfind(':');
  std::string host = addr.substr(0, colon);
  const int port = std::stoi(addr.substr(colon + 1));
  if (!host.empty() && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  sockaddr_storage sa{};
  int rc = host.find(':') != std::string::npos
               ? uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&sa))
               : uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&sa));
  if (rc != 0) {
    return services::Status::InvalidArgument("[server] metrics_addr " + addr +
                                             " is not an IP address and port: " + uv_strerror(rc));
  }
  uv_tcp_init(loop_, &listener_);
  listener_.data = this;
  listening_ = true;
  rc = uv_tcp_bind(&listener_, reinterpret_cast<sockaddr*>(&sa), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 64, OnConnection);
  if (rc != 0) {
    return services::Status::IoError("cannot listen on [server] metrics_addr " + addr + ": " +
                                     uv_strerror(rc));
  }
  Log(LogLevel::kInfo, "metrics_listening", {{"addr", addr}});
  return services::Status::Ok();
}

void MetricsHttp::Close() {
  if (!listening_) return;
  listening_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
}

void MetricsHttp::OnConnection(uv_stream_t* server, int status) {
  if (status < 0) return;
  auto* self = static_cast<MetricsHttp*>(server->data);
  auto* c = new HttpConnection;
  c->server = self;
  c->render = &self->render_;
  uv_tcp_init(self->loop_, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    CloseConnection(c);
    return;
  }
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t* h, size_t, uv_buf_t* b) {
        auto* conn = static_cast<HttpConnection*>(h->data);
        *b = uv_buf_init(conn->buf, sizeof conn->buf);
      },
      OnRead);
}

}  // namespace gateway
