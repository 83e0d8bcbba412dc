// ExecSupervisor: runs the app server (and optionally a job worker) that [exec] names, as children
// of the gateway, on the event loop.
//
// Children get GATEWAY_SOCKET, GATEWAY_DB_MAIN/CACHE/QUEUE and an LD_LIBRARY_PATH that starts with
// the folder of the gateway's libsqlite3.so.0 (so Django loads the same, fixed SQLite), plus
// [exec] env. The worker is restarted when it dies; when the app server exits the gateway stops.
// Children start through the gateway binary itself (`gateway __exec-child`, see ExecChildMain),
// which asks the kernel to send them SIGTERM when the gateway dies, so a gateway killed with
// SIGKILL leaves no app server behind holding its port.
// Threads: loop thread only. Handles are freed in their close callbacks.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gateway/config.h"
#include "services/status.h"

namespace gateway {

// The argument that makes `gateway` run as the start of an [exec] child.
inline constexpr char kExecChildCommand[] = "__exec-child";

// `gateway __exec-child <gateway pid> <program> -- <argv...>`: arranges SIGTERM on the gateway's
// death, then execs `program` with `argv`. Returns only on failure (the exit status).
int ExecChildMain(int argc, char** argv);

class ExecSupervisor {
 public:
  // `on_app_exit(code)` runs when the app server exits on its own (not after Stop()).
  ExecSupervisor(uv_loop_t* loop, const Config& config, std::function<void(int)> on_app_exit);
  ~ExecSupervisor();

  services::Status Start();
  // Sends SIGTERM to every child; once all have exited (or after `timeout_ms`, with SIGKILL)
  // runs `then`. Calling it again while stopping kills them at once.
  void Stop(int64_t timeout_ms, std::function<void()> then);
  void Forward(int signum);  // to the app server
  bool running() const;
  // The app server's exit status as a process exit code (128 + signal when it was killed).
  int exit_code() const { return exit_code_; }

 private:
  struct Child;
  void Spawn(Child* child);
  void OnExit(Child* child, int64_t status, int signal);
  void MaybeDone();
  std::vector<std::string> Environment() const;

  uv_loop_t* loop_;
  const Config& config_;
  std::function<void(int)> on_app_exit_;
  std::vector<std::unique_ptr<Child>> children_;
  uv_timer_t* kill_timer_ = nullptr;
  std::function<void()> then_;
  bool stopping_ = false;
  int exit_code_ = 0;
};

}  // namespace gateway
