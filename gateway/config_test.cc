#include "gateway/config.h"

#include <gtest/gtest.h>

#include <map>

namespace gateway {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

services::Result<Config> Parse(const std::string& text,
                               std::map<std::string, std::string> env = {}) {
  return ParseConfig(text, "/srv/site/app.toml", FakeEnv(std::move(env)));
}

// Fails the test unless parsing fails with a message containing every fragment.
void ExpectError(const std::string& text, std::initializer_list<const char*> fragments,
                 std::map<std::string, std::string> env = {}) {
  auto c = Parse(text, std::move(env));
  ASSERT_FALSE(c.ok()) << "accepted:\n" << text;
  for (const char* f : fragments) {
    EXPECT_NE(c.status().message().find(f), std::string::npos)
        << "'" << f << "' missing from: " << c.status().message();
  }
}

TEST(ConfigTest, EmptyFileGivesDefaultsRelativeToTheFile) {
  auto c = Parse("");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->file, "/srv/site/app.toml");
  EXPECT_EQ(c->server.socket, "/srv/site/run/gateway.sock");
  EXPECT_EQ(c->server.socket_mode, 0660u);
  EXPECT_EQ(c->server.spin_us, 100);
  EXPECT_EQ(c->main.path, "/srv/site/db/app.sqlite3");
  EXPECT_EQ(c->cache.path, "/srv/site/db/cache.sqlite3");
  EXPECT_EQ(c->queue.path, "/srv/site/db/queue.sqlite3");
  EXPECT_EQ(c->sqlite.synchronous, services::Synchronous::kNormal);
  EXPECT_TRUE(c->replica.url.empty());
}

TEST(ConfigTest, ReadsTheFullSchema) {
  auto c = Parse(R"(
[server]
socket = "/run/gw.sock"
socket_mode = "0600"
max_connections = 64
max_frame_size = "1MiB"
max_pending_reply_size = "256KiB"
shutdown_timeout = "3s"
spin_us = 0
log_level = "debug"
log_format = "json"
[sqlite]
busy_timeout_ms = 1234
synchronous = "FULL"
mmap_size = "64MiB"
journal_size_limit = 1048576
cache_size = "8MiB"
[databases.main]
path = "data/../data/main.db"
[databases.cache]
path = "/var/cache.db"
max_size = "512MiB"
max_entries = 100000
eviction = "lru"
max_value_size = "1MiB"
[databases.queue]
path = "q.db"
[replica]
url = "s3://bucket/prefix"
endpoint = "http://127.0.0.1:9000"
region = "eu-west-1"
access_key_id = "${KEY_ID}"
secret_access_key = "${SECRET}"
session_token = "${TOKEN}"
force_path_style = false
max_attempts = 3
sync_interval = "500ms"
[restore]
on_boot = "never"
[exec]
command = ["gunicorn", "${APP}.wsgi"]
)",
                 {{"KEY_ID", "AKIDEXAMPLE"},
                  {"SECRET", "wJalrXUtnFEMI"},
                  {"APP", "mysite"},
                  {"TOKEN", "FwoGZXIvYXdzEXAMPLETOKEN"}});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->server.socket, "/run/gw.sock");
  EXPECT_EQ(c->server.socket_mode, 0600u);
  EXPECT_EQ(c->server.max_connections, 64);
  EXPECT_EQ(c->server.max_frame_size, 1 << 20);
  EXPECT_EQ(c->server.max_pending_reply_size, 256 << 10);
  EXPECT_EQ(c->server.shutdown_timeout_ms, 3000);
  EXPECT_EQ(c->server.spin_us, 0);
  EXPECT_EQ(c->server.log_format, "json");
  EXPECT_EQ(c->sqlite.busy_timeout_ms, 1234);
  EXPECT_EQ(c->sqlite.synchronous, services::Synchronous::kFull);
  EXPECT_EQ(c->sqlite.mmap_size, 64 << 20);
  EXPECT_EQ(c->sqlite.journal_size_limit, 1048576);
  EXPECT_EQ(c->sqlite.cache_size_kib, 8192);
  EXPECT_EQ(c->main.path, "/srv/site/data/main.db");
  EXPECT_EQ(c->cache.path, "/var/cache.db");
  EXPECT_EQ(c->cache.max_size, 512ll << 20);
  EXPECT_EQ(c->cache.max_entries, 100000);
  EXPECT_EQ(c->cache.eviction, "lru");
  EXPECT_EQ(c->cache.max_value_size, 1 << 20);
  EXPECT_EQ(c->queue.path, "/srv/site/q.db");
  EXPECT_EQ(c->replica.access_key_id, "AKIDEXAMPLE");
  EXPECT_EQ(c->replica.secret_access_key, "wJalrXUtnFEMI");
  EXPECT_EQ(c->replica.sync_interval_ms, 500);
  EXPECT_EQ(c->replica.session_token, "FwoGZXIvYXdzEXAMPLETOKEN");
  EXPECT_EQ(c->replica.force_path_style, std::optional<bool>(false));
  EXPECT_EQ(c->replica.max_attempts, 3);
  EXPECT_EQ(c->restore.on_boot, "never");
  EXPECT_EQ(c->exec.command, (std::vector<std::string>{"gunicorn", "mysite.wsgi"}));

  const std::string printed = FormatConfig(*c);
  EXPECT_EQ(printed.find("wJalrXUtnFEMI"), std::string::npos) << printed;
  EXPECT_EQ(printed.find("AKIDEXAMPLE"), std::string::npos) << printed;
  EXPECT_EQ(printed.find("EXAMPLETOKEN"), std::string::npos) << printed;
  EXPECT_NE(printed.find("secret_access_key = \"********\""), std::string::npos) << printed;
  // The printed form is itself a valid config with the same meaning (secrets aside).
  auto again = ParseConfig(printed, "/srv/site/app.toml", FakeEnv({}));
  ASSERT_TRUE(again.ok()) << again.status().ToString() << "\n" << printed;
  EXPECT_EQ(again->cache.max_size, c->cache.max_size);
  EXPECT_EQ(again->cache.eviction, c->cache.eviction);
  EXPECT_EQ(again->cache.max_value_size, c->cache.max_value_size);
  EXPECT_EQ(again->server.socket_mode, c->server.socket_mode);
  EXPECT_EQ(again->server.shutdown_timeout_ms, c->server.shutdown_timeout_ms);
  EXPECT_EQ(again->server.spin_us, c->server.spin_us);
  EXPECT_EQ(again->replica.force_path_style, c->replica.force_path_style);
  EXPECT_EQ(again->replica.max_attempts, c->replica.max_attempts);
}

