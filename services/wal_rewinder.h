// WalRewinder: keeps the WAL of a database written by one writer thread (the cache's, the
// queue's) near a size when no replicator checkpoints it.
//
// Once the writer's commits have put `rewind_bytes` of frames in the WAL, RewindIfDue, called by
// the writer thread with its database lock held:
//   1. lets go of the lock and copies the WAL into the database with a PASSIVE checkpoint on the
//      rewinder's own connection, with its two fsyncs, while other threads go on committing
//      through the writer's connection;
//   2. takes the lock back and runs a RESTART checkpoint on the writer's connection, which copies
//      what was committed meanwhile and waits for readers, so the next commit writes the WAL from
//      its start again (the file keeps its size, up to journal_size_limit: rewriting pages
//      already allocated is cheaper than growing a truncated file).
// Writers are held back only for step 2. The WAL can outgrow `rewind_bytes` by what is committed
// during one pre-copy.
//
// Threads: Watch, Due and RewindIfDue run with the writer's database lock held (the commit hook
// runs inside its commits); RewindIfDue only on the writer thread. Not copyable.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "services/sqlite_db.h"
#include "services/sqlite_tuning.h"
#include "services/status.h"
#include "services/writer_first_mutex.h"

struct sqlite3;

namespace services {

class WalRewinder {
 public:
  // `rewind_bytes` 0: never rewinds and opens nothing. Otherwise opens its own connection to the
  // (existing) database at `path`.
  static Result<std::unique_ptr<WalRewinder>> Open(const std::string& path,
                                                   const SqliteTuning& tuning,
                                                   int64_t rewind_bytes);
  WalRewinder(const WalRewinder&) = delete;
  WalRewinder& operator=(const WalRewinder&) = delete;

  // Counts the WAL frames of `writer`'s commits (sqlite3_wal_hook, replacing any other hook:
  // call after the tuning, whose wal_autocheckpoint = 0 clears it).
  void Watch(SqliteDb* writer);
  // The WAL has reached rewind_bytes.
  bool Due() const;
  // Steps 1 and 2 above, if Due. `held` holds `mu` on entry and again on return; `writer` is the
  // connection Watch was given.
  void RewindIfDue(WriterFirstMutex* mu, std::unique_lock<std::mutex>* held, SqliteDb* writer);

 private:
  WalRewinder() = default;
  static int OnCommit(void* self, sqlite3* db, const char* name, int frames);

  int64_t rewind_bytes_ = 0;
  int64_t page_size_ = 4096;
  int64_t wal_frames_ = 0;  // frames in the WAL after the writer's last commit
  std::unique_ptr<SqliteDb> checkpoint_db_;
};

}  // namespace services
