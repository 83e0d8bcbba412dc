// gateway: the command line. `gateway --config app.toml` runs the server; see Usage() for the
// other commands. Exit codes: 0 success, 1 runtime failure, 2 bad command line or config.
#include <signal.h>
#include <sqlite3.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gateway/config.h"
#include "gateway/log.h"
#include "gateway/server.h"
#include "gateway/socket_lock.h"
#include "services/databases.h"

namespace gateway {
namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: gateway --config FILE              run the server\n"
               "       gateway check-config --config FILE print the effective config, secrets "
               "masked\n"
               "       gateway --version                  print the gateway and SQLite versions\n"
               "       gateway --help                     print this help\n");
}

struct CommandLine {
  std::string command = "run";  // run | check-config | version | help
  std::string config;
};

bool ParseCommandLine(int argc, char** argv, CommandLine* cl, std::string* error) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--version" || a == "-V") {
      cl->command = "version";
    } else if (a == "--help" || a == "-h") {
      cl->command = "help";
    } else if (a == "--config" || a == "-c") {
      if (i + 1 >= args.size()) {
        *error = a + " needs a file name";
        return false;
      }
      cl->config = args[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      cl->config = a.substr(9);
    } else if (a == "check-config" && i == 0) {
      cl->command = a;
    } else {
      *error = "unknown argument '" + a + "'";
      return false;
    }
  }
  if ((cl->command == "run" || cl->command == "check-config") && cl->config.empty()) {
    *error = "--config FILE is required";
    return false;
  }
  return true;
}

int RunServer(const Config& config) {
  SetLogFormat(config.server.log_format == "json");
  LogLevel level = LogLevel::kInfo;
  ParseLogLevel(config.server.log_level, &level);
  SetLogLevel(level);
  Log(LogLevel::kInfo, "starting",
      {{"version", GATEWAY_VERSION}, {"sqlite", sqlite3_libversion()}, {"config", config.file}});

  services::Result<std::unique_ptr<SocketLock>> lock = SocketLock::Acquire(config.server.socket);
  if (!lock.ok()) {
    Log(LogLevel::kError, "start_failed", {{"error", lock.status().message()}});
    return kExitRuntime;
  }
  if (!config.replica.url.empty()) {
    Log(LogLevel::kWarn, "replica_not_available",
        {{"url", config.replica.url},
         {"detail", "this build does not replicate yet; [replica] is validated but unused"}});
  }
  if (!config.exec.command.empty()) {
    Log(LogLevel::kWarn, "exec_not_available",
        {{"detail",
          "this build does not start [exec] commands yet; start the app server yourself"}});
  }

  services::DatabasePaths paths{config.main.path, config.cache.path, config.queue.path};
  services::Result<std::unique_ptr<services::Databases>> dbs =
      services::Databases::Open(paths, config.sqlite);
  if (!dbs.ok()) {
    Log(LogLevel::kError, "start_failed", {{"error", dbs.status().ToString()}});
    return kExitRuntime;
  }
  for (services::DatabaseRole role : services::kAllRoles) {
    const services::DatabaseInfo& info = (*dbs)->Info(role);
    Log(LogLevel::kInfo, "database_open",
        {{"db", services::RoleName(role)}, {"path", info.path}, {"schema", info.user_version}});
  }

  services::Status st;
  {
    Server server(config, dbs->get(), services::SystemClock::Default());
    st = server.Run();
  }
  // Closing the last connection to each database checkpoints it and removes its WAL.
  dbs->reset();
  if (!st.ok()) {
    Log(LogLevel::kError, "start_failed", {{"error", st.message()}});
    return kExitRuntime;
  }
  Log(LogLevel::kInfo, "stopped");
  return 0;
}

int Main(int argc, char** argv) {
  CommandLine cl;
  std::string error;
  if (!ParseCommandLine(argc, argv, &cl, &error)) {
    std::fprintf(stderr, "gateway: %s\n", error.c_str());
    Usage(stderr);
    return kExitUsage;
  }
  if (cl.command == "help") {
    Usage(stdout);
    return 0;
  }
  if (cl.command == "version") {
    std::printf("gateway %s\nsqlite %s\n", GATEWAY_VERSION, sqlite3_libversion());
    return 0;
  }
  services::Result<Config> config = LoadConfig(cl.config);
  if (!config.ok()) {
    std::fprintf(stderr, "gateway: config error: %s\n", config.status().message().c_str());
    return kExitUsage;
  }
  if (cl.command == "check-config") {
    std::fputs(FormatConfig(*config).c_str(), stdout);
    return 0;
  }
  // A client that disconnects mid-write must give an EPIPE error, not kill the process.
  signal(SIGPIPE, SIG_IGN);
  return RunServer(*config);
}

}  // namespace
}  // namespace gateway

int main(int argc, char** argv) { return gateway::Main(argc, argv); }