TEST(ConfigTest, FileReplicaUrlResolvesRelativeFolders) {
  auto rel = Parse("[replica]\nurl = \"file://backups/site\"\n");
  ASSERT_TRUE(rel.ok()) << rel.status().ToString();
  EXPECT_EQ(rel->replica.file_path, "/srv/site/backups/site");
  auto abs = Parse("[replica]\nurl = \"file:///var/backups\"\n");
  ASSERT_TRUE(abs.ok());
  EXPECT_EQ(abs->replica.file_path, "/var/backups");
}

TEST(ConfigTest, RejectsBadFilesWithKeyAndLine) {
  ExpectError("[server]\nsocket = \"a\"\nsokcet_mode = \"0660\"\n",
              {"app.toml:3:", "unknown key", "server.sokcet_mode"});
  ExpectError("colour = 1\n", {"app.toml:1:", "unknown key \"colour\""});
  ExpectError("[databases.main]\npath = \"x\"\nmax_size = \"1MiB\"\n",
              {":3:", "databases.main.max_size"});
  ExpectError("[databases.archive]\npath = \"x\"\n", {"databases.archive"});
  ExpectError("[databases.cache]\neviction = \"random\"\n", {"databases.cache.eviction", "lru"});
  ExpectError("[databases.cache]\nmax_size = \"10KiB\"\n", {"databases.cache.max_size", "1MiB"});
  ExpectError("[databases.queue]\nmax_entries = 5\n", {"databases.queue.max_entries", "unknown"});
  ExpectError("[replica]\nsecret_access_key = \"${AWS_SECRET_NOT_SET}\"\n",
              {":2:", "AWS_SECRET_NOT_SET", "not set"});
  ExpectError("[server]\nsocket_mode = 660\n", {":2:", "server.socket_mode", "octal"});
  ExpectError("[server]\nmax_connections = \"many\"\n", {"server.max_connections", "integer"});
  ExpectError("[server]\nmax_connections = 0\n", {"outside 1.."});
  ExpectError("[server]\nspin_us = 20000\n", {"server.spin_us", "outside 0.."});
  ExpectError("[sqlite]\nsynchronous = \"SOMETIMES\"\n", {"sqlite.synchronous", "NORMAL"});
  ExpectError("[sqlite]\nmmap_size = \"lots\"\n", {":2:", "sqlite.mmap_size", "128MiB"});
  ExpectError("[replica]\nsync_interval = \"soon\"\n", {"replica.sync_interval", "1s"});
  ExpectError("[replica]\nsync_interval = 1\n", {"replica.sync_interval", "duration"});
  ExpectError("[replica]\nurl = \"ftp://x\"\n", {"replica.url", "file://"});
  ExpectError("[replica]\nurl = \"s3:///prefix\"\n", {"replica.url", "bucket"});
  ExpectError("[replica]\nendpoint = \"127.0.0.1:9000\"\n", {"replica.endpoint", "http://"});
  ExpectError("[restore]\non_boot = \"sometimes\"\n", {"restore.on_boot", "if-missing"});
  ExpectError("[exec]\ncommand = \"gunicorn app\"\n", {"exec.command", "array"});
  ExpectError("[exec]\ncommand = [\"a\", 1]\n", {"exec.command", "only strings"});
  ExpectError("server = 5\n", {"server", "table"});
  ExpectError("[server\n", {"app.toml:1:", "not valid TOML"});
  ExpectError("[server]\nsocket = \"\"\n", {"server.socket", "empty"});
  ExpectError("[server]\nmax_frame_size = \"100B\"\n", {"server.max_frame_size", "1KiB"});
}

TEST(ConfigTest, MissingFileSaysWhatToDo) {
  auto c = LoadConfig("/nonexistent/app.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("--config"), std::string::npos);
}

}  // namespace
}  // namespace gateway
