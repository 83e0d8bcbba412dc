#include "gateway/exec_supervisor.h"

#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "gateway/log.h"

extern char** environ;

namespace gateway {

namespace {
constexpr uint64_t kWorkerRestartMs = 1000;
}  // namespace

struct ExecSupervisor::Child {
  ExecSupervisor* owner = nullptr;
  std::string name;  // "app" or "worker"
  std::vector<std::string> argv;
  uv_process_t* process = nullptr;  // live while the child runs; freed in its close callback
  uv_timer_t* restart = nullptr;
  bool exited = true;
};

ExecSupervisor::ExecSupervisor(uv_loop_t* loop, const Config& config,
                               std::function<void(int)> on_app_exit)
    : loop_(loop), config_(config), on_app_exit_(std::move(on_app_exit)) {
  auto add = [&](const char* name, const std::vector<std::string>& argv) {
    if (argv.empty()) return;
    auto c = std::make_unique<Child>();
    c->owner = this;
    c->name = name;
    c->argv = argv;
    children_.push_back(std::move(c));
  };
  add("app", config.exec.command);
  add("worker", config.exec.worker);
}

ExecSupervisor::~ExecSupervisor() = default;

namespace {

std::string SelfExe() {
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "";
  self[n] = '\0';
  return self;
}

// The file `command` runs: itself when it names a path (relative to `cwd`), else the first
// executable of that name in the PATH of `env`. Empty when there is none.
std::string Resolve(const std::string& command, const std::string& cwd,
                    const std::vector<std::string>& env) {
  if (command.empty()) return "";
  if (command.find('/') != std::string::npos) {
    const std::string path = command.front() == '/' || cwd.empty() ? command : cwd + "/" + command;
    return access(path.c_str(), X_OK) == 0 ? command : "";
  }
  std::string path_list = "/usr/local/bin:/usr/bin:/bin";
  for (const std::string& e : env) {
    if (e.rfind("PATH=", 0) == 0) path_list = e.substr(5);
  }
  size_t start = 0;
  while (start <= path_list.size()) {
    size_t end = path_list.find(':', start);
    if (end == std::string::npos) end = path_list.size();
    std::string dir = path_list.substr(start, end - start);
    if (dir.empty()) dir = cwd.empty() ? "." : cwd;
    const std::string candidate = dir + "/" + command;
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return "";
}

}  // namespace

int ExecChildMain(int argc, char** argv) {
  // argv: gateway __exec-child <gateway pid> <program> -- <argv...>
  if (argc < 6 || std::string_view(argv[4]) != "--") {
    std::fprintf(stderr, "gateway: %s is for the gateway's own use ([exec] children)\n",
                 kExecChildCommand);
    return 2;
  }
  const pid_t gateway = static_cast<pid_t>(std::strtol(argv[2], nullptr, 10));
  // The setting survives exec, so the app server itself gets the signal. It fires when the
  // thread that forked exits: libuv forks from the loop thread, which lives as long as the
  // gateway does.
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != gateway) {
    return 1;  // the gateway died before the request took hold: do not start at all
  }
  execv(argv[3], argv + 5);
  std::fprintf(stderr, "gateway: cannot run [exec] command %s: %s\n", argv[3],
               std::strerror(errno));
  return 127;
}

std::vector<std::string> ExecSupervisor::Environment() const {
  std::vector<std::string> env;
  auto skip = [](const std::string& entry) {
    for (const char* k : {"GATEWAY_SOCKET=", "GATEWAY_DB_MAIN=", "GATEWAY_DB_CACHE=",
                          "GATEWAY_DB_QUEUE=", "GATEWAY_TOKEN=", "LD_LIBRARY_PATH="}) {
      if (entry.rfind(k, 0) == 0) return true;
    }
    return false;
  };
  for (char** e = environ; *e != nullptr; ++e) {
    if (!skip(*e)) env.emplace_back(*e);
  }
  env.push_back("GATEWAY_SOCKET=" + config_.server.socket);
  env.push_back("GATEWAY_DB_MAIN=" + config_.main.path);
  env.push_back("GATEWAY_DB_CACHE=" + config_.cache.path);
  env.push_back("GATEWAY_DB_QUEUE=" + config_.queue.path);
  // Django must load the same SQLite as the gateway (3.51.3 or newer: the WAL-reset fix).
  std::string libdir;
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    const std::string dir = std::filesystem::path(self).parent_path().string();
    if (access((dir + "/libsqlite3.so.0").c_str(), R_OK) == 0) libdir = dir;
  }
  const char* old = std::getenv("LD_LIBRARY_PATH");
  std::string ld = libdir;
  if (old != nullptr && *old != '\0') ld += (ld.empty() ? "" : ":") + std::string(old);
  if (!ld.empty()) env.push_back("LD_LIBRARY_PATH=" + ld);
  if (libdir.empty()) {
    Log(LogLevel::kWarn, "exec_sqlite_not_found",
        {{"detail", "no libsqlite3.so.0 beside the gateway binary; the app loads the system SQLite"}});
  }
  // The app authenticates with the same token (gateway_client reads GATEWAY_TOKEN).
  if (!config_.server.token.empty()) env.push_back("GATEWAY_TOKEN=" + config_.server.token);
  for (const auto& [k, v] : config_.exec.env) env.push_back(k + "=" + v);
  return env;
}

services::Status ExecSupervisor::Start() {
  for (auto& c : children_) {
    Spawn(c.get());
    if (c->exited) {
      return services::Status::FailedPrecondition("cannot start [exec] " + c->name + " '" +
                                                  c->argv[0] + "'; check the command and its PATH");
    }
  }
  return services::Status::Ok();
}

