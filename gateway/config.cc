#include "gateway/config.h"

#include <msgpack.hpp>
#include <toml++/toml.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "services/queue/cron.h"

namespace gateway {
namespace {

using services::Result;
using services::Status;

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Reads the keys of one TOML table, remembering which it consumed so that Finish() can reject
// the rest by name and line. Every error starts with "file:line:" and names the key.
class TableReader {
 public:
  TableReader(const toml::table* table, std::string section, const std::string& file,
              const EnvLookup& env)
      : table_(table), section_(std::move(section)), file_(file), env_(env) {}

  Status Str(std::string_view key, std::string* out) {
    const toml::node* n = Get(key);
    if (n == nullptr) return Status::Ok();
    if (!n->is_string()) return Error(n, key, "must be a string");
    Result<std::string> expanded = ExpandEnv(n->as_string()->get(), env_);
    if (!expanded.ok()) return Error(n, key, expanded.status().message());
    *out = std::move(*expanded);
    return Status::Ok();
  }

  Status OneOf(std::string_view key, std::string* out, std::initializer_list<const char*> allowed) {
    std::string value = *out;
    GW_RETURN_IF_ERROR(Str(key, &value));
    std::string list;
    for (const char* a : allowed) {
      if (value == a) {
        *out = value;
        return Status::Ok();
      }
      list += list.empty() ? "" : ", ";
      list += a;
    }
    return Error(Get(key), key, "is \"" + value + "\"; use one of " + list);
  }

  Status Bool(std::string_view key, std::optional<bool>* out) {
    const toml::node* n = Get(key);
    if (n == nullptr) return Status::Ok();
    if (!n->is_boolean()) return Error(n, key, "must be true or false (without quotes)");
    *out = n->as_boolean()->get();
    return Status::Ok();
  }

  Status Int(std::string_view key, int64_t* out, int64_t min, int64_t max) {
    const toml::node* n = Get(key);
    if (n == nullptr) return Status::Ok();
    if (!n->is_integer()) return Error(n, key, "must be an integer");
    int64_t v = n->as_integer()->get();
    if (v < min || v > max) {
      return Error(n, key,
                   "is " + std::to_string(v) + ", outside " + std::to_string(min) + ".." +
                       std::to_string(max));
    }
    *out = v;
    return Status::Ok();
  }

  // A byte size: an integer number of bytes or a string such as "128MiB".
  Status Size(std::string_view key, int64_t* out) {
    const toml::node* n = Get(key);
    if (n == nullptr) return Status::Ok();
    if (n->is_integer()) {
      if (n->as_integer()->get() < 0) return Error(n, key, "must not be negative");
      *out = n->as_integer()->get();
      return Status::Ok();
    }
    std::string text;
    GW_RETURN_IF_ERROR(Str(key, &text));
    Result<int64_t> v = ParseSize(text);
    if (!v.ok()) return Error(n, key, v.status().message());
    *out = *v;
    return Status::Ok();
  }

  Status Duration(std::string_view key, int64_t* out_ms) {
    const toml::node* n = Get(key);
    if (n == nullptr) return Status::Ok();
    std::string text;
    if (!n->is_string()) return Error(n, key, "must be a duration string such as \"1s\" or \"6h\"");
    GW_RETURN_IF_ERROR(Str(key, &text));
    Result<int64_t> v = ParseDurationMs(text);
    if (!v.ok()) return Error(n, key, v.status().message());
    *out_ms = *v;
    return Status::Ok();
  }

  Status Mode(std::string_view key, uint32_t* out) {
    const toml::node* n = Get(key);
    if (n == nullptr) return Status::Ok();
    if (!n->is_string()) {
      return Error(n, key,
                   "must be a string of octal digits such as \"0660\" (TOML integers "
                   "are decimal)");
    }
    Result<uint32_t> v = ParseFileMode(n->as_string()->get());
    if (!v.ok()) return Error(n, key, v.status().message());
    *out = *v;
    return Status::Ok();
  }

