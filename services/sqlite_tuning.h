// The per-connection SQLite settings every gateway database gets, and how to read them back.
//
// Threads: call on the thread that owns the SqliteDb.
#pragma once

#include <cstdint>
#include <string>

#include "services/sqlite_db.h"
#include "services/status.h"

namespace services {

enum class Synchronous { kOff = 0, kNormal = 1, kFull = 2, kExtra = 3 };

struct SqliteTuning {
  int64_t busy_timeout_ms = 5000;
  Synchronous synchronous = Synchronous::kNormal;
  int64_t mmap_size = 128ll << 20;
  int64_t journal_size_limit = 64ll << 20;
  int64_t cache_size_kib = 32 * 1024;  // applied as PRAGMA cache_size = -KiB
  // Pages of WAL after which a commit on this connection checkpoints. 0: the gateway checkpoints
  // every database itself (the replicator, or the server's checkpoint timer without a replica),
  // so no checkpoint ever runs that replication did not plan.
  int64_t wal_autocheckpoint_pages = 0;
};

// The values read back from a connection with "PRAGMA name", as SQLite reports them.
struct AppliedPragmas {
  std::string journal_mode;
  int64_t synchronous = -1;
  int64_t busy_timeout = -1;
  int64_t mmap_size = -1;
  int64_t journal_size_limit = -1;
  int64_t cache_size = 0;
  int64_t foreign_keys = -1;
  int64_t temp_store = -1;
  int64_t wal_autocheckpoint = -1;
};

// Applies the settings and switches the database to WAL. Fails with kFailedPrecondition when WAL
// did not take effect (for example on a filesystem without shared memory support), because every
// durability promise of the gateway assumes WAL.
Status ApplyTuning(SqliteDb* db, const SqliteTuning& tuning);

Result<AppliedPragmas> ReadPragmas(SqliteDb* db);

}  // namespace services
