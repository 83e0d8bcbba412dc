// Server: the gateway's one libuv event loop. Listens on the Unix socket, accepts connections up
// to the limit, dispatches their requests through the op table, checkpoints the main database off
// the loop, and shuts down cleanly on SIGINT/SIGTERM.
//
// Shutdown: stop accepting and remove the socket; let every connection finish the requests it
// already sent (new ones get `shutting_down`); after [server] shutdown_timeout close whatever is
// left. Run() returns once every handle is closed; the caller then closes the databases.
// A second signal during shutdown closes all connections at once.
//
// Threads: construct, Run() and destroy on one thread; everything else happens on the loop.
#pragma once

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>

#include "gateway/config.h"
#include "gateway/connection.h"
#include "gateway/exec_supervisor.h"
#include "gateway/loop_tasks.h"
#include "gateway/metrics.h"
#include "gateway/metrics_http.h"
#include "gateway/op_table.h"
#include "gateway/ops_cache.h"
#include "gateway/ops_core.h"
#include "gateway/ops_queue.h"
#include "gateway/spin_gate.h"
#include "replica/replicator.h"
#include "services/clock.h"
#include "services/databases.h"

namespace gateway {

// The services a server offers; each may be null, and then its ops are absent. They must outlive
// the server.
struct ServerServices {
  services::Databases* databases = nullptr;
  services::cache::CacheReader* cache_reader = nullptr;
  services::cache::CacheWriter* cache_writer = nullptr;
  // When set, it checkpoints the databases and the server serves replica.* ops.
  replica::Replicator* replicator = nullptr;
  // Opens the job queue with the hooks the server provides; called by Run() before listening.
  std::function<services::Result<std::unique_ptr<services::queue::JobQueue>>(
      services::queue::JobQueue::Hooks)>
      open_queue;
};

class Server final : public ConnectionOwner {
 public:
  Server(const Config& config, ServerServices services, services::Clock* clock);
  ~Server() override;

  // Binds the socket (the caller holds the SocketLock) and runs the loop until shutdown ends.
  // Errors: binding or listening failed; the message says why and what to do.
  services::Status Run();

  // The process exit code: the [exec] app server's status when there is one, else 0.
  int exit_code() const { return exit_code_; }

  // ConnectionOwner.
  const OpTable& ops() const override { return ops_; }
  Metrics& metrics() override { return *metrics_; }
  bool shutting_down() const override { return shutting_down_; }
  bool token_required() const override { return !config_.server.token.empty(); }
  bool TokenMatches(std::string_view token) const override;
  void ConnectionClosed(Connection* connection) override;
  void BytesArrived() override;

 private:
  static void OnConnection(uv_stream_t* listener, int status);
  static void OnSignal(uv_signal_t* handle, int signum);
  static void OnShutdownTimeout(uv_timer_t* timer);
  static void OnCheckpointTimer(uv_timer_t* timer);
  static void CheckpointWork(uv_work_t* req);
  static void CheckpointDone(uv_work_t* req, int status);
  static void OnSpin(uv_idle_t* idle);

  services::Status Listen();
  void BeginShutdown(int signum);
  // Stops the [exec] children first (they still use the socket while finishing), then the server.
  void StopChildrenThenShutdown(int signum);
  // The Prometheus text for /metrics, from the same counters as the stats ops.
  std::string RenderMetrics();
  void CloseHandles();

  const Config& config_;
  services::Databases* databases_;
  services::Clock* clock_;
  OpTable ops_;
  CoreOpsEnv core_env_;
  std::unique_ptr<Metrics> metrics_;

  uv_loop_t loop_;
  std::unique_ptr<LoopTasks> tasks_;
  std::unique_ptr<CacheOps> cache_ops_;
  std::unique_ptr<QueueOps> queue_ops_;
  ServerServices services_;
  uv_pipe_t listener_;
  uv_signal_t sigint_;
  uv_signal_t sigterm_;
  uv_signal_t sighup_;
  std::unique_ptr<ExecSupervisor> exec_;
  std::unique_ptr<MetricsHttp> metrics_http_;
  bool exec_stopping_ = false;
  int exit_code_ = 0;
  uv_timer_t shutdown_timer_;
  uv_timer_t checkpoint_timer_;
  uv_work_t checkpoint_req_;
  // While active, the loop polls without sleeping ([server] spin_us after the last bytes read).
  uv_idle_t spin_idle_;
  std::unique_ptr<SpinGate> spin_gate_;  // null when spin_us = 0
  bool checkpoint_running_ = false;
  bool listening_ = false;
  bool shutting_down_ = false;
  bool handles_closed_ = false;
  uint64_t next_connection_id_ = 1;
  std::map<uint64_t, std::shared_ptr<Connection>> connections_;
};

}  // namespace gateway
