#include "gateway/server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "gateway/log.h"
#include "gateway/ops_replica.h"
#include "gateway/prometheus.h"

namespace gateway {
namespace {

using services::Status;

// Every connection runs with wal_autocheckpoint=0. Without a replica (which checkpoints as it
// ships) this timer keeps the WALs small; PASSIVE never waits for readers or writers.
constexpr uint64_t kCheckpointIntervalMs = 1000;
constexpr int64_t kCheckpointWalBytes = 4 << 20;
// Past this a TRUNCATE checkpoint: it waits for the writer between two transactions, so the WAL
// is reset even under writes that never pause (which a PASSIVE checkpoint never catches up with).
constexpr int64_t kTruncateWalBytes = 16 << 20;

}  // namespace

Server::Server(const Config& config, ServerServices services, services::Clock* clock)
    : config_(config), databases_(services.databases), clock_(clock), services_(services) {
  uv_loop_init(&loop_);
  loop_.data = this;
  tasks_ = std::make_unique<LoopTasks>(&loop_);
  core_env_.table = &ops_;
  core_env_.databases = databases_;
  core_env_.clock = clock_;
  core_env_.started_mono_us = clock_->MonotonicMicros();
  core_env_.max_frame_size = static_cast<uint32_t>(config_.server.max_frame_size);
  AddCoreOps(&ops_, &core_env_);
  if (services.cache_reader != nullptr && services.cache_writer != nullptr) {
    CacheOpsConfig cache;
    cache.max_value_size = config_.cache.max_value_size;
    cache.max_size = config_.cache.max_size;
    cache.max_entries = config_.cache.max_entries;
    cache.lru = config_.cache.eviction == "lru";
    cache.path = config_.cache.path;
    cache_ops_ = std::make_unique<CacheOps>(&loop_, services.cache_reader, services.cache_writer,
                                            tasks_.get(), clock_, cache);
    cache_ops_->Register(&ops_);
  }
  if (services.replicator != nullptr) {
    AddReplicaOps(&ops_, services.replicator, tasks_.get(), clock_);
  }
  if (services.open_queue) {
    queue_ops_ = std::make_unique<QueueOps>(&loop_, tasks_.get(), clock_);
    queue_ops_->Register(&ops_);
  }
  metrics_ = std::make_unique<Metrics>(ops_.Names());
  core_env_.metrics = metrics_.get();
  if (!config_.exec.command.empty()) {
    exec_ = std::make_unique<ExecSupervisor>(&loop_, config_, [this](int code) {
      // The app server exited on its own: the site is down, so the gateway stops too.
      exit_code_ = code;
      StopChildrenThenShutdown(0);
    });
  }
}

Server::~Server() {
  // Run() closed every handle; this lets libuv free the loop's own resources.
  if (cache_ops_) cache_ops_->Close();
  tasks_->Close();
  if (queue_ops_) queue_ops_->Close();
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
}

Status Server::Listen() {
  const std::string& path = config_.server.socket;
  uv_pipe_init(&loop_, &listener_, 0);
  listener_.data = this;
  listening_ = true;
  // The umask makes the socket file appear with the configured mode, with no window in which it
  // is more open; the chmod below covers modes the umask cannot express (wider than 0755).
  const mode_t old_umask = umask(~static_cast<mode_t>(config_.server.socket_mode) & 0777);
  int rc = uv_pipe_bind(&listener_, path.c_str());
  umask(old_umask);
  if (rc != 0) {
    return Status::IoError("cannot bind socket " + path + ": " + uv_strerror(rc) +
                           "; check the folder exists and is writable");
  }
  if (chmod(path.c_str(), config_.server.socket_mode) != 0) {
    return Status::IoError("cannot set mode of socket " + path + ": " + std::strerror(errno));
  }
  rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 511, OnConnection);
  if (rc != 0) return Status::IoError("cannot listen on " + path + ": " + uv_strerror(rc));
  return Status::Ok();
}

