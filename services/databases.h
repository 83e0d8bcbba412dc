// Databases: the main, cache and queue SQLite databases the gateway owns, opened and tuned.
//
// main is Django's database: other processes write it, the gateway creates it in WAL mode when
// absent and is its only checkpointer, but never changes its schema. cache and queue are written
// only by the gateway; their schemas are versioned (schema.h).
//
// Threads: Open() and the destructor run on the thread that starts and stops the server.
// Checkpoint() may run on any one thread at a time (it uses the connections opened here, which
// nothing else uses after Open()). Info() is safe from any thread: it reads values fixed at Open() and file
// sizes.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "services/sqlite_db.h"
#include "services/sqlite_tuning.h"
#include "services/status.h"

namespace services {

enum class DatabaseRole { kMain = 0, kCache = 1, kQueue = 2 };
inline constexpr std::array<DatabaseRole, 3> kAllRoles = {DatabaseRole::kMain, DatabaseRole::kCache,
                                                          DatabaseRole::kQueue};
std::string_view RoleName(DatabaseRole role);

struct DatabasePaths {
  std::string main;
  std::string cache;
  std::string queue;
};

struct DatabaseInfo {
  std::string path;
  int64_t size_bytes = 0;  // the database file now
  int64_t wal_bytes = 0;   // its -wal file now (0 when absent)
  int64_t user_version = 0;
  AppliedPragmas pragmas;  // as read back right after tuning
};

struct CheckpointResult {
  int64_t wal_frames = 0;           // frames in the WAL when the checkpoint ran
  int64_t checkpointed_frames = 0;  // of those, copied into the database
  bool busy = false;                // a writer or reader held it back; retry later
};

class Databases {
 public:
  // Creates missing folders and files, applies `tuning` to each connection, checks WAL and runs
  // the cache and queue migrations. Errors name the database and what to do; nothing is left open.
  static Result<std::unique_ptr<Databases>> Open(const DatabasePaths& paths,
                                                 const SqliteTuning& tuning);
  ~Databases();

  const DatabaseInfo& Info(DatabaseRole role) const { return info_[Index(role)]; }
  // Info with the file sizes read now.
  DatabaseInfo CurrentInfo(DatabaseRole role) const;

  // PRAGMA wal_checkpoint(PASSIVE): copies what it can without waiting for readers or writers.
  // For deployments without a replica (the replicator checkpoints otherwise). Blocks on disk;
  // never call it on the event loop thread.
  // With `truncate`, a TRUNCATE checkpoint instead: it waits (busy_timeout) for the writer and the
  // readers, copies everything and empties the WAL file.
  Result<CheckpointResult> Checkpoint(DatabaseRole role, bool truncate = false);

  SqliteDb* db(DatabaseRole role) { return dbs_[Index(role)].get(); }

 private:
  Databases() = default;
  static size_t Index(DatabaseRole role) { return static_cast<size_t>(role); }

  std::array<std::unique_ptr<SqliteDb>, 3> dbs_;
  std::array<DatabaseInfo, 3> info_;
};

}  // namespace services
