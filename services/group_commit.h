// GroupCommitWriter: one thread that owns a database's write connection and applies queued
// changes in shared transactions.
//
// Each change is a function run inside the current BEGIN IMMEDIATE transaction. The thread takes
// everything queued (up to a bound), runs it all in one transaction, commits, and only then calls
// each change's completion with the outcome: many small writes cost one commit, and nobody hears
// "done" before their data is durable (to the extent of PRAGMA synchronous). A change returns a
// non-OK Status only when the database failed; that rolls the whole batch back and every change in
// it completes with that Status. Outcomes of the change itself (a row not found, say) are passed
// back through state the change captured, not through the Status.
//
// Threads: Submit and Stop from any thread. Apply functions and completions run on the writer
// thread; completions must be quick and must not Submit and wait.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "services/sqlite_db.h"
#include "services/sqlite_tuning.h"
#include "services/status.h"

namespace services {

class GroupCommitWriter {
 public:
  using Apply = std::function<Status(SqliteDb* db)>;
  using Done = std::function<void(const Status& status)>;

  // `truncate_wal_bytes`: as CacheWriter::Options (0: never truncate the WAL here).
  static Result<std::unique_ptr<GroupCommitWriter>> Start(const std::string& path,
                                                          const SqliteTuning& tuning,
                                                          size_t max_batch = 512,
                                                          int64_t truncate_wal_bytes = 0);
  ~GroupCommitWriter();  // Stop()

  // Queues `apply`; `done` runs after the batch holding it committed or failed. After Stop,
  // completes at once with kFailedPrecondition.
  void Submit(Apply apply, Done done);
  // Applies what is queued, then ends the thread.
  void Stop();

 private:
  struct Change {
    Apply apply;
    Done done;
  };
  GroupCommitWriter() = default;
  void Run();
  void ApplyBatch(std::deque<Change>* batch);

  size_t max_batch_ = 512;
  int64_t truncate_wal_bytes_ = 0;
  std::unique_ptr<SqliteDb> db_;  // writer thread only, after Start
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Change> queue_;  // guarded by mu_
  bool stopping_ = false;     // guarded by mu_
  std::thread thread_;
};

}  // namespace services