Status Server::Run() {
  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sigterm_);
  uv_signal_init(&loop_, &sighup_);
  sigint_.data = sigterm_.data = sighup_.data = this;
  uv_signal_start(&sigint_, OnSignal, SIGINT);
  uv_signal_start(&sigterm_, OnSignal, SIGTERM);
  uv_signal_start(&sighup_, OnSignal, SIGHUP);
  uv_timer_init(&loop_, &shutdown_timer_);
  uv_timer_init(&loop_, &checkpoint_timer_);
  shutdown_timer_.data = checkpoint_timer_.data = this;
  uv_idle_init(&loop_, &spin_idle_);
  spin_idle_.data = this;
  if (config_.server.spin_us > 0) {
    spin_gate_ = std::make_unique<SpinGate>(
        static_cast<uint64_t>(config_.server.spin_us) * 1000,
        SpinGate::ReadCpuBudget(static_cast<int>(uv_available_parallelism())),
        SpinGate::LoadavgReader());
  }
  checkpoint_req_.data = this;

  Status st;
  if (queue_ops_) {
    services::Result<std::unique_ptr<services::queue::JobQueue>> queue =
        services_.open_queue(queue_ops_->Hooks());
    if (queue.ok()) {
      queue_ops_->Attach(std::move(*queue));
    } else {
      st = queue.status();
    }
  }
  if (st.ok()) st = Listen();
  if (st.ok() && !config_.server.metrics_addr.empty()) {
    metrics_http_ = std::make_unique<MetricsHttp>(&loop_, [this] { return RenderMetrics(); });
    st = metrics_http_->Start(config_.server.metrics_addr);
  }
  if (!st.ok()) {
    CloseHandles();
    uv_run(&loop_, UV_RUN_DEFAULT);
    return st;
  }
  // With a replica, the replicator checkpoints (after shipping); otherwise this timer does.
  if (databases_ != nullptr && services_.replicator == nullptr) {
    uv_timer_start(&checkpoint_timer_, OnCheckpointTimer, kCheckpointIntervalMs,
                   kCheckpointIntervalMs);
  }
  Log(LogLevel::kInfo, "listening",
      {{"socket", config_.server.socket}, {"pid", static_cast<int64_t>(getpid())}});
  if (exec_) {
    // Started once the socket and databases are ready, so the app can use them at once.
    Status started = exec_->Start();
    if (!started.ok()) {
      Log(LogLevel::kError, "exec_failed", {{"error", started.message()}});
      exit_code_ = 1;
      StopChildrenThenShutdown(0);
    }
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  return Status::Ok();
}

void Server::OnConnection(uv_stream_t* listener, int status) {
  auto* self = static_cast<Server*>(listener->data);
  if (status < 0) {
    Log(LogLevel::kWarn, "accept_error", {{"error", uv_strerror(status)}});
    return;
  }
  ConnectionLimits limits;
  limits.max_frame_size = static_cast<uint32_t>(self->config_.server.max_frame_size);
  limits.max_pending_reply_bytes = static_cast<size_t>(self->config_.server.max_pending_reply_size);
  const uint64_t id = self->next_connection_id_++;
  auto conn = std::make_shared<Connection>(&self->loop_, self, limits, id);
  self->connections_[id] = conn;
  if (uv_accept(listener, conn->stream()) != 0) {
    conn->Close();
    return;
  }
  Metrics& m = *self->metrics_;
  if (m.connections_open >= self->config_.server.max_connections) {
    ++m.connections_rejected;
    Log(LogLevel::kWarn, "connection_rejected",
        {{"conn", id}, {"max_connections", self->config_.server.max_connections}});
    conn->Reject(ErrorCode::kTooManyConnections,
                 "the gateway is at [server] max_connections = " +
                     std::to_string(self->config_.server.max_connections) +
                     "; close idle connections or raise the limit");
    return;
  }
  ++m.connections_open;
  ++m.connections_total;
  Log(LogLevel::kDebug, "connection_open", {{"conn", id}, {"open", m.connections_open}});
  conn->Start();
}

bool Server::TokenMatches(std::string_view token) const {
  const std::string& want = config_.server.token;
  // Constant time in the token's content, so timing reveals nothing about it.
  unsigned char diff = token.size() == want.size() ? 0 : 1;
  for (size_t i = 0; i < want.size(); ++i) {
    diff |= static_cast<unsigned char>(want[i] ^ (i < token.size() ? token[i] : 0));
  }
  return diff == 0;
}

void Server::BytesArrived() {
  // Not once shutting down: CloseHandles() may have closed the idle handle already.
  if (spin_gate_ == nullptr || shutting_down_ || !spin_gate_->OnActivity(uv_hrtime())) return;
  uv_idle_start(&spin_idle_, OnSpin);  // no-op while it is active
}

void Server::OnSpin(uv_idle_t* idle) {
  auto* self = static_cast<Server*>(idle->data);
  if (self->spin_gate_->KeepSpinning(uv_hrtime()) && !self->shutting_down_) return;
  uv_idle_stop(idle);
}

