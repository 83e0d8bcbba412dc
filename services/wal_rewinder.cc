#include "services/wal_rewinder.h"

#include <sqlite3.h>

namespace services {

Result<std::unique_ptr<WalRewinder>> WalRewinder::Open(const std::string& path,
                                                       const SqliteTuning& tuning,
                                                       int64_t rewind_bytes) {
  std::unique_ptr<WalRewinder> r(new WalRewinder());
  r->rewind_bytes_ = rewind_bytes;
  if (rewind_bytes <= 0) return r;
  Result<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path, SqliteDb::Mode::kReadWrite);
  if (!db.ok()) return db.status().WithContext("checkpoint connection");
  GW_RETURN_IF_ERROR(ApplyTuning(db->get(), tuning).WithContext("checkpoint connection"));
  Result<int64_t> page_size = (*db)->QueryInt("PRAGMA page_size");
  if (!page_size.ok()) return page_size.status().WithContext("checkpoint connection");
  r->page_size_ = *page_size;
  r->checkpoint_db_ = std::move(*db);
  return r;
}

void WalRewinder::Watch(SqliteDb* writer) { sqlite3_wal_hook(writer->raw(), OnCommit, this); }

int WalRewinder::OnCommit(void* self, sqlite3*, const char*, int frames) {
  static_cast<WalRewinder*>(self)->wal_frames_ = frames;
  return SQLITE_OK;
}

bool WalRewinder::Due() const {
  return rewind_bytes_ > 0 && wal_frames_ * page_size_ >= rewind_bytes_;
}

void WalRewinder::RewindIfDue(WriterFirstMutex* mu, std::unique_lock<std::mutex>* held,
                              SqliteDb* writer) {
  if (!Due()) return;
  // The copy and its two fsyncs take milliseconds to tens of them: done without the lock, other
  // threads go on committing meanwhile. PASSIVE takes no lock a writer or reader waits for; a
  // failure (SQLITE_BUSY while another checkpoint runs) only leaves more for the RESTART.
  held->unlock();
  if (checkpoint_db_ != nullptr) {
    (void)sqlite3_wal_checkpoint_v2(checkpoint_db_->raw(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                    nullptr, nullptr);
  }
  *held = mu->LockForWriter();
  // The writer holds no transaction now: the checkpoint waits only for readers, which are brief.
  if (Due() && writer->Exec("PRAGMA wal_checkpoint(RESTART)").ok()) wal_frames_ = 0;
}

}  // namespace services
