// CacheWriter: owns the cache database's write connection.
//
// Writes reach it two ways. The event loop first offers each iteration's writes to TryApplyNow,
// which applies them at once on the loop thread in one transaction when that cannot reorder them:
// nothing is queued for or running on the writer thread, and SQLite's write lock is free right
// now. That saves the two thread hand-offs a write otherwise costs. Whatever TryApplyNow declines
// goes to Submit: requests queue up for the writer thread, which takes everything queued (up to a
// bound) and applies it in one BEGIN IMMEDIATE transaction (group commit). Either way the size
// budget is enforced in the same transaction, and only after the commit does anyone hear the
// outcome. Expired entries are swept in small separate transactions on the writer thread, so
// neither a sweep nor an eviction holds the write lock for long. With eviction = "lru", read
// times handed in by RecordAccess are written in batches too.
//
// Threads: Submit, RecordAccess, Counters and Stop may be called from any thread; TryApplyNow
// from one thread (the loop's). The connection is used under db_mu_ by whichever thread holds
// it. Submit's completions run on the writer thread; they must be quick and must not call back
// into the writer.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "services/cache/cache_entry.h"
#include "services/clock.h"
#include "services/sqlite_db.h"
#include "services/sqlite_tuning.h"
#include "services/status.h"
#include "services/wal_rewinder.h"
#include "services/writer_first_mutex.h"

namespace services::cache {

enum class CacheOp {
  kSet,
  kSetMany,
  kAdd,
  kTouch,
  kDelete,
  kDeleteMany,
  kIncr,
  kExpire,
  kPersist,
  kClearPrefix,
  kClearAll,
  kLock,
  kUnlock,
};

struct CacheWrite {
  CacheOp op = CacheOp::kSet;
  StoredKey key;                                        // single-key ops
  CacheValue value;                                     // set, add; lock and unlock: the token
  Expiry expiry;                                        // set, set_many, add, touch, expire, lock
  std::vector<std::pair<StoredKey, CacheValue>> items;  // set_many
  std::vector<StoredKey> keys;                          // delete_many
  int64_t delta = 0;                                    // incr
  std::string prefix;                                   // clear_prefix
  // Django's MAX_ENTRIES / CULL_FREQUENCY, applied after the write: {max_entries, frequency}.
  std::optional<std::pair<int64_t, int64_t>> cull;
};

enum class CacheError { kNone, kKeyNotFound, kNotInteger, kOutOfRange, kStorage };

struct CacheWriteResult {
  CacheError error = CacheError::kNone;
  std::string message;  // for errors
  bool flag = false;    // add, touch, delete, expire, persist, lock, unlock
  int64_t number = 0;   // incr: the new value; delete_many, clear: entries removed
};

struct CacheCounters {
  int64_t entries = 0;  // rows, including expired ones not yet swept
  int64_t bytes = 0;    // charged sizes of those rows
  int64_t evictions = 0;
  int64_t expirations = 0;
};

// Which entries a budget evicts first.
enum class Eviction {
  // The ones due to expire soonest, then those that never expire, oldest first. With one
  // TIMEOUT for every key (Django's usual setting) that is the least recently stored. A set
  // updates its row in place: about 3 WAL pages per small set.
  kSoonestExpiry,
  // Exactly the least recently stored: every set moves its row to the end of the table (about
  // 5 WAL pages per small set).
  kLeastRecentlyStored,
  // The least recently read or stored (read times written in batches); in-place updates.
  kLeastRecentlyUsed,
};

class CacheWriter {
 public:
  struct Options {
    int64_t max_size = 0;     // bytes of database pages in use; 0 = no budget
    int64_t max_entries = 0;  // 0 = no limit
    Eviction eviction = Eviction::kSoonestExpiry;
    int64_t sweep_interval_ms = 1000;
    int64_t sweep_batch = 500;   // rows per sweep transaction
    size_t max_batch_ops = 512;  // requests per group commit
    // Without a replica (which checkpoints as it ships), the writer thread rewinds the WAL
    // itself once its frames add up to this much (wal_rewinder.h); 0 = leave it to others.
    int64_t restart_wal_bytes = 0;
  };
  using Done = std::function<void(CacheWriteResult)>;

  // Opens its own connection to the (already migrated) cache database and starts the thread.
  static Result<std::unique_ptr<CacheWriter>> Start(const std::string& path,
                                                    const SqliteTuning& tuning, Options options,
                                                    const Clock* clock);
  ~CacheWriter();  // Stop()