void Server::ConnectionClosed(Connection* connection) {
  auto it = connections_.find(connection->id());
  if (it == connections_.end()) return;
  // Rejected connections and failed accepts were never counted as open.
  if (connection->started()) {
    --metrics_->connections_open;
    Log(LogLevel::kDebug, "connection_closed",
        {{"conn", connection->id()}, {"open", metrics_->connections_open}});
  }
  connections_.erase(it);
  if (shutting_down_ && connections_.empty()) CloseHandles();
}

void Server::OnSignal(uv_signal_t* handle, int signum) {
  auto* self = static_cast<Server*>(handle->data);
  if (signum == SIGHUP) {
    // The app server decides what a hangup means (gunicorn reloads its workers).
    if (self->exec_ && self->exec_->running()) {
      self->exec_->Forward(SIGHUP);
    } else {
      Log(LogLevel::kInfo, "sighup_ignored", {{"detail", "no [exec] app server to pass it to"}});
    }
    return;
  }
  self->StopChildrenThenShutdown(signum);
}

void Server::StopChildrenThenShutdown(int signum) {
  if (!exec_ || shutting_down_) {
    BeginShutdown(signum);
    return;
  }
  if (exec_stopping_) {
    exec_->Stop(config_.server.shutdown_timeout_ms, nullptr);  // a second signal: kill them now
    return;
  }
  exec_stopping_ = true;
  Log(LogLevel::kInfo, "exec_stopping", {{"signal", signum}});
  exec_->Stop(config_.server.shutdown_timeout_ms, [this, signum] {
    // The gateway exits with the app server's status, as if it were the app server (unless the
    // children could not even start).
    if (exit_code_ == 0) exit_code_ = exec_->exit_code();
    BeginShutdown(signum);
  });
}

void Server::BeginShutdown(int signum) {
  if (shutting_down_) {
    Log(LogLevel::kWarn, "shutdown_forced", {{"signal", signum}});
    for (auto& [id, conn] : std::map(connections_)) conn->Close();
    return;
  }
  shutting_down_ = true;
  Log(LogLevel::kInfo, "shutdown_started",
      {{"signal", signum}, {"connections", static_cast<int64_t>(connections_.size())}});
  // Stop accepting first and remove the socket so new clients fail fast instead of queueing.
  if (listening_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
    unlink(config_.server.socket.c_str());
  }
  uv_timer_stop(&checkpoint_timer_);
  // Idle workers blocked in queue.dequeue get their (empty) answer now rather than at the end of
  // their wait, so they can reconnect to the next gateway at once.
  if (queue_ops_) queue_ops_->ReleaseWaiters();
  if (connections_.empty()) {
    CloseHandles();
    return;
  }
  uv_timer_start(&shutdown_timer_, OnShutdownTimeout,
                 static_cast<uint64_t>(config_.server.shutdown_timeout_ms), 0);
  for (auto& [id, conn] : std::map(connections_)) conn->Drain();
}

void Server::OnShutdownTimeout(uv_timer_t* timer) {
  auto* self = static_cast<Server*>(timer->data);
  Log(LogLevel::kWarn, "shutdown_timeout",
      {{"connections", static_cast<int64_t>(self->connections_.size())}});
  for (auto& [id, conn] : std::map(self->connections_)) conn->Close();
}

void Server::CloseHandles() {
  if (handles_closed_) return;
  handles_closed_ = true;
  if (cache_ops_) cache_ops_->Close();
  tasks_->Close();
  if (metrics_http_) metrics_http_->Close();
  if (queue_ops_) queue_ops_->Close();
  if (listening_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
  }
  for (uv_handle_t* h :
       {reinterpret_cast<uv_handle_t*>(&sigint_), reinterpret_cast<uv_handle_t*>(&sigterm_),
        reinterpret_cast<uv_handle_t*>(&sighup_), reinterpret_cast<uv_handle_t*>(&shutdown_timer_),
        reinterpret_cast<uv_handle_t*>(&checkpoint_timer_),
        reinterpret_cast<uv_handle_t*>(&spin_idle_)}) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }
}

