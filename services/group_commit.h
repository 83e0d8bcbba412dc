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
// TryApplyNow is the fast path for an event loop: it runs changes at once on the calling thread,
// in one transaction, when that cannot reorder them behind earlier submissions and the write lock
// is free, which saves the two thread hand-offs of Submit.
//
// Threads: Submit and Stop from any thread; TryApplyNow from one thread. Apply functions run on
// whichever thread holds db_mu_; Submit's completions run on the writer thread; they must be
// quick and must not Submit and wait.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "services/sqlite_db.h"
#include "services/sqlite_tuning.h"
#include "services/status.h"
#include "services/wal_rewinder.h"
#include "services/writer_first_mutex.h"

namespace services {

class GroupCommitWriter {
 public:
  using Apply = std::function<Status(SqliteDb* db)>;
  using Done = std::function<void(const Status& status)>;

  // `restart_wal_bytes`: as CacheWriter::Options (0: leave checkpoints to others).
  static Result<std::unique_ptr<GroupCommitWriter>> Start(const std::string& path,
                                                          const SqliteTuning& tuning,
                                                          size_t max_batch = 512,
                                                          int64_t restart_wal_bytes = 0);
  ~GroupCommitWriter();  // Stop()

  // Queues `apply`; `done` runs after the batch holding it committed or failed. After Stop,
  // completes at once with kFailedPrecondition.
  void Submit(Apply apply, Done done);
  // Runs `applies` now on the calling thread in one transaction, if nothing submitted before is
  // still unapplied and the write lock can be had without waiting. Returns the outcome (not OK:
  // the database failed and everything rolled back), or nullopt when the caller must Submit them
  // instead.
  std::optional<Status> TryApplyNow(const std::vector<Apply>& applies);
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
  int64_t busy_timeout_ms_ = 5000;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Change> queue_;  // guarded by mu_
  size_t unapplied_ = 0;      // guarded by mu_: submitted, not yet applied
  bool restart_wal_ = false;  // guarded by mu_: TryApplyNow asks the thread to checkpoint
  bool stopping_ = false;     // guarded by mu_
  std::thread thread_;
  WriterFirstMutex db_mu_;  // held by whoever uses db_
  // Declared before db_, so it outlives the commit hook db_ has pointing at it. Used under
  // db_mu_.
  std::unique_ptr<WalRewinder> rewinder_;
  std::unique_ptr<SqliteDb> db_;  // after Start
};

}  // namespace services
