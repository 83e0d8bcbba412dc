#include "services/schema.h"

#include <string>

namespace services {
namespace {

// Version 1 of every gateway-owned database: who it belongs to, so a config that points the cache
// at the queue's file (or at a Django database) is caught at start instead of mixing data.
constexpr const char kMetaTable[] =
    "CREATE TABLE gateway_meta ("
    "  key TEXT PRIMARY KEY NOT NULL,"
    "  value TEXT NOT NULL"
    ") WITHOUT ROWID;";

// Version 2: the entries table. Layout and meaning are public (gateway/PROTOCOL.md "Reading the
// cache file directly"), because clients may read the file themselves.
constexpr const char kCacheEntries[] =
    "CREATE TABLE cache_entries ("
    "  id INTEGER PRIMARY KEY,"
    "  key BLOB NOT NULL UNIQUE,"
    "  long_key BLOB,"
    "  value BLOB NOT NULL,"
    "  expires_at INTEGER,"
    "  accessed_at INTEGER,"
    "  size INTEGER NOT NULL"
    ");"
    // The sweep finds expired entries without a scan; entries that never expire are not indexed.
    // (The lru eviction index exists only while eviction = "lru": CacheWriter manages it, so the
    // default policy pays for no index it does not use.)
    "CREATE INDEX cache_entries_expiry ON cache_entries(expires_at) WHERE expires_at IS NOT NULL;";

// Version 3: the same columns with `value` last. SQLite stores a row's columns in order, and a
// large value spills into overflow pages: with `value` before them, reading `expires_at` or
// `size` (every set looks the old entry up) walked the whole overflow chain of the value.
constexpr const char kCacheValueLast[] =
    "ALTER TABLE cache_entries RENAME TO cache_entries_v2;"
    "CREATE TABLE cache_entries ("
    "  id INTEGER PRIMARY KEY,"
    "  key BLOB NOT NULL UNIQUE,"
    "  long_key BLOB,"
    "  expires_at INTEGER,"
    "  accessed_at INTEGER,"
    "  size INTEGER NOT NULL,"
    "  value BLOB NOT NULL"
    ");"
    "INSERT INTO cache_entries(id, key, long_key, expires_at, accessed_at, size, value) "
    "  SELECT id, key, long_key, expires_at, accessed_at, size, value FROM cache_entries_v2;"
    "DROP TABLE cache_entries_v2;"
    "CREATE INDEX cache_entries_expiry ON cache_entries(expires_at) WHERE expires_at IS NOT NULL;";

constexpr Migration kCacheMigrations[] = {
    {1, kMetaTable},
    {2, kCacheEntries},
    {3, kCacheValueLast},
};

// Version 2 of the queue: jobs, one row per attempt, paused queues, recurring-schedule slots.
// SCHEDULED is not a stored state: it is READY with a run_after in the future.
constexpr const char kQueueJobs[] =
    "CREATE TABLE jobs ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  queue TEXT NOT NULL,"
    "  task TEXT NOT NULL,"
    "  args BLOB NOT NULL,"
    "  kwargs BLOB NOT NULL,"
    "  priority INTEGER NOT NULL,"
    "  run_after INTEGER,"
    "  max_attempts INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL,"
    "  backoff REAL NOT NULL,"
    "  state TEXT NOT NULL,"
    "  enqueued_at INTEGER NOT NULL,"
    "  started_at INTEGER,"
    "  finished_at INTEGER,"
    "  last_attempted_at INTEGER,"
    "  lease_token TEXT,"
    "  lease_expires_at INTEGER,"
    "  worker_id TEXT,"
    "  return_value BLOB,"
    "  unique_key TEXT"
    ");"
    // Start-up loads the active jobs, stats count the finished ones per queue.
    "CREATE INDEX jobs_state_queue ON jobs(state, queue);"
    "CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;"
    // A second guard, behind the in-memory one, against two live jobs with one unique key.
    "CREATE UNIQUE INDEX jobs_unique_live ON jobs(unique_key) "
    "  WHERE unique_key IS NOT NULL AND state IN ('READY', 'RUNNING');"
    "CREATE TABLE job_attempts ("
    "  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
    "  attempt INTEGER NOT NULL,"
    "  worker_id TEXT NOT NULL,"
    "  started_at INTEGER NOT NULL,"
    "  finished_at INTEGER,"
    "  outcome TEXT NOT NULL DEFAULT '',"
    "  exception_class_path TEXT NOT NULL DEFAULT '',"
    "  traceback TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (job_id, attempt)"
    ") WITHOUT ROWID;"
    "CREATE TABLE queue_paused (queue TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE schedule_slots ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  last_slot INTEGER NOT NULL"
    ") WITHOUT ROWID;";

constexpr Migration kQueueMigrations[] = {
    {1, kMetaTable},
    {2, kQueueJobs},
};

Result<std::string> StoredRole(SqliteDb* db) {
  Result<Statement> stmt = db->Prepare("SELECT value FROM gateway_meta WHERE key = 'role'");
  if (!stmt.ok()) return stmt.status();
  Result<bool> row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::string();
  return stmt->ColumnText(0);
}

}  // namespace

std::span<const Migration> CacheMigrations() { return kCacheMigrations; }
std::span<const Migration> QueueMigrations() { return kQueueMigrations; }

Status Migrate(SqliteDb* db, std::string_view role, std::span<const Migration> migrations) {
  const int64_t latest = migrations.empty() ? 0 : migrations.back().version;
  Result<WriteTransaction> txn = WriteTransaction::Begin(db);
  if (!txn.ok()) return txn.status().WithContext(db->path());

  Result<int64_t> current = db->QueryInt("PRAGMA user_version");
  if (!current.ok()) return current.status();
  const std::string where = db->path() + " (" + std::string(role) + " database)";
  if (*current > latest) {
    return Status::FailedPrecondition(where + " has schema version " + std::to_string(*current) +
                                      " but this gateway knows " + std::to_string(latest) +
                                      ": it was written by a newer gateway; run that version or " +
                                      "restore an older copy");
  }
  if (*current == 0) {
    Result<int64_t> tables = db->QueryInt("SELECT count(*) FROM sqlite_schema");
    if (!tables.ok()) return tables.status();
    if (*tables > 0) {
      return Status::FailedPrecondition(where + " already holds tables that the gateway did not " +
                                        "create; point [databases." + std::string(role) +
                                        "] path at a new file");
    }
  } else {
    Result<std::string> stored = StoredRole(db);
    if (!stored.ok()) return stored.status().WithContext(where);
    if (*stored != role) {
      return Status::FailedPrecondition(where + " is the gateway's '" + *stored +
                                        "' database; give each of main, cache and queue its " +
                                        "own file");
    }
  }
  for (const Migration& m : migrations) {
    if (m.version <= *current) continue;
    GW_RETURN_IF_ERROR(
        db->Exec(m.sql).WithContext(where + " migration " + std::to_string(m.version)));
  }
  if (*current == 0 && latest > 0) {
    Result<Statement> put = db->Prepare("INSERT INTO gateway_meta(key, value) VALUES ('role', ?1)");
    if (!put.ok()) return put.status();
    GW_RETURN_IF_ERROR(put->BindText(1, role));
    GW_RETURN_IF_ERROR(put->Run());
  }
  if (latest != *current) {
    GW_RETURN_IF_ERROR(db->Exec("PRAGMA user_version = " + std::to_string(latest)));
  }
  return txn->Commit();
}

}  // namespace services