std::string Server::RenderMetrics() {
  PromText p;
  const Metrics& m = *metrics_;
  p.Family("gateway_up", "gauge", "1 while the gateway serves");
  p.Sample("gateway_up", 1);
  p.Family("gateway_uptime_seconds", "gauge", "Seconds since the gateway started");
  p.Sample("gateway_uptime_seconds",
           static_cast<double>(clock_->MonotonicMicros() - core_env_.started_mono_us) / 1e6);
  p.Family("gateway_connections_open", "gauge", "Client connections open now");
  p.Sample("gateway_connections_open", static_cast<double>(m.connections_open));
  p.Family("gateway_connections_total", "counter", "Client connections accepted");
  p.Sample("gateway_connections_total", static_cast<double>(m.connections_total));
  p.Family("gateway_connections_rejected_total", "counter",
           "Connections refused because of [server] max_connections");
  p.Sample("gateway_connections_rejected_total", static_cast<double>(m.connections_rejected));
  p.Family("gateway_requests_total", "counter", "Requests answered, by op");
  for (const auto& [op, n] : m.requests_by_op)
    p.Sample("gateway_requests_total", {{"op", op}}, static_cast<double>(n));
  p.Family("gateway_errors_total", "counter", "Error responses, by error code");
  for (const auto& [code, n] : m.errors_by_code)
    p.Sample("gateway_errors_total", {{"code", code}}, static_cast<double>(n));
  if (databases_ != nullptr) {
    p.Family("gateway_database_size_bytes", "gauge", "Size of each database file");
    for (services::DatabaseRole role : services::kAllRoles) {
      p.Sample("gateway_database_size_bytes", {{"db", services::RoleName(role)}},
               static_cast<double>(databases_->CurrentInfo(role).size_bytes));
    }
    p.Family("gateway_database_wal_bytes", "gauge", "Size of each database's WAL file");
    for (services::DatabaseRole role : services::kAllRoles) {
      p.Sample("gateway_database_wal_bytes", {{"db", services::RoleName(role)}},
               static_cast<double>(databases_->CurrentInfo(role).wal_bytes));
    }
  }
  if (cache_ops_) {
    const CacheOps::Counters c = cache_ops_->Snapshot();
    const std::pair<const char*, std::pair<const char*, double>> counters[] = {
        {"gateway_cache_hits_total",
         {"Cache reads that found a live entry", static_cast<double>(c.hits)}},
        {"gateway_cache_misses_total",
         {"Cache reads that found none", static_cast<double>(c.misses)}},
        {"gateway_cache_evictions_total",
         {"Entries evicted for the size or entry budget", static_cast<double>(c.store.evictions)}},
        {"gateway_cache_expirations_total",
         {"Expired entries removed by the sweep", static_cast<double>(c.store.expirations)}},
    };
    for (const auto& [name, v] : counters) {
      p.Family(name, "counter", v.first);
      p.Sample(name, v.second);
    }
    p.Family("gateway_cache_entries", "gauge",
             "Entries stored (expired ones not yet swept included)");
    p.Sample("gateway_cache_entries", static_cast<double>(c.store.entries));
    p.Family("gateway_cache_bytes", "gauge", "Bytes charged to the cache budget");
    p.Sample("gateway_cache_bytes", static_cast<double>(c.store.bytes));
  }
  if (queue_ops_ && queue_ops_->queue() != nullptr) {
    services::Result<std::map<std::string, services::queue::JobQueue::QueueStats>> q =
        queue_ops_->queue()->Stats();
    if (q.ok()) {
      p.Family("gateway_queue_jobs", "gauge", "Jobs by queue and state");
      for (const auto& [name, s] : *q) {
        for (const auto& [state, n] : s.states) {
          p.Sample("gateway_queue_jobs",
                   {{"queue", name}, {"state", services::queue::StateName(state)}},
                   static_cast<double>(n));
        }
      }
      p.Family("gateway_queue_oldest_ready_age_seconds", "gauge", "Age of the oldest ready job");
      for (const auto& [name, s] : *q) {
        p.Sample("gateway_queue_oldest_ready_age_seconds", {{"queue", name}},
                 s.oldest_ready_age.value_or(0));
      }
      p.Family("gateway_queue_paused", "gauge", "1 when the queue is paused");
      for (const auto& [name, s] : *q)
        p.Sample("gateway_queue_paused", {{"queue", name}}, s.paused ? 1 : 0);
      p.Family("gateway_queue_pickup_latency_seconds", "gauge",
               "Ready-to-dequeued latency over the last 1000 pickups");
      for (const auto& [name, s] : *q) {
        p.Sample("gateway_queue_pickup_latency_seconds", {{"queue", name}, {"quantile", "0.5"}},
                 s.pickup.p50);
        p.Sample("gateway_queue_pickup_latency_seconds", {{"queue", name}, {"quantile", "0.99"}},
                 s.pickup.p99);
      }
    }
  }
  if (services_.replicator != nullptr) {
    const std::vector<replica::DbReplicaStatus> dbs = services_.replicator->Statuses();
    const replica::ClientStats stats = services_.replicator->Stats();
    const int64_t now = clock_->NowUnixMicros() / 1000;
    p.Family("gateway_replica_last_txid", "gauge", "Last transaction in the replica");
    for (const auto& d : dbs)
      p.Sample("gateway_replica_last_txid", {{"db", d.name}}, static_cast<double>(d.last_txid));
    p.Family("gateway_replica_last_sync_timestamp_seconds", "gauge", "When a sync last succeeded");
    for (const auto& d : dbs)
      p.Sample("gateway_replica_last_sync_timestamp_seconds", {{"db", d.name}},
               d.last_sync_ms / 1000.0);
    p.Family("gateway_replica_lag_seconds", "gauge",
             "0 when everything committed is in the replica, else seconds since the last sync");
    for (const auto& d : dbs) {
      p.Sample(
          "gateway_replica_lag_seconds", {{"db", d.name}},
          d.pending_frames == 0 || d.last_sync_ms == 0 ? 0.0 : (now - d.last_sync_ms) / 1000.0);
    }
    p.Family("gateway_replica_pending_frames", "gauge", "Committed WAL frames not yet shipped");
    for (const auto& d : dbs)
      p.Sample("gateway_replica_pending_frames", {{"db", d.name}},
               static_cast<double>(d.pending_frames));
    p.Family("gateway_replica_segments_total", "counter", "Segments uploaded");
    for (const auto& d : dbs)
      p.Sample("gateway_replica_segments_total", {{"db", d.name}},
               static_cast<double>(d.segments_sent));
    p.Family("gateway_replica_snapshots_total", "counter", "Snapshots uploaded");
    for (const auto& d : dbs)
      p.Sample("gateway_replica_snapshots_total", {{"db", d.name}},
               static_cast<double>(d.snapshots_sent));
    p.Family("gateway_replica_failing", "gauge", "1 when the last sync of the database failed");
    for (const auto& d : dbs)
      p.Sample("gateway_replica_failing", {{"db", d.name}}, d.last_error.empty() ? 0 : 1);
    p.Family("gateway_replica_requests_total", "counter", "Requests sent to the replica store");
    p.Sample("gateway_replica_requests_total", static_cast<double>(stats.requests));
    p.Family("gateway_replica_bytes_sent_total", "counter", "Bytes uploaded to the replica store");
    p.Sample("gateway_replica_bytes_sent_total", static_cast<double>(stats.bytes_sent));
    p.Family("gateway_replica_retries_total", "counter", "Requests to the store that were retried");
    p.Sample("gateway_replica_retries_total", static_cast<double>(stats.retries));
  }
  return p.text();
}

