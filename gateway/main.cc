// gateway: the command line. `gateway --config app.toml` runs the server; see Usage() for the
// other commands. Exit codes: 0 success, 1 runtime failure, 2 bad command line or config.
#include <signal.h>
#include <unistd.h>

#include <mutex>
#include <sqlite3.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gateway/commands.h"
#include "gateway/config.h"
#include "gateway/replication.h"
#include "gateway/log.h"
#include "gateway/server.h"
#include "gateway/socket_lock.h"
#include "services/cache/cache_reader.h"
#include "services/cache/cache_writer.h"
#include "replica/lease.h"
#include "services/databases.h"
#include "services/queue/job_queue.h"

namespace gateway {
namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

void Usage(FILE* out) {
  std::fprintf(
      out,
      "usage: gateway --config FILE               run the server\n"
      "       gateway check-config --config FILE  print the effective config, secrets masked\n"
      "       gateway restore --config FILE [--db NAME] [-o PATH] [--timestamp T | --txid N]\n"
      "                       [--if-db-not-exists] [--if-replica-exists]\n"
      "                                           restore databases from the replica\n"
      "       gateway generations --config FILE [--db NAME]\n"
      "       gateway snapshots --config FILE [--db NAME]\n"
      "                                           list what the replica holds\n"
      "       gateway verify --config FILE        prove the replica of a running gateway is\n"
      "                                           restorable and current (exit code 0 if so)\n"
      "       gateway status --config FILE        a summary of a running gateway\n"
      "       gateway --version                   print the gateway and SQLite versions\n"
      "       gateway --help                      print this help\n");
}

struct CommandLine {
  // run | check-config | restore | generations | snapshots | verify | version | help
  std::string command = "run";
  std::string config;
  RestoreFlags restore;
  int64_t lease_wait_ms = 0;  // run: how long to wait for another gateway's replica lease
};

bool IsCommand(const std::string& a) {
  return a == "check-config" || a == "restore" || a == "generations" || a == "snapshots" ||
         a == "verify" || a == "status";
}

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
    } else if (IsCommand(a) && i == 0) {
      cl->command = a;
    } else if ((a == "--db" || a == "-o" || a == "--output" || a == "--timestamp" ||
                a == "--txid") &&
               cl->command != "run") {
      if (i + 1 >= args.size()) {
        *error = a + " needs a value";
        return false;
      }
      const std::string& v = args[++i];
      if (a == "--db") {
        cl->restore.db = v;
      } else if (a == "-o" || a == "--output") {
        cl->restore.output = v;
      } else if (a == "--timestamp") {
        cl->restore.timestamp = v;
      } else {
        char* end = nullptr;
        cl->restore.txid = std::strtoull(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0') {
          *error = "--txid needs a transaction number";
          return false;
        }
      }
    } else if (a == "--lease-wait" && cl->command == "run") {
      if (i + 1 >= args.size()) {
        *error = "--lease-wait needs a duration such as 60s";
        return false;
      }
      services::Result<int64_t> ms = ParseDurationMs(args[++i]);
      if (!ms.ok()) {
        *error = "--lease-wait: " + ms.status().message();
        return false;
      }
      cl->lease_wait_ms = *ms;
    } else if (a == "--if-db-not-exists" && cl->command == "restore") {
      cl->restore.if_db_not_exists = true;
    } else if (a == "--if-replica-exists" && cl->command == "restore") {
      cl->restore.if_replica_exists = true;
    } else {
      *error = "unknown argument '" + a + "'";
      return false;
    }
  }
  if (cl->command != "version" && cl->command != "help" && cl->config.empty()) {
    *error = "--config FILE is required";
    return false;
  }
  if (cl->restore.timestamp && cl->restore.txid) {
    *error = "give --timestamp or --txid, not both";
    return false;
  }
  return true;
}

// Where a lost lease must go: the replicator, once it exists.
struct FenceTarget {
  std::mutex mu;
  replica::Replicator* replicator = nullptr;  // guarded by mu
  std::string pending;                        // guarded by mu: lost before the replicator started
};