  // Queues a write; `done` runs on the writer thread after the commit (or the failure).
  void Submit(CacheWrite write, Done done);
  // Applies `writes` now, on the calling thread, in one transaction, if that keeps them in order
  // behind every write submitted before (nothing queued or running on the writer thread) and the
  // write lock can be had without waiting. Returns their results, in order (each kStorage when the
  // database failed and the transaction rolled back), or nullopt when the caller must Submit
  // them instead.
  std::optional<std::vector<CacheWriteResult>> TryApplyNow(const std::vector<CacheWrite>& writes);
  // Records that `stored_keys` were read at `at_ms` (lru only; ignored otherwise).
  void RecordAccess(std::vector<std::string> stored_keys, int64_t at_ms);
  CacheCounters Counters() const;
  // Applies everything queued, then joins the thread. Submit after Stop completes with kStorage.
  void Stop();

  const Options& options() const { return options_; }

 private:
  struct Pending {
    CacheWrite write;
    Done done;
  };
  struct Row {
    bool exists = false;  // a row holds this stored key (maybe another long key, maybe expired)
    bool live = false;    // it is this key's entry and has not expired
    int64_t id = 0;
    int64_t size = 0;
    Expiry expiry;
  };

  CacheWriter(Options options, const Clock* clock) : options_(options), clock_(clock) {}
  Status Prepare();
  void Run();
  void ApplyBatch(std::vector<Pending>* batch);
  // Applies `writes` in one transaction already begun, enforces the budget with at most
  // `budget_rounds` rounds of evictions and commits; fills `results`. On failure everything rolled
  // back, counters included, and `results` holds one kStorage failure per write.
  // `budget_unfinished` (if given): whether the evictions ran out of rounds (see EnforceBudget).
  void ApplyInTransaction(WriteTransaction txn, const std::vector<const CacheWrite*>& writes,
                          int budget_rounds, std::vector<CacheWriteResult>* results,
                          bool* budget_unfinished);
  Result<CacheWriteResult> Apply(const CacheWrite& w, int64_t now);
  // The row under `key`, and its value into `value` (when given and the entry is live).
  Result<Row> Lookup(const StoredKey& key, int64_t now, CacheValue* value);
  Status Put(const StoredKey& key, const CacheValue& value, const Expiry& expiry, int64_t now);
  Status RemoveRow(const Row& row);
  // Deletes with a statement that RETURNs size; returns rows removed.
  Result<int64_t> DeleteReturningSizes(Statement* stmt);
  Status Cull(int64_t max_entries, int64_t frequency);
  // Evicts down to the budget in at most `max_rounds` rounds; `unfinished` (if given) says
  // whether it ran out of rounds first.
  Status EnforceBudget(int max_rounds, bool* unfinished);
  Result<int64_t> PagesInUse();
  void SweepExpired(int64_t now);
  // When the next sweep is due (monotonic us), from the earliest expiry stored; nullopt if none.
  std::optional<int64_t> NextSweep();
  void FlushAccessTimes(std::vector<std::pair<std::string, int64_t>>* accesses);
  void Publish();

  const Options options_;
  const Clock* clock_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;                              // guarded by mu_
  std::vector<std::pair<std::string, int64_t>> accesses_;  // guarded by mu_
  bool stopping_ = false;                                  // guarded by mu_
  // Submitted writes not yet applied, queued or in the writer thread's current batch.
  size_t unapplied_ = 0;  // guarded by mu_
  // Work TryApplyNow leaves to the writer thread: look at the next expiry again (a write brought
  // it forward), finish evicting down to the budget, empty a large WAL.
  bool recheck_sweep_ = false;  // guarded by mu_
  bool budget_pass_ = false;    // guarded by mu_
  bool restart_wal_ = false;    // guarded by mu_
  std::thread thread_;
  // The earliest expiry the writer thread's sweep schedule knows of (Unix ms; INT64_MAX: none).
  std::atomic<int64_t> known_earliest_ms_{INT64_MAX};

  // Whoever holds db_mu_: the writer thread, or the loop thread inside TryApplyNow.
  WriterFirstMutex db_mu_;
  // Declared before db_, so it outlives the commit hook db_ has pointing at it. Used under
  // db_mu_.
  std::unique_ptr<WalRewinder> rewinder_;
  std::unique_ptr<SqliteDb> db_;
  int64_t busy_timeout_ms_ = 5000;
  Statement lookup_, lookup_value_, put_, update_, delete_id_, set_expiry_, set_value_,
      clear_prefix_, clear_all_;
  Statement evict_, sweep_, touch_access_, page_count_, freelist_count_;
  int64_t page_size_ = 4096;
  int64_t entries_ = 0;
  int64_t bytes_ = 0;
  int64_t last_sweep_us_ = INT64_MIN / 2;  // monotonic

  std::atomic<int64_t> pub_entries_{0}, pub_bytes_{0}, evictions_{0}, expirations_{0};
};

}  // namespace services::cache
