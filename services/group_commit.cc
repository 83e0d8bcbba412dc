#include "services/group_commit.h"

#include <sys/stat.h>

namespace services {

Result<std::unique_ptr<GroupCommitWriter>> GroupCommitWriter::Start(const std::string& path,
                                                                    const SqliteTuning& tuning,
                                                                    size_t max_batch,
                                                                    int64_t truncate_wal_bytes) {
  std::unique_ptr<GroupCommitWriter> w(new GroupCommitWriter());
  w->max_batch_ = max_batch;
  w->truncate_wal_bytes_ = truncate_wal_bytes;
  Result<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path, SqliteDb::Mode::kReadWrite);
  if (!db.ok()) return db.status();
  GW_RETURN_IF_ERROR(ApplyTuning(db->get(), tuning));
  w->db_ = std::move(*db);
  w->thread_ = std::thread([raw = w.get()] { raw->Run(); });
  return w;
}

GroupCommitWriter::~GroupCommitWriter() { Stop(); }

void GroupCommitWriter::Submit(Apply apply, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      queue_.push_back(Change{std::move(apply), std::move(done)});
      cv_.notify_one();
      return;
    }
  }
  done(Status::FailedPrecondition("the database writer has stopped"));
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
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty() || stopping_; });
      if (queue_.empty()) return;  // stopping, and everything queued was applied
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    ApplyBatch(&batch);
    batch.clear();
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
  if (truncate_wal_bytes_ > 0) {
    struct stat info;
    if (stat((db_->path() + "-wal").c_str(), &info) == 0 && info.st_size >= truncate_wal_bytes_) {
      // Between batches we hold no transaction: only brief readers can delay this.
      (void)db_->Exec("PRAGMA wal_checkpoint(TRUNCATE)");
    }
  }
}

}  // namespace services
