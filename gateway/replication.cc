#include "gateway/replication.h"

#include <unistd.h>

#include <cmath>
#include <ctime>

#include "gateway/log.h"
#include "replica/encrypting_client.h"
#include "replica/file_client.h"
#include "replica/restore.h"
#include "replica/s3_client.h"

namespace gateway {

using services::Result;
using services::Status;

namespace {

Result<std::shared_ptr<replica::ReplicaClient>> OpenStore(const Config& config, bool read_only) {
  const ReplicaConfig& r = config.replica;
  if (!r.file_path.empty()) {
    Result<std::unique_ptr<replica::FileClient>> client = replica::FileClient::Open(
        r.file_path,
        read_only ? replica::FileClient::Access::kRead : replica::FileClient::Access::kWrite);
    if (!client.ok()) return client.status();
    return std::shared_ptr<replica::ReplicaClient>(std::move(*client));
  }
  replica::S3Options options;
  options.url = r.url;
  options.endpoint = r.endpoint;
  options.region = r.region;
  options.access_key_id = r.access_key_id;
  options.secret_access_key = r.secret_access_key;
  options.session_token = r.session_token;
  options.force_path_style = r.force_path_style;
  options.max_attempts = static_cast<int>(r.max_attempts);
  options.log = [](std::string_view line) {
    Log(LogLevel::kWarn, "replica_store", {{"detail", std::string(line)}});
  };
  Result<std::unique_ptr<replica::S3Client>> client = replica::S3Client::Create(options);
  if (!client.ok()) return client.status().WithContext("[replica]");
  return std::shared_ptr<replica::ReplicaClient>(std::move(*client));
}

}  // namespace

Result<std::shared_ptr<replica::ReplicaClient>> OpenReplicaClient(const Config& config,
                                                                  bool read_only) {
  if (config.replica.url.empty()) return std::shared_ptr<replica::ReplicaClient>();
  Result<std::shared_ptr<replica::ReplicaClient>> store = OpenStore(config, read_only);
  if (!store.ok() || config.replica.encryption_key.empty()) return store;
  // Every object is sealed before it leaves the machine; the store never sees plaintext.
  Result<std::unique_ptr<replica::EncryptingClient>> sealed =
      replica::EncryptingClient::Wrap(*store, config.replica.encryption_key);
  if (!sealed.ok()) return sealed.status();
  return std::shared_ptr<replica::ReplicaClient>(std::move(*sealed));
}

std::vector<replica::ReplicatedDb> ReplicatedDbs(const Config& config) {
  return {{"main", config.main.path}, {"cache", config.cache.path}, {"queue", config.queue.path}};
}

Status RestoreMissing(const Config& config, replica::ReplicaClient* client) {
  for (const replica::ReplicatedDb& db : ReplicatedDbs(config)) {
    if (access(db.path.c_str(), F_OK) == 0) continue;
    Log(LogLevel::kInfo, "restore_started", {{"db", db.name}, {"path", db.path}});
    Result<replica::RestoreResult> r = replica::Restore(
        client, db.name, {}, db.path,
        [&](const std::string& line) { Log(LogLevel::kInfo, "restore_progress", {{"db", db.name}, {"detail", line}}); });
    if (!r.ok() && r.status().code() == Status::Code::kNotFound) {
      Log(LogLevel::kInfo, "restore_skipped",
          {{"db", db.name}, {"detail", "the replica holds nothing for it; starting empty"}});
      continue;
    }
    if (!r.ok()) return r.status().WithContext("restoring " + db.name + " on boot");
    Log(LogLevel::kInfo, "restore_done",
        {{"db", db.name}, {"generation", r->generation}, {"txid", static_cast<int64_t>(r->txid)},
         {"objects", r->objects}, {"bytes", r->bytes}});
  }
  return Status::Ok();
}

Result<std::unique_ptr<replica::Replicator>> StartReplicator(
    const Config& config, std::shared_ptr<replica::ReplicaClient> client,
    const services::Clock* clock) {
  replica::ReplicatorOptions options;
  options.sync_interval_ms = config.replica.sync_interval_ms;
  options.snapshot_interval_ms = config.replica.snapshot_interval_ms;
  options.retention_ms = config.replica.retention_ms;
  options.tuning = config.sqlite;
  options.log = [](const std::string& event, const std::string& db, const std::string& detail) {
    Log(event == "sync_failed" ? LogLevel::kWarn : LogLevel::kInfo, "replica_" + event,
        {{"db", db}, {"detail", detail}});
  };
  return replica::Replicator::Start(std::move(client), ReplicatedDbs(config), std::move(options),
                                    clock);
}

Result<int64_t> ParseTimestampMs(const std::string& text) {
  const std::string bad = "timestamp '" + text +
                          "' is not understood; write 2026-11-21T12:00:00Z or Unix seconds";
  char* end = nullptr;
  const double secs = std::strtod(text.c_str(), &end);
  if (!text.empty() && end == text.c_str() + text.size()) {
    return static_cast<int64_t>(std::llround(secs * 1000));
  }
  std::tm tm{};
  const char* rest = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) return Status::InvalidArgument(bad);
  int64_t ms = static_cast<int64_t>(timegm(&tm)) * 1000;
  if (*rest == '.') {
    double frac = std::strtod(rest, &end);
    ms += static_cast<int64_t>(std::llround(frac * 1000));
    rest = end;
  }
  if (std::string(rest) != "Z" && std::string(rest) != "+00:00" && *rest != '\0') {
    return Status::InvalidArgument(bad + " (only UTC, with Z, is accepted)");
  }
  return ms;
}

std::string FormatTimestampMs(int64_t ms) {
  const time_t secs = static_cast<time_t>(ms / 1000);
  std::tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

}  // namespace gateway