void ExecSupervisor::Spawn(Child* c) {
  std::vector<std::string> env = Environment();
  const std::string program = Resolve(c->argv[0], config_.exec.cwd, env);
  std::string self = SelfExe();
  if (program.empty() || self.empty()) {
    Log(LogLevel::kError, "exec_failed",
        {{"process", c->name},
         {"command", c->argv[0]},
         {"error", program.empty() ? "not found, or not executable, in the PATH it runs with"
                                   : "cannot find the gateway's own binary in /proc/self/exe"}});
    c->exited = true;
    return;
  }
  std::string child_command = kExecChildCommand;
  std::string gateway_pid = std::to_string(getpid());
  std::string resolved = program;
  std::string separator = "--";
  std::vector<char*> argv = {self.data(), child_command.data(), gateway_pid.data(),
                             resolved.data(), separator.data()};
  std::vector<char*> envp;
  for (std::string& a : c->argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  uv_stdio_container_t stdio[3];
  for (int fd = 0; fd < 3; ++fd) {
    stdio[fd].flags = UV_INHERIT_FD;
    stdio[fd].data.fd = fd;
  }
  uv_process_options_t options{};
  // Its own session and process group: a terminal's Ctrl-C reaches only the gateway, which then
  // stops the children in order; and a signal to the group also reaches what the child started
  // (sh -c "migrate && exec gunicorn").
  options.flags = UV_PROCESS_DETACHED;
  options.file = argv[0];
  options.args = argv.data();
  options.env = envp.data();
  options.cwd = config_.exec.cwd.c_str();
  options.stdio_count = 3;
  options.stdio = stdio;
  options.exit_cb = [](uv_process_t* p, int64_t status, int signal) {
    auto* child = static_cast<Child*>(p->data);
    child->owner->OnExit(child, status, signal);
  };
  c->process = new uv_process_t;
  c->process->data = c;
  const int rc = uv_spawn(loop_, c->process, &options);
  if (rc != 0) {
    Log(LogLevel::kError, "exec_failed",
        {{"process", c->name}, {"command", c->argv[0]}, {"error", uv_strerror(rc)}});
    uv_close(reinterpret_cast<uv_handle_t*>(c->process),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
    c->process = nullptr;
    c->exited = true;
    return;
  }
  c->exited = false;
  Log(LogLevel::kInfo, "exec_started",
      {{"process", c->name}, {"command", c->argv[0]}, {"pid", static_cast<int64_t>(c->process->pid)}});
}

void ExecSupervisor::OnExit(Child* c, int64_t status, int signal) {
  c->exited = true;
  uv_close(reinterpret_cast<uv_handle_t*>(c->process),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
  c->process = nullptr;
  const int code = signal != 0 ? 128 + signal : static_cast<int>(status);
  Log(stopping_ || code == 0 ? LogLevel::kInfo : LogLevel::kWarn, "exec_exited",
      {{"process", c->name}, {"status", static_cast<int64_t>(status)}, {"signal", signal}});
  if (c->name == "app") exit_code_ = code;
  if (stopping_) {
    MaybeDone();
    return;
  }
  if (c->name == "app") {
    on_app_exit_(code);
    return;
  }
  // The worker died on its own: start a new one shortly (not in a tight loop if it keeps dying).
  c->restart = new uv_timer_t;
  c->restart->data = c;
  uv_timer_init(loop_, c->restart);
  uv_timer_start(c->restart, [](uv_timer_t* t) {
    auto* child = static_cast<Child*>(t->data);
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    child->restart = nullptr;
    if (!child->owner->stopping_) child->owner->Spawn(child);
  }, kWorkerRestartMs, 0);
}

bool ExecSupervisor::running() const {
  for (const auto& c : children_) {
    if (!c->exited) return true;
  }
  return false;
}

void ExecSupervisor::Forward(int signum) {
  for (const auto& c : children_) {
    if (c->name == "app" && !c->exited) kill(-c->process->pid, signum);
  }
}

void ExecSupervisor::Stop(int64_t timeout_ms, std::function<void()> then) {
  if (stopping_) {
    for (const auto& c : children_) {
      if (!c->exited) kill(-c->process->pid, SIGKILL);
    }
    return;
  }
  stopping_ = true;
  then_ = std::move(then);
  for (const auto& c : children_) {
    if (c->restart != nullptr) {
      uv_close(reinterpret_cast<uv_handle_t*>(c->restart),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
      c->restart = nullptr;
    }
    if (!c->exited) kill(-c->process->pid, SIGTERM);  // the whole group
  }
  kill_timer_ = new uv_timer_t;
  kill_timer_->data = this;
  uv_timer_init(loop_, kill_timer_);
  uv_timer_start(kill_timer_, [](uv_timer_t* t) {
    auto* self = static_cast<ExecSupervisor*>(t->data);
    Log(LogLevel::kWarn, "exec_kill", {{"detail", "children did not stop in time; SIGKILL"}});
    for (const auto& c : self->children_) {
      if (!c->exited) kill(-c->process->pid, SIGKILL);
    }
  }, static_cast<uint64_t>(timeout_ms), 0);
  MaybeDone();
}

void ExecSupervisor::MaybeDone() {
  if (!stopping_ || running() || !then_) return;
  if (kill_timer_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(kill_timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    kill_timer_ = nullptr;
  }
  std::function<void()> then = std::move(then_);
  then_ = nullptr;
  then();
}

}  // namespace gateway
