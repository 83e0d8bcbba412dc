#include "gateway/commands.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "gateway/replication.h"
#include "gateway/socket_client.h"
#include "replica/restore.h"
#include "services/queue/job.h"
#include "services/sqlite_db.h"

namespace gateway {
namespace {

using services::Result;
using services::Status;

constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;

int Fail(const std::string& message) {
  std::fprintf(stderr, "gateway: %s\n", message.c_str());
  return kFailed;
}

std::vector<replica::ReplicatedDb> Selected(const Config& config, const std::string& db) {
  std::vector<replica::ReplicatedDb> out;
  for (const replica::ReplicatedDb& d : ReplicatedDbs(config)) {
    if (db.empty() || d.name == db) out.push_back(d);
  }
  return out;
}

Result<std::shared_ptr<replica::ReplicaClient>> ClientFor(const Config& config) {
  Result<std::shared_ptr<replica::ReplicaClient>> client = OpenReplicaClient(config);
  if (client.ok() && !*client) {
    return Status::FailedPrecondition("the config has no [replica] url; set one to use replicas");
  }
  return client;
}

std::string Mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

}  // namespace

int RunRestore(const Config& config, const RestoreFlags& flags) {
  if (!flags.db.empty() && Selected(config, flags.db).empty()) {
    std::fprintf(stderr, "gateway: --db must be main, cache or queue\n");
    return kUsage;
  }
  if (!flags.output.empty() && flags.db.empty()) {
    std::fprintf(stderr, "gateway: -o needs --db NAME (one database per output file)\n");
    return kUsage;
  }
  replica::RestoreTarget target;
  target.txid = flags.txid;
  if (flags.timestamp) {
    Result<int64_t> ms = ParseTimestampMs(*flags.timestamp);
    if (!ms.ok()) {
      std::fprintf(stderr, "gateway: %s\n", ms.status().message().c_str());
      return kUsage;
    }
    target.time_ms = *ms;
  }
  Result<std::shared_ptr<replica::ReplicaClient>> client = ClientFor(config);
  if (!client.ok()) return Fail(client.status().message());
  int code = kOk;
  for (const replica::ReplicatedDb& db : Selected(config, flags.db)) {
    const std::string output = flags.output.empty() ? db.path : flags.output;
    if (access(output.c_str(), F_OK) == 0) {
      if (flags.if_db_not_exists) {
        std::fprintf(stderr, "restore: %s: %s exists, skipped\n", db.name.c_str(), output.c_str());
        continue;
      }
      return Fail(output + " exists; pass --if-db-not-exists to skip it, or -o to restore elsewhere");
    }
    Result<replica::RestoreResult> r =
        replica::Restore(client->get(), db.name, target, output,
                         [](const std::string& line) { std::fprintf(stderr, "restore: %s\n", line.c_str()); });
    if (!r.ok() && r.status().code() == Status::Code::kNotFound && flags.if_replica_exists) {
      std::fprintf(stderr, "restore: %s: nothing in the replica, skipped\n", db.name.c_str());
      continue;
    }
    if (!r.ok()) {
      Fail(db.name + ": " + r.status().ToString());
      code = kFailed;
      continue;
    }
    std::printf("%s\t%s\ttxid %llu\t%s\n", db.name.c_str(), output.c_str(),
                static_cast<unsigned long long>(r->txid), FormatTimestampMs(r->time_ms).c_str());
  }
  return code;
}

int RunGenerations(const Config& config, const std::string& db) {
  Result<std::shared_ptr<replica::ReplicaClient>> client = ClientFor(config);
  if (!client.ok()) return Fail(client.status().message());
  std::printf("%-6s %-25s %-24s %-24s %10s %10s %9s %9s %12s\n", "db", "generation", "created",
              "last transaction at", "first_txid", "last_txid", "snapshots", "segments", "size");
  for (const replica::ReplicatedDb& d : Selected(config, db)) {
    Result<std::vector<replica::GenerationInfo>> gens = replica::ListGenerations(client->get(), d.name);
    if (!gens.ok()) return Fail(gens.status().ToString());
    for (const replica::GenerationInfo& g : *gens) {
      std::printf("%-6s %-25s %-24s %-24s %10llu %10llu %9lld %9lld %12s\n", d.name.c_str(),
                  g.id.c_str(), FormatTimestampMs(g.created_ms).c_str(),
                  FormatTimestampMs(g.last_time_ms).c_str(),
                  static_cast<unsigned long long>(g.first_txid),
                  static_cast<unsigned long long>(g.last_txid), static_cast<long long>(g.snapshots),
                  static_cast<long long>(g.segments), Mib(g.bytes).c_str());
    }
  }
  return kOk;
}

int RunSnapshots(const Config& config, const std::string& db) {
  Result<std::shared_ptr<replica::ReplicaClient>> client = ClientFor(config);
  if (!client.ok()) return Fail(client.status().message());
  std::printf("%-6s %-25s %10s %-24s %12s\n", "db", "generation", "txid", "taken", "size");
  for (const replica::ReplicatedDb& d : Selected(config, db)) {
    Result<std::vector<replica::SnapshotInfo>> snaps = replica::ListSnapshots(client->get(), d.name);
    if (!snaps.ok()) return Fail(snaps.status().ToString());
    for (const replica::SnapshotInfo& s : *snaps) {
      std::printf("%-6s %-25s %10llu %-24s %12s\n", d.name.c_str(), s.generation.c_str(),
                  static_cast<unsigned long long>(s.txid), FormatTimestampMs(s.time_ms).c_str(),
                  Mib(s.bytes).c_str());
    }
  }
  return kOk;
}

int RunVerify(const Config& config) {
  Result<std::shared_ptr<replica::ReplicaClient>> client = ClientFor(config);
  if (!client.ok()) return Fail(client.status().message());
  Result<std::unique_ptr<SocketClient>> gw = SocketClient::Connect(config.server.socket);
  if (!gw.ok()) return Fail(gw.status().message());
  // 1. A marker the replica must come to hold: a cache entry (the gateway's own database).
  const std::string marker = "gateway:verify:" + services::queue::RandomId();
  const std::string value = FormatTimestampMs(::time(nullptr) * int64_t{1000});
  Result<SocketClient::Response> r = (*gw)->Call("cache.set", [&](Packer& p) {
    p.pack_map(2);
    p.pack("key");
    p.pack(marker);
    p.pack("value");
    p.pack(value);
  });
  if (!r.ok() || r->status != 0) return Fail("could not write the marker through the gateway");
  // 2. Everything committed so far, the marker included, goes to the replica.
  r = (*gw)->Call("replica.sync", [](Packer& p) { p.pack_map(0); }, 300'000);
  if (!r.ok()) return Fail(r.status().message());
  if (r->status != 0) {
    std::ostringstream text;
    text << r->body.get();
    return Fail("replica.sync failed: " + text.str());
  }
  std::fprintf(stderr, "verify: marker %s synced to %s\n", marker.c_str(),
               (*client)->Describe().c_str());
  // 3. Restore every database to a temporary folder; the cache must hold the marker.
  const std::string dir = std::filesystem::temp_directory_path().string() + "/gateway-verify-" +
                          std::to_string(getpid());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  int code = kOk;
  for (const replica::ReplicatedDb& db : ReplicatedDbs(config)) {
    const std::string out = dir + "/" + db.name + ".sqlite3";
    Result<replica::RestoreResult> restored = replica::Restore(
        client->get(), db.name, {}, out,
        [](const std::string& line) { std::fprintf(stderr, "verify: %s\n", line.c_str()); });
    if (!restored.ok()) {
      Fail("verify: " + db.name + " does not restore: " + restored.status().ToString());
      code = kFailed;
      continue;
    }
    if (db.name == "cache") {
      Result<std::unique_ptr<services::SqliteDb>> cache =
          services::SqliteDb::Open(out, services::SqliteDb::Mode::kReadOnly);
      bool found = false;
      if (cache.ok()) {
        Result<services::Statement> q =
            (*cache)->Prepare("SELECT value FROM cache_entries WHERE key = ?1");
        if (q.ok() && q->BindBlob(1, marker).ok()) {
          Result<bool> row = q->Step();
          found = row.ok() && *row && q->ColumnText(0) == value;
        }
      }
      if (!found) {
        Fail("verify: the restored cache lacks the marker: the replica is not current");
        code = kFailed;
      }
    }
    std::printf("%s\trestorable\ttxid %llu\t%s\n", db.name.c_str(),
                static_cast<unsigned long long>(restored->txid),
                db.name == "cache" && code == kOk ? "marker found" : "");
  }
  std::filesystem::remove_all(dir, ec);
  (void)(*gw)->Call("cache.delete", [&](Packer& p) {
    p.pack_map(1);
    p.pack("key");
    p.pack(marker);
  });
  std::printf(code == kOk ? "verify: OK, the replica is restorable and current\n"
                          : "verify: FAILED\n");
  return code;
}

}  // namespace gateway
