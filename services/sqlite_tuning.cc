#include "services/sqlite_tuning.h"

#include <sqlite3.h>

#include <string>

namespace services {

Status ApplyTuning(SqliteDb* db, const SqliteTuning& t) {
  // Closing a connection must not checkpoint: the replicator is the only checkpointer, and a
  // checkpoint it did not run would force a new replica generation after every restart.
  sqlite3_db_config(db->raw(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  // busy_timeout first: the journal_mode switch below may have to wait for other connections.
  GW_RETURN_IF_ERROR(db->Exec("PRAGMA busy_timeout = " + std::to_string(t.busy_timeout_ms)));
  // WAL: readers never block the writer and commits are one sequential append.
  Result<std::string> mode = db->QueryText("PRAGMA journal_mode = WAL");
  if (!mode.ok()) return mode.status().WithContext(db->path());
  if (*mode != "wal") {
    return Status::FailedPrecondition(db->path() + ": journal_mode is '" + *mode +
                                      "' after asking for WAL; put the database on a local "
                                      "filesystem that supports shared memory and file locks");
  }
  const std::string pragmas[] = {
      // NORMAL in WAL is durable against process crashes and loses at most the last commits on
      // power loss, never consistency; FULL/EXTRA add an fsync per commit.
      "PRAGMA synchronous = " + std::to_string(static_cast<int>(t.synchronous)),
      // Reads through a memory map avoid a copy per page for the hot part of the file.
      "PRAGMA mmap_size = " + std::to_string(t.mmap_size),
      // Caps the WAL file that is left behind after a checkpoint resets it.
      "PRAGMA journal_size_limit = " + std::to_string(t.journal_size_limit),
      // Negative means KiB rather than pages, so the budget does not depend on the page size.
      "PRAGMA cache_size = " + std::to_string(-t.cache_size_kib),
      // Django relies on enforced foreign keys.
      "PRAGMA foreign_keys = ON",
      // Sorts and temp indexes stay in memory instead of temp files.
      "PRAGMA temp_store = MEMORY",
      "PRAGMA wal_autocheckpoint = " + std::to_string(t.wal_autocheckpoint_pages),
  };
  for (const std::string& sql : pragmas) {
    GW_RETURN_IF_ERROR(db->Exec(sql).WithContext(db->path()));
  }
  return Status::Ok();
}

Result<AppliedPragmas> ReadPragmas(SqliteDb* db) {
  AppliedPragmas p;
  Result<std::string> mode = db->QueryText("PRAGMA journal_mode");
  if (!mode.ok()) return mode.status();
  p.journal_mode = *mode;
  struct IntPragma {
    const char* sql;
    int64_t* out;
  } ints[] = {
      {"PRAGMA synchronous", &p.synchronous}, {"PRAGMA busy_timeout", &p.busy_timeout},
      {"PRAGMA mmap_size", &p.mmap_size},     {"PRAGMA journal_size_limit", &p.journal_size_limit},
      {"PRAGMA cache_size", &p.cache_size},   {"PRAGMA foreign_keys", &p.foreign_keys},
      {"PRAGMA temp_store", &p.temp_store},   {"PRAGMA wal_autocheckpoint", &p.wal_autocheckpoint},
  };
  for (const IntPragma& q : ints) {
    Result<int64_t> v = db->QueryInt(q.sql);
    if (!v.ok()) return v.status();
    *q.out = *v;
  }
  return p;
}

}  // namespace services
