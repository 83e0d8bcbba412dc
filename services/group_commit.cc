#include "services/group_commit.h"

#include <sqlite3.h>

namespace services {

Result<std::unique_ptr<GroupCommitWriter>> GroupCommitWriter::Start(const std::string& path,
                                                                    const SqliteTuning& tuning,
                                                                    size_t max_batch,
                                                                    int64_t restart_wal_bytes) {
  std::unique_ptr<GroupCommitWriter> w(new GroupCommitWriter());
  w->max_batch_ = max_batch;
  w->restart_wal_bytes_ = restart_wal_bytes;
  w->busy_timeout_ms_ = tuning.busy_timeout_ms;
  Result<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path, SqliteDb::Mode::kReadWrite);
  if (!db.ok()) return db.status();
  GW_RETURN_IF_ERROR(ApplyTuning(db->get(), tuning));
  Result<int64_t> page_size = (*db)->QueryInt("PRAGMA page_size");
  if (!page_size.ok()) return page_size.status();
  w->page_size_ = *page_size;
  w->db_ = std::move(*db);
  // After the tuning: its wal_autocheckpoint = 0 cleared the hook this replaces.
  sqlite3_wal_hook(w->db_->raw(), OnWalCommit, w.get());
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
  std::unique_lock<std::mutex> db_lock(db_mu_, std::try_to_lock);
  if (!db_lock.owns_lock()) return std::nullopt;  // the writer thread is using the database
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
  const bool restart = restart_wal_bytes_ > 0 && wal_frames_ * page_size_ >= restart_wal_bytes_;
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
    std::lock_guard<std::mutex> db_lock(db_mu_);
    if (!batch.empty()) {
      const size_t applied = batch.size();
      ApplyBatch(&batch);
      batch.clear();
      restart = true;
      std::lock_guard<std::mutex> lock(mu_);
      unapplied_ -= applied;
    }
    if (restart) MaybeRestartWal();
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

void GroupCommitWriter::MaybeRestartWal() {
  if (restart_wal_bytes_ <= 0 || wal_frames_ * page_size_ < restart_wal_bytes_) return;
  // Between batches we hold no transaction: only brief readers can delay this. RESTART, not
  // TRUNCATE: the next commit rewrites the WAL from its start instead of growing the file again.
  if (db_->Exec("PRAGMA wal_checkpoint(RESTART)").ok()) wal_frames_ = 0;
}

int GroupCommitWriter::OnWalCommit(void* self, sqlite3*, const char*, int frames) {
  // Runs inside the commit, on the thread holding db_mu_.
  static_cast<GroupCommitWriter*>(self)->wal_frames_ = frames;
  return SQLITE_OK;
}

}  // namespace services