std::string LeaseOwner() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return std::string(host) + ":" + std::to_string(getpid()) + ":" + services::queue::RandomId().substr(0, 8);
}

int RunServer(const Config& config, int64_t lease_wait_ms) {
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
  services::Result<std::shared_ptr<replica::ReplicaClient>> replica_client =
      OpenReplicaClient(config);
  if (!replica_client.ok()) {
    Log(LogLevel::kError, "start_failed", {{"error", replica_client.status().ToString()}});
    return kExitRuntime;
  }
  // One writer per replica: take the lease before restoring (a predecessor releases it only after
  // its final sync, so what we restore is complete) and hold it while we run.
  std::unique_ptr<replica::ReplicaLease> lease;
  auto fence = std::make_shared<FenceTarget>();
  if (*replica_client) {
    replica::LeaseOptions lease_options;
    lease_options.owner = LeaseOwner();
    lease_options.ttl_ms = config.replica.lease_ttl_ms;
    lease_options.wait_ms = lease_wait_ms;
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    // We hold this socket's lock (SocketLock above), so an earlier holder of this identity is dead.
    lease_options.identity = std::string(host) + "|" + config.server.socket;
    lease_options.log = [](const std::string& event, const std::string& detail) {
      Log(event == "lease_lost" ? LogLevel::kError : LogLevel::kInfo, "replica_" + event,
          {{"detail", detail}});
    };
    lease_options.on_regained = [fence] {
      std::lock_guard<std::mutex> lock(fence->mu);
      fence->pending.clear();
      if (fence->replicator != nullptr) fence->replicator->Unfence();
    };
    lease_options.on_lost = [fence](const std::string& why) {
      std::lock_guard<std::mutex> lock(fence->mu);
      if (fence->replicator != nullptr) {
        fence->replicator->Fence(why);
      } else {
        fence->pending = why;
      }
    };
    services::Result<std::unique_ptr<replica::ReplicaLease>> acquired = replica::ReplicaLease::Acquire(
        *replica_client, lease_options, services::SystemClock::Default());
    if (!acquired.ok()) {
      Log(LogLevel::kError, "start_failed", {{"error", acquired.status().message()}});
      return kExitRuntime;
    }
    lease = std::move(*acquired);
    Log(LogLevel::kInfo, "replica_lease_acquired", {{"owner", lease_options.owner}});
  }
  if (*replica_client && config.restore.on_boot == "if-missing") {
    // Before anything opens (and so creates) the databases.
    services::Status restored = RestoreMissing(config, replica_client->get());
    if (!restored.ok()) {
      Log(LogLevel::kError, "start_failed", {{"error", restored.ToString()}});
      return kExitRuntime;
    }
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

  services::SystemClock* clock = services::SystemClock::Default();
  services::SqliteTuning cache_tuning = config.sqlite;
  services::Result<std::unique_ptr<services::cache::CacheReader>> cache_reader =
      services::cache::CacheReader::Open(config.cache.path, cache_tuning);
  if (!cache_reader.ok()) {
    Log(LogLevel::kError, "start_failed", {{"error", cache_reader.status().ToString()}});
    return kExitRuntime;
  }
  services::cache::CacheWriter::Options cache_options;
  cache_options.max_size = config.cache.max_size;
  cache_options.max_entries = config.cache.max_entries;
  // Without a replica the writers keep their WALs small themselves; with one, the replicator does
  // (it must ship frames before any checkpoint lets them be overwritten).
  constexpr int64_t kTruncateWalBytes = 16 << 20;
  const int64_t truncate_wal = *replica_client ? 0 : kTruncateWalBytes;
  cache_options.restart_wal_bytes = truncate_wal;
  cache_options.eviction = config.cache.eviction == "lru"
                               ? services::cache::Eviction::kLeastRecentlyUsed
                           : config.cache.eviction == "least-recently-stored"
                               ? services::cache::Eviction::kLeastRecentlyStored
                               : services::cache::Eviction::kSoonestExpiry;
  services::Result<std::unique_ptr<services::cache::CacheWriter>> cache_writer =
      services::cache::CacheWriter::Start(config.cache.path, cache_tuning, cache_options, clock);
  if (!cache_writer.ok()) {
    Log(LogLevel::kError, "start_failed", {{"error", cache_writer.status().ToString()}});
    return kExitRuntime;
  }

  std::unique_ptr<replica::Replicator> replicator;
  if (*replica_client) {
    services::Result<std::unique_ptr<replica::Replicator>> started =
        StartReplicator(config, *replica_client, clock);
    if (!started.ok()) {
      Log(LogLevel::kError, "start_failed", {{"error", started.status().ToString()}});
      return kExitRuntime;
    }
    replicator = std::move(*started);
    {
      std::lock_guard<std::mutex> lock(fence->mu);
      fence->replicator = replicator.get();
      if (!fence->pending.empty()) replicator->Fence(fence->pending);
    }
    Log(LogLevel::kInfo, "replicating", {{"store", (*replica_client)->Describe()}});
  }

  services::Status st;
  int exit_code = 0;
  {
    ServerServices server_services;
    server_services.replicator = replicator.get();
    server_services.databases = dbs->get();
    server_services.cache_reader = cache_reader->get();
    server_services.cache_writer = cache_writer->get();
    std::vector<services::queue::JobQueue::Schedule> schedules;
    for (const ScheduleConfig& sc : config.queue_config.schedules) {
      services::queue::JobQueue::Schedule s{sc.name, *services::queue::CronSchedule::Parse(sc.cron),
                                            services::queue::Job()};
      s.job.task = sc.task;
      s.job.queue = sc.queue;
      s.job.args = sc.args_msgpack;
      s.job.kwargs = sc.kwargs_msgpack;
      s.job.priority = sc.priority;
      s.job.max_attempts = sc.max_attempts;
      schedules.push_back(std::move(s));
    }
    server_services.open_queue = [&config, clock, schedules, truncate_wal](
                                     services::queue::JobQueue::Hooks hooks) {
      return services::queue::JobQueue::Open(config.queue.path, config.sqlite, clock,
                                             std::move(hooks), schedules, truncate_wal);
    };
    Server server(config, server_services, clock);
    st = server.Run();
    exit_code = server.exit_code();
  }
  // Every client write was answered before the loop ended; Stop() finishes background work.
  (*cache_writer)->Stop();
  cache_writer->reset();
  cache_reader->reset();
  if (replicator) {
    // The last round ships everything committed, so the replica holds the final state.
    replicator->Stop();
    Log(LogLevel::kInfo, "replica_final_sync", {{"store", (*replica_client)->Describe()}});
    {
      std::lock_guard<std::mutex> lock(fence->mu);
      fence->replicator = nullptr;
    }
    replicator.reset();
  }
  if (lease) {
    // After the final sync: a successor waiting for the lease restores a complete state.
    services::Status released = lease->Release();
    if (released.ok()) {
      Log(LogLevel::kInfo, "replica_lease_released");
    } else {
      Log(LogLevel::kWarn, "replica_lease_release_failed", {{"error", released.ToString()}});
    }
  }
  // Closing the last connection to each database checkpoints it and removes its WAL.
  dbs->reset();
  if (!st.ok()) {
    Log(LogLevel::kError, "start_failed", {{"error", st.message()}});
    return kExitRuntime;
  }
  Log(LogLevel::kInfo, "stopped", {{"exit_code", exit_code}});
  return exit_code;
}

int Main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == kExecChildCommand) return ExecChildMain(argc, argv);
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
  if (cl.command == "restore") return RunRestore(*config, cl.restore);
  if (cl.command == "generations") return RunGenerations(*config, cl.restore.db);
  if (cl.command == "snapshots") return RunSnapshots(*config, cl.restore.db);
  if (cl.command == "verify") return RunVerify(*config);
  if (cl.command == "status") return RunStatus(*config);
  // A client that disconnects mid-write must give an EPIPE error, not kill the process.
  signal(SIGPIPE, SIG_IGN);
  return RunServer(*config, cl.lease_wait_ms);
}

}  // namespace
}  // namespace gateway

int main(int argc, char** argv) { return gateway::Main(argc, argv); }