void Server::OnCheckpointTimer(uv_timer_t* timer) {
  auto* self = static_cast<Server*>(timer->data);
  if (self->checkpoint_running_) return;
  bool needed = false;
  // Only main: the cache and queue writers keep their own WALs small (see main.cc).
  needed =
      self->databases_->CurrentInfo(services::DatabaseRole::kMain).wal_bytes >= kCheckpointWalBytes;
  if (!needed) return;
  self->checkpoint_running_ = true;
  uv_queue_work(&self->loop_, &self->checkpoint_req_, CheckpointWork, CheckpointDone);
}

void Server::CheckpointWork(uv_work_t* req) {
  // Runs on libuv's thread pool: a checkpoint reads and writes the database files.
  auto* self = static_cast<Server*>(req->data);
  for (services::DatabaseRole role : {services::DatabaseRole::kMain}) {
    const int64_t wal = self->databases_->CurrentInfo(role).wal_bytes;
    if (wal < kCheckpointWalBytes) continue;
    services::Result<services::CheckpointResult> r =
        self->databases_->Checkpoint(role, wal >= kTruncateWalBytes);
    const std::string db(services::RoleName(role));
    if (!r.ok()) {
      Log(LogLevel::kWarn, "checkpoint_failed", {{"db", db}, {"error", r.status().ToString()}});
    } else if (!r->busy) {
      Log(LogLevel::kDebug, "checkpoint",
          {{"db", db}, {"wal_frames", r->wal_frames}, {"copied_frames", r->checkpointed_frames}});
    }
  }
}

void Server::CheckpointDone(uv_work_t* req, int) {
  static_cast<Server*>(req->data)->checkpoint_running_ = false;
}

}  // namespace gateway
