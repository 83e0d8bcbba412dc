// Config: the gateway's settings, read from a TOML file (see docs/configuration.md for every key).
//
// LoadConfig resolves everything a running server needs: ${VAR} references are expanded from the
// environment, sizes and durations become numbers, relative paths become absolute against the
// config file's folder. A Config is a plain value, immutable after loading, safe to share.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gateway/config_values.h"
#include "services/sqlite_tuning.h"
#include "services/status.h"

namespace gateway {

struct ServerConfig {
  std::string socket;  // absolute path of the Unix socket
  uint32_t socket_mode = 0660;
  int64_t max_connections = 1024;
  int64_t max_frame_size = 32ll << 20;
  int64_t max_pending_reply_size = 8ll << 20;  // per connection; reading pauses above it
  int64_t shutdown_timeout_ms = 10'000;        // how long in-flight requests may take on stop
  int64_t spin_us = 100;  // the loop polls without sleeping this long after a read (SpinGate)
  std::string log_level = "info";              // debug | info | warn | error
  std::string log_format = "logfmt";           // logfmt | json
  std::string metrics_addr;                    // "127.0.0.1:9464": Prometheus /metrics; "" = off
  std::string token;  // secret: when set, each connection must send it in hello before anything
};

struct DatabaseConfig {
  std::string path;      // absolute
  int64_t max_size = 0;  // bytes; 0 = no budget (only the cache uses one)
  // Cache only:
  int64_t max_entries = 0;                   // 0 = no limit
  std::string eviction = "soonest-expiry";  // or "least-recently-stored", "lru"
  int64_t max_value_size = 16ll << 20;
};

struct ReplicaConfig {
  std::string url;  // "" = no replica; "file:///abs", "file://rel" or "s3://bucket/prefix"
  std::string endpoint;
  std::string region = "us-east-1";
  std::string access_key_id;
  std::string secret_access_key;  // secret: never logged or printed
  std::string session_token;      // secret: temporary credentials (AWS STS); "" = none
  std::optional<bool> force_path_style;  // unset: path-style with an endpoint, else virtual-host
  int64_t max_attempts = 5;              // tries per store request, the first included
  std::string encryption_key;     // secret: AES-256-GCM key for replica objects; "" = plain
  int64_t sync_interval_ms = 1000;
  int64_t snapshot_interval_ms = 6 * 3'600'000;  // a full snapshot at least this often
  int64_t retention_ms = 72 * 3'600'000;         // point-in-time window kept in the replica
  int64_t lease_ttl_ms = 30'000;                 // the replica lease lasts this long unrenewed
  // For url = file://..., the absolute folder it names; empty for other schemes.
  std::string file_path;
};

struct RestoreConfig {
  std::string on_boot = "if-missing";  // if-missing | never
};

// One [[queue.schedule]] entry: a task the gateway enqueues at every slot of a cron expression.
struct ScheduleConfig {
  std::string name;  // unique; identifies the schedule across restarts
  std::string cron;  // five fields, UTC
  std::string task;
  std::string queue = "default";
  std::string args_msgpack = std::string("\x90", 1);    // msgpack array
  std::string kwargs_msgpack = std::string("\x80", 1);  // msgpack map
  std::string args_toml = "[]";                         // as written, for check-config
  std::string kwargs_toml = "{}";
  int64_t priority = 0;
  int64_t max_attempts = 1;
};

struct QueueConfig {
  std::vector<ScheduleConfig> schedules;
};

struct ExecConfig {
  std::vector<std::string> command;  // the app server; empty = run none
  std::vector<std::string> worker;   // optional second process (a job worker), restarted if it dies
  std::string cwd;                   // absolute; default: the config file's folder
  std::vector<std::pair<std::string, std::string>> env;  // added to the children's environment
};

struct Config {
  std::string file;  // absolute path of the config file
  std::string dir;   // its folder, the base of relative paths
  ServerConfig server;
  services::SqliteTuning sqlite;
  DatabaseConfig main;
  DatabaseConfig cache;
  DatabaseConfig queue;
  ReplicaConfig replica;
  RestoreConfig restore;
  ExecConfig exec;
  QueueConfig queue_config;
};

// Reads and validates `path`. Errors carry "file:line:" and name the offending key or variable.
services::Result<Config> LoadConfig(const std::string& path, const EnvLookup& env = ProcessEnv);

// Parses TOML text as if it were the file `path` (which need not exist); for tests.
services::Result<Config> ParseConfig(std::string_view toml_text, const std::string& path,
                                     const EnvLookup& env = ProcessEnv);

// The effective configuration as TOML, every key present, secrets replaced by "********".
std::string FormatConfig(const Config& config);

}  // namespace gateway
