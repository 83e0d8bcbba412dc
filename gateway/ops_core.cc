#include "gateway/ops_core.h"

#include <sqlite3.h>

#include <string>

#include "gateway/log.h"

namespace gateway {
namespace {


template <typename Map>
void PackCounts(Packer& p, const Map& counts) {
  p.pack_map(static_cast<uint32_t>(counts.size()));
  for (const auto& [name, n] : counts) {
    PackStr(p, name);
    p.pack_uint64(n);
  }
}

void Hello(const CoreOpsEnv* env, const Args& args, Reply reply) {
  if (std::optional<uint64_t> want = args.Uint("protocol"); want && *want != kProtocolVersion) {
    reply.Error(ErrorCode::kBadArgument,
                "this gateway speaks protocol " + std::to_string(kProtocolVersion) + ", not " +
                    std::to_string(*want) + "; use a matching gateway_client");
    return;
  }
  if (std::optional<std::string_view> client = args.Str("client")) {
    Log(LogLevel::kDebug, "hello", {{"client", *client}});
  }
  const std::vector<std::string> ops = env->table->Names();
  reply.Ok([&](Packer& p) {
    p.pack_map(5);
    PackStr(p, "protocol");
    p.pack_uint64(kProtocolVersion);
    PackStr(p, "server_version");
    PackStr(p, GATEWAY_VERSION);
    PackStr(p, "sqlite_version");
    PackStr(p, sqlite3_libversion());
    PackStr(p, "features");
    p.pack_array(static_cast<uint32_t>(ops.size()));
    for (const std::string& op : ops) PackStr(p, op);
    PackStr(p, "max_frame_size");
    p.pack_uint32(env->max_frame_size);
  });
}

void PackDatabase(Packer& p, const services::DatabaseInfo& info) {
  const services::AppliedPragmas& g = info.pragmas;
  p.pack_map(5);
  PackStr(p, "path");
  PackStr(p, info.path);
  PackStr(p, "size_bytes");
  p.pack_int64(info.size_bytes);
  PackStr(p, "wal_bytes");
  p.pack_int64(info.wal_bytes);
  PackStr(p, "user_version");
  p.pack_int64(info.user_version);
  PackStr(p, "pragmas");
  p.pack_map(9);
  PackStr(p, "journal_mode");
  PackStr(p, g.journal_mode);
  const std::pair<const char*, int64_t> ints[] = {
      {"synchronous", g.synchronous}, {"busy_timeout", g.busy_timeout},
      {"mmap_size", g.mmap_size},     {"journal_size_limit", g.journal_size_limit},
      {"cache_size", g.cache_size},   {"foreign_keys", g.foreign_keys},
      {"temp_store", g.temp_store},   {"wal_autocheckpoint", g.wal_autocheckpoint},
  };
  for (const auto& [name, value] : ints) {
    PackStr(p, name);
    p.pack_int64(value);
  }
}

void Stats(const CoreOpsEnv* env, Reply reply) {
  const Metrics& m = *env->metrics;
  const double uptime = (env->clock->MonotonicMicros() - env->started_mono_us) / 1e6;
  reply.Ok([&](Packer& p) {
    p.pack_map(env->databases != nullptr ? 9 : 8);
    PackStr(p, "uptime_seconds");
    PackFloat64(p, uptime);
    PackStr(p, "connections");
    p.pack_int64(m.connections_open);
    PackStr(p, "connections_total");
    p.pack_uint64(m.connections_total);
    PackStr(p, "connections_rejected");
    p.pack_uint64(m.connections_rejected);
    PackStr(p, "requests_total");
    p.pack_uint64(m.requests_total);
    PackStr(p, "errors_total");
    p.pack_uint64(m.errors_total);
    PackStr(p, "requests_by_op");
    PackCounts(p, m.requests_by_op);
    PackStr(p, "errors_by_code");
    PackCounts(p, m.errors_by_code);
    if (env->databases != nullptr) {
      PackStr(p, "databases");
      p.pack_map(static_cast<uint32_t>(services::kAllRoles.size()));
      for (services::DatabaseRole role : services::kAllRoles) {
        PackStr(p, services::RoleName(role));
        PackDatabase(p, env->databases->CurrentInfo(role));
      }
    }
  });
}

}  // namespace

void AddCoreOps(OpTable* table, const CoreOpsEnv* env) {
  table->Add({"hello",
              {{"protocol", ArgType::kUint, false},
               {"client", ArgType::kStr, false},
               {"token", ArgType::kStr, false}},
              [env](const Args& args, Reply reply) { Hello(env, args, std::move(reply)); }});
  table->Add(
      {"ping", {}, [](const Args&, Reply reply) { reply.Ok([](Packer& p) { p.pack("pong"); }); }});
  table->Add({"stats", {}, [env](const Args&, Reply reply) { Stats(env, std::move(reply)); }});
}

}  // namespace gateway