  Status StrList(std::string_view key, std::vector<std::string>* out) {
    const toml::node* n = Get(key);
    if (n == nullptr) return Status::Ok();
    const toml::array* arr = n->as_array();
    if (arr == nullptr) return Error(n, key, "must be an array of strings");
    out->clear();
    for (const toml::node& item : *arr) {
      if (!item.is_string()) return Error(&item, key, "must contain only strings");
      Result<std::string> expanded = ExpandEnv(item.as_string()->get(), env_);
      if (!expanded.ok()) return Error(&item, key, expanded.status().message());
      out->push_back(std::move(*expanded));
    }
    return Status::Ok();
  }

  // A path, made absolute against `base` when relative.
  Status Path(std::string_view key, std::string* out, const std::string& base) {
    std::string value;
    GW_RETURN_IF_ERROR(Str(key, &value));
    if (value.empty()) {
      if (Get(key) != nullptr) return Error(Get(key), key, "must not be empty");
      return Status::Ok();
    }
    *out = Absolute(value, base);
    return Status::Ok();
  }

  // The raw node of `key` (marked as read), or nullptr when absent.
  const toml::node* Raw(std::string_view key) { return Get(key); }

  // A nested table, or nullptr when absent. Fails when the key holds something else.
  Result<const toml::table*> Table(std::string_view key) {
    const toml::node* n = Get(key);
    if (n == nullptr) return static_cast<const toml::table*>(nullptr);
    if (!n->is_table()) return Error(n, key, "must be a table ([" + Join(key) + "])");
    return n->as_table();
  }

  // Rejects every key not read by the calls above.
  Status Finish() const {
    if (table_ == nullptr) return Status::Ok();
    for (auto&& [k, v] : *table_) {
      if (used_.count(std::string(k.str())) > 0) continue;
      return Status::InvalidArgument(Where(k.source().begin.line) + "unknown key \"" +
                                     Join(k.str()) + "\"; check the spelling against " +
                                     "docs/configuration.md");
    }
    return Status::Ok();
  }

  Status Error(const toml::node* n, std::string_view key, const std::string& what) const {
    return Status::InvalidArgument(Where(n != nullptr ? n->source().begin.line : 0) + Join(key) +
                                   " " + what);
  }

  static std::string Absolute(const std::string& value, const std::string& base) {
    std::filesystem::path p(value);
    if (p.is_relative()) p = std::filesystem::path(base) / p;
    return p.lexically_normal().string();
  }

 private:
  const toml::node* Get(std::string_view key) {
    used_.insert(std::string(key));
    return table_ == nullptr ? nullptr : table_->get(key);
  }
  std::string Join(std::string_view key) const {
    return section_.empty() ? std::string(key) : section_ + "." + std::string(key);
  }
  std::string Where(uint32_t line) const {
    return file_ + (line > 0 ? ":" + std::to_string(line) : std::string()) + ": ";
  }

