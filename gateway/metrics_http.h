// MetricsHttp: a minimal HTTP/1.1 listener on the event loop that answers GET /metrics with the
// Prometheus text the render function produces, and 404 otherwise. One request per connection;
// request heads over 8 KiB are refused. Meant for loopback scrapers, not the internet.
// Threads: loop thread only; handles are freed in their close callbacks.
#pragma once

#include <uv.h>

#include <functional>
#include <string>

#include "services/status.h"

namespace gateway {

class MetricsHttp {
 public:
  MetricsHttp(uv_loop_t* loop, std::function<std::string()> render)
      : loop_(loop), render_(std::move(render)) {}

  // Binds "host:port" and listens.
  services::Status Start(const std::string& addr);
  void Close();

 private:
  static void OnConnection(uv_stream_t* server, int status);

  uv_loop_t* loop_;
  std::function<std::string()> render_;
  uv_tcp_t listener_;
  bool listening_ = false;
};

}  // namespace gateway
