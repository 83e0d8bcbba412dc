#include "services/group_commit.h"

#include <sqlite3.h>

namespace services {

Result<std::unique_ptr<GroupCommitWriter>> GroupCommitWriter::Start(const std::string& path,
                                                                    const SqliteTuning& tuning,
                                                                    size_t max_batch,
                                                                    int64_t restart_wal_bytes) {
  std::unique_ptr<GroupCommitWriter> w(new GroupCommitWriter());
  w->max_batch_ = max_batch;
  w->busy_timeout_ms_ = tuning.busy_timeout_ms;
  Result<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path, SqliteDb::Mode::kReadWrite);
  if (!db.ok()) return db.status();
  GW_RETURN_IF_ERROR(ApplyTuning(db->get(), tuning));
  w->db_ = std::move(*db);
  Result<std::unique_ptr<WalRewinder>> rewinder =
      WalRewinder::Open(path, tuning, restart_wal_bytes);
  if (!rewinder.ok()) return rewinder.status();
  w->rewinder_ = std::move(*rewinder);
  w->rewinder_->Watch(w->db_.get());
  w->thread_ = std::thread([raw = w.get()] { raw->Run(); });
  return w;
}

GroupCommitWriter::~GroupCommitWriter() { Stop(); }

void GroupCommitWriter::Submit(Apply apply, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      queue_.push_back(Change{std::move(apply), std::move(done)});
      ++unapplied_;
      cv_.notify_one();
      return;
    }
  }
  done(Status::FailedPrecondition("the database writer has stopped"));
}

std::optional<Status> GroupCommitWriter::TryApplyNow(const std::vector<Apply>& applies) {
  std::unique_lock<std::mutex> db_lock = db_mu_.TryLock();
  if (!db_lock.owns_lock()) return std::nullopt;  // the writer thread's turn: Submit instead
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Anything submitted before must be applied first: these changes would overtake it.
    if (stopping_ || unapplied_ > 0) return std::nullopt;
  }
  Status st;
  {
    // No waiting on the caller's thread: if another connection holds the write lock, the writer
    // thread waits for it instead.
    sqlite3_busy_timeout(db_->raw(), 0);
    Result<WriteTransaction> txn = WriteTransaction::Begin(db_.get());
    sqlite3_busy_timeout(db_->raw(), static_cast<int>(busy_timeout_ms_));
    if (!txn.ok()) return std::nullopt;
    for (const Apply& apply : applies) {
      st = apply(db_.get());
      if (!st.ok()) break;
    }
    if (st.ok()) st = txn->Commit();
  }  // a failed transaction rolls back here, before anyone is told
  const bool restart = rewinder_->Due();
  db_lock.unlock();
  if (restart) {
    std::lock_guard<std::mutex> lock(mu_);
    restart_wal_ = true;
    cv_.notify_one();
  }
  return st;
}

void GroupCommitWriter::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void GroupCommitWriter::Run() {
  std::deque<Change> batch;
  for (;;) {
    bool restart = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty() || stopping_ || restart_wal_; });
      if (queue_.empty() && stopping_) return;  // everything queued was applied
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      std::swap(restart, restart_wal_);
    }
    std::unique_lock<std::mutex> db_lock = db_mu_.LockForWriter();
    if (!batch.empty()) {
      const size_t applied = batch.size();
      ApplyBatch(&batch);
      batch.clear();
      restart = true;
      std::lock_guard<std::mutex> lock(mu_);
      unapplied_ -= applied;
    }
    // The copy lets go of db_mu_, so TryApplyNow commits go on meanwhile.
    if (restart) rewinder_->RewindIfDue(&db_mu_, &db_lock, db_.get());
  }
}

void GroupCommitWriter::ApplyBatch(std::deque<Change>* batch) {
  Status st;
  {
    Result<WriteTransaction> txn = WriteTransaction::Begin(db_.get());
    if (!txn.ok()) {
      st = txn.status();
    } else {
      for (Change& c : *batch) {
        st = c.apply(db_.get());
        if (!st.ok()) break;
      }
      if (st.ok()) st = txn->Commit();
    }
  }  // a failed transaction rolls back here, before anyone is told
  for (Change& c : *batch) c.done(st);
}

}  // namespace services