  const toml::table* table_;
  std::string section_;
  const std::string& file_;
  const EnvLookup& env_;
  std::set<std::string> used_;
};

Status ReadServer(TableReader& r, const std::string& dir, ServerConfig* s) {
  GW_RETURN_IF_ERROR(r.Path("socket", &s->socket, dir));
  GW_RETURN_IF_ERROR(r.Mode("socket_mode", &s->socket_mode));
  GW_RETURN_IF_ERROR(r.Int("max_connections", &s->max_connections, 1, 1'000'000));
  GW_RETURN_IF_ERROR(r.Size("max_frame_size", &s->max_frame_size));
  GW_RETURN_IF_ERROR(r.Size("max_pending_reply_size", &s->max_pending_reply_size));
  GW_RETURN_IF_ERROR(r.Duration("shutdown_timeout", &s->shutdown_timeout_ms));
  GW_RETURN_IF_ERROR(r.Int("spin_us", &s->spin_us, 0, 10'000));
  GW_RETURN_IF_ERROR(r.OneOf("log_level", &s->log_level, {"debug", "info", "warn", "error"}));
  GW_RETURN_IF_ERROR(r.OneOf("log_format", &s->log_format, {"logfmt", "json"}));
  GW_RETURN_IF_ERROR(r.Str("metrics_addr", &s->metrics_addr));
  GW_RETURN_IF_ERROR(r.Str("token", &s->token));
  if (!s->token.empty() && s->token.size() < 16) {
    return r.Error(nullptr, "token", "must be at least 16 characters (use a random string)");
  }
  if (!s->metrics_addr.empty()) {
    const size_t colon = s->metrics_addr.rfind(':');
    const std::string port = colon == std::string::npos ? "" : s->metrics_addr.substr(colon + 1);
    if (colon == 0 || port.empty() || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(port) > 65535) {
      return r.Error(nullptr, "metrics_addr", "must be HOST:PORT such as \"127.0.0.1:9464\"");
    }
  }
  if (s->max_frame_size < 1024 || s->max_frame_size > (1ll << 31) - 1) {
    return r.Error(nullptr, "max_frame_size", "must be between 1KiB and 2GiB-1");
  }
  if (s->max_pending_reply_size < 64 * 1024) {
    return r.Error(nullptr, "max_pending_reply_size", "must be at least 64KiB");
  }
  return r.Finish();
}

Status ReadSqlite(TableReader& r, services::SqliteTuning* t) {
  GW_RETURN_IF_ERROR(r.Int("busy_timeout_ms", &t->busy_timeout_ms, 0, 3'600'000));
  std::string sync = "NORMAL";
  GW_RETURN_IF_ERROR(r.OneOf("synchronous", &sync, {"OFF", "NORMAL", "FULL", "EXTRA"}));
  t->synchronous = sync == "OFF"     ? services::Synchronous::kOff
                   : sync == "FULL"  ? services::Synchronous::kFull
                   : sync == "EXTRA" ? services::Synchronous::kExtra
                                     : services::Synchronous::kNormal;
  GW_RETURN_IF_ERROR(r.Size("mmap_size", &t->mmap_size));
  GW_RETURN_IF_ERROR(r.Size("journal_size_limit", &t->journal_size_limit));
  int64_t cache_bytes = t->cache_size_kib * 1024;
  GW_RETURN_IF_ERROR(r.Size("cache_size", &cache_bytes));
  t->cache_size_kib = cache_bytes / 1024;
  return r.Finish();
}

Status ReadDatabases(TableReader& r, Config* c, const std::string& file, const EnvLookup& env) {
  struct Entry {
    const char* name;
    DatabaseConfig* db;
    const char* default_path;
  } entries[] = {{"main", &c->main, "db/app.sqlite3"},
                 {"cache", &c->cache, "db/cache.sqlite3"},
                 {"queue", &c->queue, "db/queue.sqlite3"}};
  for (const Entry& e : entries) {
    e.db->path = TableReader::Absolute(e.default_path, c->dir);
    Result<const toml::table*> t = r.Table(e.name);
    if (!t.ok()) return t.status();
    TableReader sub(*t, std::string("databases.") + e.name, file, env);
    GW_RETURN_IF_ERROR(sub.Path("path", &e.db->path, c->dir));
    if (std::string_view(e.name) == "cache") {
      GW_RETURN_IF_ERROR(sub.Size("max_size", &e.db->max_size));
      GW_RETURN_IF_ERROR(sub.Int("max_entries", &e.db->max_entries, 0, int64_t{1} << 40));
      GW_RETURN_IF_ERROR(
          sub.OneOf("eviction", &e.db->eviction, {"soonest-expiry", "least-recently-stored", "lru"}));
      GW_RETURN_IF_ERROR(sub.Size("max_value_size", &e.db->max_value_size));
      if (e.db->max_size != 0 && e.db->max_size < (1 << 20)) {
        return sub.Error(nullptr, "max_size", "must be 0 (no budget) or at least 1MiB");
      }
      if (e.db->max_value_size < 1 || e.db->max_value_size > (1ll << 30)) {
        return sub.Error(nullptr, "max_value_size", "must be between 1B and 1GiB");
      }
    }
    GW_RETURN_IF_ERROR(sub.Finish());
  }
  return r.Finish();
}

Status ReadReplica(TableReader& r, const std::string& dir, ReplicaConfig* p) {
  GW_RETURN_IF_ERROR(r.Str("url", &p->url));
  GW_RETURN_IF_ERROR(r.Str("endpoint", &p->endpoint));
  GW_RETURN_IF_ERROR(r.Str("region", &p->region));
  GW_RETURN_IF_ERROR(r.Str("access_key_id", &p->access_key_id));
  GW_RETURN_IF_ERROR(r.Str("secret_access_key", &p->secret_access_key));
  GW_RETURN_IF_ERROR(r.Str("session_token", &p->session_token));
  GW_RETURN_IF_ERROR(r.Bool("force_path_style", &p->force_path_style));
  GW_RETURN_IF_ERROR(r.Int("max_attempts", &p->max_attempts, 1, 20));
  GW_RETURN_IF_ERROR(r.Str("encryption_key", &p->encryption_key));
  GW_RETURN_IF_ERROR(r.Duration("sync_interval", &p->sync_interval_ms));
  GW_RETURN_IF_ERROR(r.Duration("snapshot_interval", &p->snapshot_interval_ms));
  GW_RETURN_IF_ERROR(r.Duration("retention", &p->retention_ms));
  GW_RETURN_IF_ERROR(r.Duration("lease_ttl", &p->lease_ttl_ms));
  if (p->lease_ttl_ms < 1000) return r.Error(nullptr, "lease_ttl", "must be at least 1s");
  if (p->snapshot_interval_ms < 60'000) {
    return r.Error(nullptr, "snapshot_interval", "must be at least 1m");
  }
  if (p->retention_ms < p->snapshot_interval_ms) {
    return r.Error(nullptr, "retention", "must be at least snapshot_interval");
  }
  if (p->sync_interval_ms < 10) return r.Error(nullptr, "sync_interval", "must be at least 10ms");
  if (p->url.rfind("file://", 0) == 0) {
    std::string rest = p->url.substr(7);
    if (rest.empty()) return r.Error(nullptr, "url", "names no folder; write file:///abs/path");
    p->file_path = TableReader::Absolute(rest, dir);
  } else if (p->url.rfind("s3://", 0) == 0) {
    std::string bucket = p->url.substr(5, p->url.find('/', 5) - 5);
    if (bucket.empty()) return r.Error(nullptr, "url", "names no bucket; write s3://bucket/prefix");
  } else if (!p->url.empty()) {
    return r.Error(nullptr, "url", "\"" + p->url + "\" must start with file:// or s3://");
  }
  if (!p->endpoint.empty() && p->endpoint.rfind("http://", 0) != 0 &&
      p->endpoint.rfind("https://", 0) != 0) {
    return r.Error(nullptr, "endpoint", "must start with http:// or https://");
  }
  return r.Finish();
}

// Appends `node` as msgpack to `out`; TOML dates and times become ISO strings.
void TomlToMsgpack(const toml::node& node, msgpack::packer<msgpack::sbuffer>* out) {
  if (const toml::array* a = node.as_array()) {
    out->pack_array(static_cast<uint32_t>(a->size()));
    for (const toml::node& item : *a) TomlToMsgpack(item, out);
  } else if (const toml::table* t = node.as_table()) {
    out->pack_map(static_cast<uint32_t>(t->size()));
    for (auto&& [k, v] : *t) {
      out->pack(std::string(k.str()));
      TomlToMsgpack(v, out);
    }
  } else if (node.is_string()) {
    out->pack(node.as_string()->get());
  } else if (node.is_integer()) {
    out->pack(node.as_integer()->get());
  } else if (node.is_floating_point()) {
    out->pack(node.as_floating_point()->get());
  } else if (node.is_boolean()) {
    out->pack(node.as_boolean()->get());
  } else {
    std::ostringstream text;
    node.visit([&](auto&& v) { text << v; });
    out->pack(text.str());
  }
}

std::string TomlText(const toml::node& node) {
  std::ostringstream text;
  if (const toml::table* t = node.as_table()) {
    // Inline, so the printed config stays one line per key.
    text << "{";
    bool first = true;
    for (auto&& [k, v] : *t) {
      text << (first ? " " : ", ") << k.str() << " = " << TomlText(v);
      first = false;
    }
    text << (first ? "}" : " }");
  } else {
    node.visit([&](auto&& v) { text << v; });
  }
  return text.str();
}

Status ReadSchedule(TableReader& r, ScheduleConfig* s) {
  GW_RETURN_IF_ERROR(r.Str("name", &s->name));
  GW_RETURN_IF_ERROR(r.Str("cron", &s->cron));
  GW_RETURN_IF_ERROR(r.Str("task", &s->task));
  GW_RETURN_IF_ERROR(r.Str("queue", &s->queue));
  GW_RETURN_IF_ERROR(r.Int("priority", &s->priority, -100, 100));
  GW_RETURN_IF_ERROR(r.Int("max_attempts", &s->max_attempts, 1, 1000));
  for (const char* key : {"name", "cron", "task"}) {
    std::string value;
    GW_RETURN_IF_ERROR(r.Str(key, &value));
    if (value.empty()) return r.Error(nullptr, key, "is required");
  }
  Result<services::queue::CronSchedule> cron = services::queue::CronSchedule::Parse(s->cron);
  if (!cron.ok()) return r.Error(r.Raw("cron"), "cron", cron.status().message());
  struct {
    const char* key;
    bool want_array;
    std::string* bytes;
    std::string* text;
  } const payloads[] = {{"args", true, &s->args_msgpack, &s->args_toml},
                        {"kwargs", false, &s->kwargs_msgpack, &s->kwargs_toml}};
  for (const auto& pl : payloads) {
    const toml::node* n = r.Raw(pl.key);
    if (n == nullptr) continue;
    if (pl.want_array ? !n->is_array() : !n->is_table()) {
      return r.Error(n, pl.key, pl.want_array ? "must be an array" : "must be a table");
    }
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> packer(buf);
    TomlToMsgpack(*n, &packer);
    pl.bytes->assign(buf.data(), buf.size());
    *pl.text = TomlText(*n);
  }
  return r.Finish();
}

Status ReadQueue(TableReader& r, const std::string& file, const EnvLookup& env, QueueConfig* q) {
  const toml::node* n = r.Raw("schedule");
  if (n != nullptr) {
    const toml::array* list = n->as_array();
    if (list == nullptr || !list->is_array_of_tables()) {
      return r.Error(n, "schedule", "must be written as [[queue.schedule]] tables");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      TableReader sub((*list)[i].as_table(), "queue.schedule[" + std::to_string(i) + "]", file, env);
      ScheduleConfig s;
      GW_RETURN_IF_ERROR(ReadSchedule(sub, &s));
      for (const ScheduleConfig& other : q->schedules) {
        if (other.name == s.name) {
          return sub.Error((*list)[i].as_table()->get("name"), "name",
                           "\"" + s.name + "\" is used by two schedules; names must be unique");
        }
      }
      q->schedules.push_back(std::move(s));
    }
  }
  return r.Finish();
}

Status ReadExec(TableReader& r, Config* c, const EnvLookup& env) {
  ExecConfig& e = c->exec;
  GW_RETURN_IF_ERROR(r.StrList("command", &e.command));
  GW_RETURN_IF_ERROR(r.StrList("worker", &e.worker));
  e.cwd = c->dir;
  GW_RETURN_IF_ERROR(r.Path("cwd", &e.cwd, c->dir));
  if (const toml::node* n = r.Raw("env")) {
    const toml::table* t = n->as_table();
    if (t == nullptr) return r.Error(n, "env", "must be a table of NAME = \"value\"");
    for (auto&& [k, v] : *t) {
      if (!v.is_string()) return r.Error(&v, "env." + std::string(k.str()), "must be a string");
      Result<std::string> value = ExpandEnv(v.as_string()->get(), env);
      if (!value.ok()) return r.Error(&v, "env." + std::string(k.str()), value.status().message());
      e.env.emplace_back(std::string(k.str()), *value);
    }
  }
  if (!e.worker.empty() && e.command.empty()) {
    return r.Error(nullptr, "worker", "needs a command (the app server) too");
  }
  return r.Finish();
}

Status ReadRoot(const toml::table& root, Config* c, const EnvLookup& env) {
  TableReader top(&root, "", c->file, env);
  struct Section {
    const char* name;
    std::function<Status(TableReader&)> read;
  } sections[] = {
      {"server", [&](TableReader& r) { return ReadServer(r, c->dir, &c->server); }},
      {"sqlite", [&](TableReader& r) { return ReadSqlite(r, &c->sqlite); }},
      {"databases", [&](TableReader& r) { return ReadDatabases(r, c, c->file, env); }},
      {"replica", [&](TableReader& r) { return ReadReplica(r, c->dir, &c->replica); }},
      {"restore",
       [&](TableReader& r) {
         GW_RETURN_IF_ERROR(r.OneOf("on_boot", &c->restore.on_boot, {"if-missing", "never"}));
         return r.Finish();
       }},
      {"queue", [&](TableReader& r) { return ReadQueue(r, c->file, env, &c->queue_config); }},
      {"exec", [&](TableReader& r) { return ReadExec(r, c, env); }},
  };
  for (const Section& s : sections) {
    Result<const toml::table*> t = top.Table(s.name);
    if (!t.ok()) return t.status();
    TableReader reader(*t, s.name, c->file, env);
    GW_RETURN_IF_ERROR(s.read(reader));
  }
  return top.Finish();
}

}  // namespace

Result<Config> ParseConfig(std::string_view toml_text, const std::string& path,
                           const EnvLookup& env) {
  Config c;
  c.file = std::filesystem::absolute(path).lexically_normal().string();
  c.dir = std::filesystem::path(c.file).parent_path().string();
  c.server.socket = TableReader::Absolute("run/gateway.sock", c.dir);
  toml::table root;
  try {
    root = toml::parse(toml_text, c.file);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument(c.file + ":" + std::to_string(e.source().begin.line) +
                                   ": not valid TOML: " + std::string(e.description()));
  }
  GW_RETURN_IF_ERROR(ReadRoot(root, &c, env));
  return c;
}

Result<Config> LoadConfig(const std::string& path, const EnvLookup& env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::NotFound("cannot read config file " + path +
                            ": it does not exist or is not readable; pass --config PATH");
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), path, env);
}

std::string FormatConfig(const Config& c) {
  auto secret = [](const std::string& s) { return s.empty() ? std::string() : "********"; };
  std::ostringstream o;
  o << "# effective configuration of " << c.file << "\n";
  o << "[server]\n"
    << "socket = " << Quote(c.server.socket) << "\n"
    << "socket_mode = \"0" << std::oct << c.server.socket_mode << std::dec << "\"\n"
    << "max_connections = " << c.server.max_connections << "\n"
    << "max_frame_size = " << Quote(FormatSize(c.server.max_frame_size)) << "\n"
    << "max_pending_reply_size = " << Quote(FormatSize(c.server.max_pending_reply_size)) << "\n"
    << "shutdown_timeout = " << Quote(FormatDurationMs(c.server.shutdown_timeout_ms)) << "\n"
    << "spin_us = " << c.server.spin_us << "\n"
    << "log_level = " << Quote(c.server.log_level) << "\n"
    << "log_format = " << Quote(c.server.log_format) << "\n"
    << "metrics_addr = " << Quote(c.server.metrics_addr) << "\n"
    << "token = " << Quote(secret(c.server.token)) << "\n\n";
  static const char* const kSync[] = {"OFF", "NORMAL", "FULL", "EXTRA"};
  o << "[sqlite]\n"
    << "busy_timeout_ms = " << c.sqlite.busy_timeout_ms << "\n"
    << "synchronous = " << Quote(kSync[static_cast<int>(c.sqlite.synchronous)]) << "\n"
    << "mmap_size = " << Quote(FormatSize(c.sqlite.mmap_size)) << "\n"
    << "journal_size_limit = " << Quote(FormatSize(c.sqlite.journal_size_limit)) << "\n"
    << "cache_size = " << Quote(FormatSize(c.sqlite.cache_size_kib * 1024)) << "\n\n";
  o << "[databases.main]\npath = " << Quote(c.main.path) << "\n\n";
  o << "[databases.cache]\npath = " << Quote(c.cache.path) << "\n"
    << "max_size = " << Quote(FormatSize(c.cache.max_size)) << "\n"
    << "max_entries = " << c.cache.max_entries << "\n"
    << "eviction = " << Quote(c.cache.eviction) << "\n"
    << "max_value_size = " << Quote(FormatSize(c.cache.max_value_size)) << "\n\n";
  o << "[databases.queue]\npath = " << Quote(c.queue.path) << "\n\n";
  o << "[replica]\n"
    << "url = " << Quote(c.replica.url) << "\n"
    << "endpoint = " << Quote(c.replica.endpoint) << "\n"
    << "region = " << Quote(c.replica.region) << "\n"
    << "access_key_id = " << Quote(secret(c.replica.access_key_id)) << "\n"
    << "secret_access_key = " << Quote(secret(c.replica.secret_access_key)) << "\n"
    << "session_token = " << Quote(secret(c.replica.session_token)) << "\n"
    << (c.replica.force_path_style
            ? std::string("force_path_style = ") + (*c.replica.force_path_style ? "true" : "false") + "\n"
            : std::string("# force_path_style unset: path-style with an endpoint, virtual-host on AWS\n"))
    << "max_attempts = " << c.replica.max_attempts << "\n"
    << "encryption_key = " << Quote(secret(c.replica.encryption_key)) << "\n"
    << "sync_interval = " << Quote(FormatDurationMs(c.replica.sync_interval_ms)) << "\n"
    << "snapshot_interval = " << Quote(FormatDurationMs(c.replica.snapshot_interval_ms)) << "\n"
    << "retention = " << Quote(FormatDurationMs(c.replica.retention_ms)) << "\n"
    << "lease_ttl = " << Quote(FormatDurationMs(c.replica.lease_ttl_ms)) << "\n\n";
  o << "[restore]\non_boot = " << Quote(c.restore.on_boot) << "\n\n";
  for (const ScheduleConfig& s : c.queue_config.schedules) {
    o << "[[queue.schedule]]\n"
      << "name = " << Quote(s.name) << "\n"
      << "cron = " << Quote(s.cron) << "\n"
      << "task = " << Quote(s.task) << "\n"
      << "queue = " << Quote(s.queue) << "\n"
      << "args = " << s.args_toml << "\n"
      << "kwargs = " << s.kwargs_toml << "\n"
      << "priority = " << s.priority << "\n"
      << "max_attempts = " << s.max_attempts << "\n\n";
  }
  auto list = [&](const std::vector<std::string>& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) out += (i > 0 ? ", " : "") + Quote(items[i]);
    return out + "]";
  };
  o << "[exec]\ncommand = " << list(c.exec.command) << "\n"
    << "worker = " << list(c.exec.worker) << "\n"
    << "cwd = " << Quote(c.exec.cwd) << "\n"
    << "env = {";
  for (size_t i = 0; i < c.exec.env.size(); ++i) {
    // Values are masked: the environment is where secrets (SECRET_KEY, passwords) go.
    o << (i > 0 ? ", " : " ") << c.exec.env[i].first << " = " << Quote(secret(c.exec.env[i].second));
  }
  o << (c.exec.env.empty() ? "}\n" : " }\n");
  return o.str();
}

}  // namespace gateway
