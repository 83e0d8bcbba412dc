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
  Result<std::shared_ptr<replica::ReplicaClient>> client = OpenReplicaClient(config, /*read_only=*/true);
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

const msgpack::object* Field(const msgpack::object& map, std::string_view key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const msgpack::object& k = map.via.map.ptr[i].key;
    if (k.type == msgpack::type::STR && std::string_view(k.via.str.ptr, k.via.str.size) == key) {
      return &map.via.map.ptr[i].val;
    }
  }
  return nullptr;
}

double Num(const msgpack::object& map, std::string_view key) {
  const msgpack::object* v = Field(map, key);
  if (v == nullptr) return 0;
  switch (v->type) {
    case msgpack::type::POSITIVE_INTEGER: return static_cast<double>(v->via.u64);
    case msgpack::type::NEGATIVE_INTEGER: return static_cast<double>(v->via.i64);
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return v->via.f64;
    default: return 0;
  }
}

std::string Str(const msgpack::object& map, std::string_view key) {
  const msgpack::object* v = Field(map, key);
  if (v == nullptr || v->type != msgpack::type::STR) return "";
  return std::string(v->via.str.ptr, v->via.str.size);
}

}  // namespace

int RunStatus(const Config& config) {
  Result<std::unique_ptr<SocketClient>> gw = SocketClient::Connect(config.server.socket, config.server.token);
  if (!gw.ok()) return Fail(gw.status().message());
  auto call = [&](const std::string& op) -> std::optional<SocketClient::Response> {
    Result<SocketClient::Response> r = (*gw)->Call(op, [](Packer& p) { p.pack_map(0); }, 10'000);
    if (!r.ok() || r->status != 0) return std::nullopt;
    return std::move(*r);
  };
  std::optional<SocketClient::Response> stats = call("stats");
  if (!stats) return Fail("the gateway did not answer stats");
  const msgpack::object& s = stats->body.get();
  std::printf("gateway at %s: up %.0f s, %.0f connections (%.0f since start), %.0f requests, "
              "%.0f errors\n\n",
              config.server.socket.c_str(), Num(s, "uptime_seconds"), Num(s, "connections"),
              Num(s, "connections_total"), Num(s, "requests_total"), Num(s, "errors_total"));
  std::optional<SocketClient::Response> replica = call("replica.status");
  const msgpack::object* rdbs = replica ? Field(replica->body.get(), "databases") : nullptr;
  std::printf("%-6s %12s %12s %-26s %10s %-24s %8s %s\n", "db", "size", "wal", "generation",
              "last_txid", "last sync", "lag", "error");
  if (const msgpack::object* dbs = Field(s, "databases")) {
    for (const char* name : {"main", "cache", "queue"}) {
      const msgpack::object* d = Field(*dbs, name);
      if (d == nullptr) continue;
      const msgpack::object* r = rdbs ? Field(*rdbs, name) : nullptr;
      std::printf("%-6s %12s %12s %-26s %10.0f %-24s %7.1fs %s\n", name,
                  Mib(static_cast<int64_t>(Num(*d, "size_bytes"))).c_str(),
                  Mib(static_cast<int64_t>(Num(*d, "wal_bytes"))).c_str(),
                  r ? Str(*r, "generation").c_str() : "(no replica)", r ? Num(*r, "last_txid") : 0,
                  r && Num(*r, "last_sync_at") > 0
                      ? FormatTimestampMs(static_cast<int64_t>(Num(*r, "last_sync_at") * 1000)).c_str()
                      : "-",
                  r ? Num(*r, "lag_seconds") : 0, r ? Str(*r, "last_error").c_str() : "");
    }
  }
  if (replica) {
    const msgpack::object& rb = replica->body.get();
    const msgpack::object* req = Field(rb, "requests");
    std::printf("\nreplica %s: %.0f requests, %s sent\n", Str(rb, "store").c_str(),
                req ? Num(*req, "count") : 0,
                Mib(static_cast<int64_t>(req ? Num(*req, "bytes_sent") : 0)).c_str());
  }
  if (std::optional<SocketClient::Response> cache = call("cache.stats")) {
    const msgpack::object& c = cache->body.get();
    const double reads = Num(c, "hits") + Num(c, "misses");
    std::printf("\ncache: %.0f entries, %s of %s budget, hit rate %.1f%% of %.0f reads, %.0f "
                "evictions, %.0f expirations\n",
                Num(c, "entries"), Mib(static_cast<int64_t>(Num(c, "bytes"))).c_str(),
                Num(c, "max_size") > 0 ? Mib(static_cast<int64_t>(Num(c, "max_size"))).c_str() : "no",
                reads > 0 ? 100.0 * Num(c, "hits") / reads : 0.0, reads, Num(c, "evictions"),
                Num(c, "expirations"));
  }
  if (std::optional<SocketClient::Response> queue = call("queue.stats")) {
    std::printf("\n%-16s %6s %9s %6s %7s %10s %7s %9s %10s %10s\n", "queue", "paused", "scheduled",
                "ready", "running", "successful", "failed", "cancelled", "oldest", "pickup p50");
    if (const msgpack::object* queues = Field(queue->body.get(), "queues")) {
      for (uint32_t i = 0; i < queues->via.map.size; ++i) {
        const msgpack::object& k = queues->via.map.ptr[i].key;
        const msgpack::object& q = queues->via.map.ptr[i].val;
        const msgpack::object* states = Field(q, "states");
        const msgpack::object* pickup = Field(q, "pickup_latency");
        const msgpack::object* paused = Field(q, "paused");
        auto n = [&](const char* st) { return states ? Num(*states, st) : 0; };
        std::printf("%-16.*s %6s %9.0f %6.0f %7.0f %10.0f %7.0f %9.0f %9.1fs %8.2fms\n",
                    static_cast<int>(k.via.str.size), k.via.str.ptr,
                    paused && paused->type == msgpack::type::BOOLEAN && paused->via.boolean ? "yes" : "no",
                    n("SCHEDULED"), n("READY"), n("RUNNING"), n("SUCCESSFUL"), n("FAILED"),
                    n("CANCELLED"), Num(q, "oldest_ready_age"),
                    pickup ? Num(*pickup, "p50") * 1000 : 0);
      }
    }
  }
  return kOk;
}

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
  Result<std::unique_ptr<SocketClient>> gw = SocketClient::Connect(config.server.socket, config.server.token);
  if (!gw.ok()) return Fail(gw.status().message());
  // 1. A marker the replica must come to hold: a cache entry (the gateway's own database).
  const std::string marker = "gateway:verify:" + services::queue::RandomId();
  const std::string value = FormatTimestampMs(::time(nullptr) * int64_t{1000});
  Result<SocketClient::Response> r = (*gw)->Call("cache.set", [&](Packer& p) {
    p.pack_map(3);
    p.pack("key");
    p.pack(marker);
    p.pack("value");
    p.pack(value);
    p.pack("timeout");  // deleted at the end; expires anyway if verify is interrupted
    p.pack(3600);
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
