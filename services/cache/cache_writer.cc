#include "services/cache/cache_writer.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <limits>

#include "services/cache/cache_reader.h"

namespace services::cache {
namespace {

Status BindKey(Statement* stmt, int key_index, int long_key_index, const StoredKey& key) {
  GW_RETURN_IF_ERROR(stmt->BindBlob(key_index, key.key));
  if (long_key_index == 0) return Status::Ok();
  return key.long_key ? stmt->BindBlob(long_key_index, *key.long_key)
                      : stmt->BindNull(long_key_index);
}

// Binds `v` without copying it (a value may be megabytes): `v` must outlive the statement's run,
// and the caller resets the statement (which clears its bindings) afterwards.
Status BindValueRef(Statement* stmt, int index, const CacheValue& v) {
  switch (v.kind) {
    case CacheValue::Kind::kInt:
      return stmt->BindInt(index, v.integer);
    case CacheValue::Kind::kText:
      return stmt->BindTextRef(index, v.bytes);
    case CacheValue::Kind::kBytes:
      return stmt->BindBlobRef(index, v.bytes);
  }
  return Status::Internal("unknown value kind");
}

Status BindExpiry(Statement* stmt, int index, const Expiry& e) {
  return e.at_ms ? stmt->BindInt(index, *e.at_ms) : stmt->BindNull(index);
}

CacheWriteResult Fail(CacheError error, std::string message) {
  CacheWriteResult r;
  r.error = error;
  r.message = std::move(message);
  return r;
}

CacheWriteResult Flag(bool flag) {
  CacheWriteResult r;
  r.flag = flag;
  return r;
}

CacheWriteResult Number(int64_t n) {
  CacheWriteResult r;
  r.number = n;
  return r;
}

}  // namespace

Result<std::unique_ptr<CacheWriter>> CacheWriter::Start(const std::string& path,
                                                        const SqliteTuning& tuning, Options options,
                                                        const Clock* clock) {
  std::unique_ptr<CacheWriter> w(new CacheWriter(options, clock));
  Result<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path, SqliteDb::Mode::kReadWrite);
  if (!db.ok()) return db.status().WithContext("cache writer");
  w->db_ = std::move(*db);
  w->busy_timeout_ms_ = tuning.busy_timeout_ms;
  GW_RETURN_IF_ERROR(ApplyTuning(w->db_.get(), tuning).WithContext("cache writer"));
  GW_RETURN_IF_ERROR(w->Prepare().WithContext("cache writer"));
  Result<std::unique_ptr<WalRewinder>> rewinder =
      WalRewinder::Open(path, tuning, options.restart_wal_bytes);
  if (!rewinder.ok()) return rewinder.status().WithContext("cache writer");
  w->rewinder_ = std::move(*rewinder);
  w->rewinder_->Watch(w->db_.get());
  w->thread_ = std::thread([raw = w.get()] { raw->Run(); });
  return w;
}

namespace {

const char* EvictionSql(Eviction eviction) {
  switch (eviction) {
    case Eviction::kLeastRecentlyUsed:
      return "DELETE FROM cache_entries WHERE id IN (SELECT id FROM cache_entries "
             "ORDER BY accessed_at, id LIMIT ?1) RETURNING size";
    case Eviction::kLeastRecentlyStored:
      return "DELETE FROM cache_entries WHERE id IN (SELECT id FROM cache_entries "
             "ORDER BY id LIMIT ?1) RETURNING size";
    case Eviction::kSoonestExpiry:
      // The expiry index gives the first part in order; UNION ALL stops at the LIMIT, so the
      // scan for entries that never expire only runs when too few others are left.
      return "DELETE FROM cache_entries WHERE id IN ("
             "SELECT id FROM (SELECT id FROM cache_entries WHERE expires_at IS NOT NULL "
             "ORDER BY expires_at LIMIT ?1) "
             "UNION ALL SELECT id FROM (SELECT id FROM cache_entries WHERE expires_at IS NULL "
             "ORDER BY id LIMIT ?1) LIMIT ?1) RETURNING size";
  }
  return "";
}

}  // namespace

Status CacheWriter::Prepare() {
  // Every index costs pages on every write: keep the lru order index only when lru uses it.
  GW_RETURN_IF_ERROR(db_->Exec(
      options_.eviction == Eviction::kLeastRecentlyUsed
          ? "CREATE INDEX IF NOT EXISTS cache_entries_access ON cache_entries(accessed_at, id)"
          : "DROP INDEX IF EXISTS cache_entries_access"));
  struct {
    Statement* stmt;
    const char* sql;
  } const statements[] = {
      // Without the value: a large one spills into overflow pages, and a set needs only the rest.
      {&lookup_, "SELECT id, long_key, expires_at, size FROM cache_entries WHERE key = ?1"},
      {&lookup_value_,
       "SELECT id, long_key, expires_at, size, value FROM cache_entries WHERE key = ?1"},
      // Under least-recently-stored, REPLACE removes any row under the key and inserts a new one
      // with the highest id, so id order is store order, with no extra index. The other policies
      // do not need that order: a set of an existing key updates its row where it is (update_),
      // which leaves the table leaf's neighbours and the key index alone.
      {&put_,
       "INSERT OR REPLACE INTO cache_entries(key, long_key, value, expires_at, accessed_at, size) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6)"},
      {&update_,
       "UPDATE cache_entries SET long_key = ?2, value = ?3, expires_at = ?4, accessed_at = ?5, "
       "size = ?6 WHERE id = ?1"},
      {&delete_id_, "DELETE FROM cache_entries WHERE id = ?1"},
      {&set_expiry_, "UPDATE cache_entries SET expires_at = ?2 WHERE id = ?1"},
      {&set_value_, "UPDATE cache_entries SET value = ?2 WHERE id = ?1"},
      {&clear_prefix_,
       "DELETE FROM cache_entries WHERE "
       "(key >= ?1 AND (?2 IS NULL OR key < ?2) AND long_key IS NULL) OR "
       "(key < x'01' AND long_key IS NOT NULL AND substr(long_key, 1, ?3) = ?1) RETURNING size"},
      {&clear_all_, "DELETE FROM cache_entries"},
      {&evict_, EvictionSql(options_.eviction)},
      {&sweep_,
       "DELETE FROM cache_entries WHERE id IN (SELECT id FROM cache_entries "
       "WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2) RETURNING size"},
      {&touch_access_, "UPDATE cache_entries SET accessed_at = ?2 WHERE key = ?1"},
      {&page_count_, "PRAGMA page_count"},
      {&freelist_count_, "PRAGMA freelist_count"},
  };
  for (const auto& s : statements) {
    Result<Statement> stmt = db_->Prepare(s.sql);
    if (!stmt.ok()) return stmt.status();
    *s.stmt = std::move(*stmt);
  }
  Result<int64_t> page_size = db_->QueryInt("PRAGMA page_size");
  if (!page_size.ok()) return page_size.status();
  page_size_ = *page_size;
  Result<Statement> totals =
      db_->Prepare("SELECT count(*), coalesce(sum(size), 0) FROM cache_entries");
  if (!totals.ok()) return totals.status();
  Result<bool> row = totals->Step();
  if (!row.ok()) return row.status();
  entries_ = totals->ColumnInt(0);
  bytes_ = totals->ColumnInt(1);
  Publish();
  return Status::Ok();
}

CacheWriter::~CacheWriter() { Stop(); }

void CacheWriter::Submit(CacheWrite write, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      queue_.push_back(Pending{std::move(write), std::move(done)});
      ++unapplied_;
      cv_.notify_one();
      return;
    }
  }
  done(Fail(CacheError::kStorage, "the cache is shutting down"));
}

void CacheWriter::RecordAccess(std::vector<std::string> stored_keys, int64_t at_ms) {
  if (options_.eviction != Eviction::kLeastRecentlyUsed) return;
  std::lock_guard<std::mutex> lock(mu_);
  const bool first = accesses_.empty();
  for (std::string& k : stored_keys) accesses_.emplace_back(std::move(k), at_ms);
  if (first) cv_.notify_one();  // an idle writer sleeps with no deadline; give it one
}

CacheCounters CacheWriter::Counters() const {
  return {pub_entries_.load(), pub_bytes_.load(), evictions_.load(), expirations_.load()};
}

void CacheWriter::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void CacheWriter::Publish() {
  pub_entries_ = entries_;
  pub_bytes_ = bytes_;
}

void CacheWriter::Run() {
  // When the next expiry sweep is due (monotonic us); nullopt while nothing can expire, so an
  // idle cache sleeps until a write arrives instead of waking up every interval.
  std::optional<int64_t> next_sweep;
  {
    std::unique_lock<std::mutex> db_lock = db_mu_.LockForWriter();
    next_sweep = NextSweep();
  }
  std::vector<Pending> batch;
  for (;;) {
    bool stop = false;
    bool flush_accesses = false;
    bool recheck_sweep = false, budget_pass = false, restart_wal = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      std::optional<int64_t> due = next_sweep;
      if (!accesses_.empty()) {
        const int64_t flush_at = clock_->MonotonicMicros() + options_.sweep_interval_ms * 1000;
        due = due ? std::min(*due, flush_at) : flush_at;
      }
      auto ready = [&] {
        return !queue_.empty() || stopping_ || recheck_sweep_ || budget_pass_ || restart_wal_ ||
               (!due && !accesses_.empty());
      };
      if (!ready()) {
        if (!due) {
          cv_.wait(lock, ready);
        } else if (*due > clock_->MonotonicMicros()) {
          cv_.wait_for(lock, std::chrono::microseconds(*due - clock_->MonotonicMicros()), ready);
        }
      }
      while (!queue_.empty() && batch.size() < options_.max_batch_ops) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      stop = stopping_ && queue_.empty();
      flush_accesses = !accesses_.empty() && (stop || !due || *due <= clock_->MonotonicMicros());
      std::swap(recheck_sweep, recheck_sweep_);
      std::swap(budget_pass, budget_pass_);
      std::swap(restart_wal, restart_wal_);
    }
    std::unique_lock<std::mutex> db_lock = db_mu_.LockForWriter();
    if (!batch.empty()) {
      const size_t applied = batch.size();
      ApplyBatch(&batch);
      batch.clear();
      recheck_sweep = restart_wal = true;
      std::lock_guard<std::mutex> lock(mu_);
      unapplied_ -= applied;
    }
    if (budget_pass) {
      Result<WriteTransaction> txn = WriteTransaction::Begin(db_.get());
      const int64_t entries_before = entries_, bytes_before = bytes_;
      const int64_t evictions_before = evictions_.load();
      if (txn.ok() && EnforceBudget(8, nullptr).ok() && txn->Commit().ok()) {
        Publish();
      } else {
        entries_ = entries_before;
        bytes_ = bytes_before;
        evictions_ = evictions_before;
      }
    }
    if (recheck_sweep) next_sweep = NextSweep();
    // The copy lets go of db_mu_, so the loop thread goes on committing sets meanwhile.
    if (restart_wal) rewinder_->RewindIfDue(&db_mu_, &db_lock, db_.get());
    if (flush_accesses) {
      std::vector<std::pair<std::string, int64_t>> accesses;
      {
        std::lock_guard<std::mutex> lock(mu_);
        accesses.swap(accesses_);
      }
      FlushAccessTimes(&accesses);
    }
    if (next_sweep && *next_sweep <= clock_->MonotonicMicros()) {
      SweepExpired(clock_->NowUnixMicros() / 1000);
      next_sweep = NextSweep();
    }
    if (stop) return;
  }
}

std::optional<std::vector<CacheWriteResult>> CacheWriter::TryApplyNow(
    const std::vector<CacheWrite>& writes) {
  // Only bounded work on the caller's thread (the event loop, serving every client): a clear can
  // delete any number of rows, so it goes to the writer thread, as do large multi-key writes.
  constexpr size_t kMaxKeysNow = 64;
  size_t keys = 0;
  for (const CacheWrite& w : writes) {
    if (w.op == CacheOp::kClearAll || w.op == CacheOp::kClearPrefix) return std::nullopt;
    keys += 1 + w.items.size() + w.keys.size();
  }
  if (keys > kMaxKeysNow * 8) return std::nullopt;
  for (const CacheWrite& w : writes) {
    if (w.items.size() > kMaxKeysNow || w.keys.size() > kMaxKeysNow) return std::nullopt;
  }
  std::unique_lock<std::mutex> db_lock = db_mu_.TryLock();
  if (!db_lock.owns_lock()) return std::nullopt;  // the writer thread's turn: Submit instead
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Anything submitted before must be applied first: these writes would overtake it.
    if (stopping_ || unapplied_ > 0) return std::nullopt;
  }
  // No waiting on the loop thread: if another connection (a checkpoint, the replicator) holds
  // the write lock, the writer thread waits for it instead.
  sqlite3_busy_timeout(db_->raw(), 0);
  Result<WriteTransaction> txn = WriteTransaction::Begin(db_.get());
  sqlite3_busy_timeout(db_->raw(), static_cast<int>(busy_timeout_ms_));
  if (!txn.ok()) return std::nullopt;
  std::vector<const CacheWrite*> pointers;
  pointers.reserve(writes.size());
  std::optional<int64_t> earliest_expiry;
  for (const CacheWrite& w : writes) {
    pointers.push_back(&w);
    if (w.expiry.at_ms)
      earliest_expiry = std::min(earliest_expiry.value_or(INT64_MAX), *w.expiry.at_ms);
  }
  std::vector<CacheWriteResult> results;
  // One round of evictions at most here: a long eviction would stall every client of the loop;
  // the writer thread finishes the job in its own transaction.
  bool over_budget = false;
  ApplyInTransaction(std::move(*txn), pointers, 1, &results, &over_budget);
  const bool restart = rewinder_->Due();
  db_lock.unlock();
  const bool sooner = earliest_expiry && *earliest_expiry < known_earliest_ms_.load();
  if (sooner || over_budget || restart) {
    std::lock_guard<std::mutex> lock(mu_);
    recheck_sweep_ |= sooner;
    budget_pass_ |= over_budget;
    restart_wal_ |= restart;
    cv_.notify_one();
  }
  return results;
}

std::optional<int64_t> CacheWriter::NextSweep() {
  Result<Statement*> stmt =
      db_->Cached("SELECT min(expires_at) FROM cache_entries WHERE expires_at IS NOT NULL");
  if (!stmt.ok()) return clock_->MonotonicMicros() + options_.sweep_interval_ms * 1000;
  Result<bool> row = (*stmt)->Step();
  std::optional<int64_t> earliest_ms;
  if (row.ok() && *row && !(*stmt)->ColumnIsNull(0)) earliest_ms = (*stmt)->ColumnInt(0);
  (*stmt)->Reset();
  known_earliest_ms_ = earliest_ms.value_or(INT64_MAX);
  if (!earliest_ms) return std::nullopt;
  // Sweeps are batched: due at the earliest expiry, but never sooner than sweep_interval after
  // the previous sweep.
  const int64_t expiry_us =
      clock_->MonotonicMicros() + (*earliest_ms - clock_->NowUnixMicros() / 1000) * 1000;
  return std::max(expiry_us, last_sweep_us_ + options_.sweep_interval_ms * 1000);
}

void CacheWriter::ApplyBatch(std::vector<Pending>* batch) {
  std::vector<const CacheWrite*> writes;
  writes.reserve(batch->size());
  for (const Pending& p : *batch) writes.push_back(&p.write);
  std::vector<CacheWriteResult> results;
  Result<WriteTransaction> txn = WriteTransaction::Begin(db_.get());
  if (!txn.ok()) {
    const CacheWriteResult failure =
        Fail(CacheError::kStorage,
             "the cache database failed, nothing was written: " + txn.status().ToString());
    for (Pending& p : *batch) p.done(failure);
    return;
  }
  ApplyInTransaction(std::move(*txn), writes, 8, &results, nullptr);
  for (size_t i = 0; i < batch->size(); ++i) (*batch)[i].done(std::move(results[i]));
}

void CacheWriter::ApplyInTransaction(WriteTransaction txn,
                                     const std::vector<const CacheWrite*>& writes,
                                     int budget_rounds, std::vector<CacheWriteResult>* results,
                                     bool* budget_unfinished) {
  const int64_t now = clock_->NowUnixMicros() / 1000;
  const int64_t entries_before = entries_, bytes_before = bytes_;
  const int64_t evictions_before = evictions_.load();
  results->clear();
  results->reserve(writes.size());
  Status st;
  for (size_t i = 0; st.ok() && i < writes.size(); ++i) {
    Result<CacheWriteResult> r = Apply(*writes[i], now);
    if (!r.ok()) {
      st = r.status();
      break;
    }
    results->push_back(std::move(*r));
  }
  if (st.ok()) st = EnforceBudget(budget_rounds, budget_unfinished);
  if (st.ok()) st = txn.Commit();
  if (!st.ok()) {
    // `txn` rolls back as it goes out of scope: nothing of this batch happened.
    entries_ = entries_before;
    bytes_ = bytes_before;
    evictions_ = evictions_before;
    const CacheWriteResult failure = Fail(
        CacheError::kStorage, "the cache database failed, nothing was written: " + st.ToString());
    results->assign(writes.size(), failure);
    return;
  }
  Publish();
}

Result<CacheWriter::Row> CacheWriter::Lookup(const StoredKey& key, int64_t now, CacheValue* value) {
  Statement& stmt = value != nullptr ? lookup_value_ : lookup_;
  Row row;
  stmt.Reset();
  GW_RETURN_IF_ERROR(stmt.BindBlob(1, key.key));
  Result<bool> found = stmt.Step();
  if (!found.ok()) return found.status();
  if (*found) {
    row.exists = true;
    row.id = stmt.ColumnInt(0);
    row.size = stmt.ColumnInt(3);
    if (!stmt.ColumnIsNull(2)) row.expiry.at_ms = stmt.ColumnInt(2);
    const bool same_key = key.long_key
                              ? !stmt.ColumnIsNull(1) && stmt.ColumnBlob(1) == *key.long_key
                              : stmt.ColumnIsNull(1);
    row.live = same_key && !row.expiry.expired(now);
    if (row.live && value != nullptr) {
      switch (stmt.ColumnType(4)) {
        case SQLITE_INTEGER:
          *value = CacheValue::Int(stmt.ColumnInt(4));
          break;
        case SQLITE_TEXT:
          *value = CacheValue::Text(stmt.ColumnText(4));
          break;
        default:
          *value = CacheValue::Bytes(stmt.ColumnBlob(4));
          break;
      }
    }
  }
  stmt.Reset();
  return row;
}

Status CacheWriter::Put(const StoredKey& key, const CacheValue& value, const Expiry& expiry,
                        int64_t now) {
  Result<Row> old = Lookup(key, now, nullptr);
  if (!old.ok()) return old.status();
  if (old->exists) {
    --entries_;
    bytes_ -= old->size;
  }
  const int64_t size = value.ChargedSize(key);
  if (old->exists && options_.eviction != Eviction::kLeastRecentlyStored) {
    // The key (the same hash, for a long key) stays; the UNIQUE index is not touched.
    update_.Reset();
    GW_RETURN_IF_ERROR(update_.BindInt(1, old->id));
    GW_RETURN_IF_ERROR(key.long_key ? update_.BindBlob(2, *key.long_key) : update_.BindNull(2));
    GW_RETURN_IF_ERROR(BindValueRef(&update_, 3, value));
    GW_RETURN_IF_ERROR(BindExpiry(&update_, 4, expiry));
    GW_RETURN_IF_ERROR(update_.BindInt(5, now));
    GW_RETURN_IF_ERROR(update_.BindInt(6, size));
    const Status st = update_.Run();
    update_.Reset();  // clears the bindings: the value's bytes belong to the caller
    GW_RETURN_IF_ERROR(st);
  } else {
    put_.Reset();
    GW_RETURN_IF_ERROR(BindKey(&put_, 1, 2, key));
    GW_RETURN_IF_ERROR(BindValueRef(&put_, 3, value));
    GW_RETURN_IF_ERROR(BindExpiry(&put_, 4, expiry));
    GW_RETURN_IF_ERROR(put_.BindInt(5, now));
    GW_RETURN_IF_ERROR(put_.BindInt(6, size));
    const Status st = put_.Run();
    put_.Reset();
    GW_RETURN_IF_ERROR(st);
  }
  ++entries_;
  bytes_ += size;
  return Status::Ok();
}

Status CacheWriter::RemoveRow(const Row& row) {
  delete_id_.Reset();
  GW_RETURN_IF_ERROR(delete_id_.BindInt(1, row.id));
  GW_RETURN_IF_ERROR(delete_id_.Run());
  --entries_;
  bytes_ -= row.size;
  return Status::Ok();
}

Result<int64_t> CacheWriter::DeleteReturningSizes(Statement* stmt) {
  int64_t rows = 0;
  for (;;) {
    Result<bool> row = stmt->Step();
    if (!row.ok()) {
      stmt->Reset();
      return row.status();
    }
    if (!*row) break;
    ++rows;
    --entries_;
    bytes_ -= stmt->ColumnInt(0);
  }
  stmt->Reset();
  return rows;
}

Result<CacheWriteResult> CacheWriter::Apply(const CacheWrite& w, int64_t now) {
  switch (w.op) {
    case CacheOp::kSet:
    case CacheOp::kAdd: {
      Result<Row> row = Lookup(w.key, now, nullptr);
      if (!row.ok()) return row.status();
      if (w.op == CacheOp::kAdd && row->live) return Flag(false);
      if (w.expiry.expired(now)) {
        // Django: a timeout of 0 or less stores nothing and drops what was there.
        if (row->exists) GW_RETURN_IF_ERROR(RemoveRow(*row));
      } else {
        GW_RETURN_IF_ERROR(Put(w.key, w.value, w.expiry, now));
      }
      if (w.cull) GW_RETURN_IF_ERROR(Cull(w.cull->first, w.cull->second));
      return Flag(true);
    }
    case CacheOp::kSetMany: {
      for (const auto& [key, value] : w.items) {
        if (w.expiry.expired(now)) {
          Result<Row> row = Lookup(key, now, nullptr);
          if (!row.ok()) return row.status();
          if (row->exists) GW_RETURN_IF_ERROR(RemoveRow(*row));
        } else {
          GW_RETURN_IF_ERROR(Put(key, value, w.expiry, now));
        }
      }
      if (w.cull) GW_RETURN_IF_ERROR(Cull(w.cull->first, w.cull->second));
      return Flag(true);
    }
    case CacheOp::kTouch:
    case CacheOp::kExpire:
    case CacheOp::kPersist: {
      Result<Row> row = Lookup(w.key, now, nullptr);
      if (!row.ok()) return row.status();
      if (!row->live) return Flag(false);
      const Expiry expiry = w.op == CacheOp::kPersist ? Expiry::Never() : w.expiry;
      if (expiry.expired(now)) {
        GW_RETURN_IF_ERROR(RemoveRow(*row));
        return Flag(true);
      }
      set_expiry_.Reset();
      GW_RETURN_IF_ERROR(set_expiry_.BindInt(1, row->id));
      GW_RETURN_IF_ERROR(BindExpiry(&set_expiry_, 2, expiry));
      GW_RETURN_IF_ERROR(set_expiry_.Run());
      return Flag(true);
    }
    case CacheOp::kDelete: {
      Result<Row> row = Lookup(w.key, now, nullptr);
      if (!row.ok()) return row.status();
      if (row->live) GW_RETURN_IF_ERROR(RemoveRow(*row));
      return Flag(row->live);
    }
    case CacheOp::kDeleteMany: {
      int64_t removed = 0;
      for (const StoredKey& key : w.keys) {
        Result<Row> row = Lookup(key, now, nullptr);
        if (!row.ok()) return row.status();
        if (!row->live) continue;
        GW_RETURN_IF_ERROR(RemoveRow(*row));
        ++removed;
      }
      return Number(removed);
    }
    case CacheOp::kIncr: {
      CacheValue current;
      Result<Row> row = Lookup(w.key, now, &current);
      if (!row.ok()) return row.status();
      if (!row->live) return Fail(CacheError::kKeyNotFound, "no live entry under this key");
      if (current.kind != CacheValue::Kind::kInt) {
        return Fail(CacheError::kNotInteger, "the entry's value is not an integer");
      }
      int64_t next = 0;
      if (__builtin_add_overflow(current.integer, w.delta, &next)) {
        return Fail(CacheError::kOutOfRange, "incrementing " + std::to_string(current.integer) +
                                                 " by " + std::to_string(w.delta) +
                                                 " overflows a signed 64-bit integer");
      }
      set_value_.Reset();
      GW_RETURN_IF_ERROR(set_value_.BindInt(1, row->id));
      GW_RETURN_IF_ERROR(set_value_.BindInt(2, next));
      GW_RETURN_IF_ERROR(set_value_.Run());
      return Number(next);
    }
    case CacheOp::kClearPrefix: {
      const std::optional<std::string> upper = PrefixUpperBound(w.prefix);
      clear_prefix_.Reset();
      GW_RETURN_IF_ERROR(clear_prefix_.BindBlob(1, w.prefix));
      GW_RETURN_IF_ERROR(upper ? clear_prefix_.BindBlob(2, *upper) : clear_prefix_.BindNull(2));
      GW_RETURN_IF_ERROR(clear_prefix_.BindInt(3, static_cast<int64_t>(w.prefix.size())));
      Result<int64_t> removed = DeleteReturningSizes(&clear_prefix_);
      if (!removed.ok()) return removed.status();
      return Number(*removed);
    }
    case CacheOp::kClearAll: {
      clear_all_.Reset();
      GW_RETURN_IF_ERROR(clear_all_.Run());
      const int64_t removed = db_->Changes();
      entries_ = 0;
      bytes_ = 0;
      return Number(removed);
    }
    case CacheOp::kLock: {
      CacheValue holder;
      Result<Row> row = Lookup(w.key, now, &holder);
      if (!row.ok()) return row.status();
      if (row->live && !(holder.kind == w.value.kind && holder.bytes == w.value.bytes)) {
        return Flag(false);
      }
      GW_RETURN_IF_ERROR(Put(w.key, w.value, w.expiry, now));
      return Flag(true);
    }
    case CacheOp::kUnlock: {
      CacheValue holder;
      Result<Row> row = Lookup(w.key, now, &holder);
      if (!row.ok()) return row.status();
      if (!row->live || holder.kind != w.value.kind || holder.bytes != w.value.bytes) {
        return Flag(false);
      }
      GW_RETURN_IF_ERROR(RemoveRow(*row));
      return Flag(true);
    }
  }
  return Status::Internal("unknown cache op");
}

Status CacheWriter::Cull(int64_t max_entries, int64_t frequency) {
  if (entries_ <= max_entries) return Status::Ok();
  // As Django's database cache: drop 1/frequency of the entries, oldest first; 0 drops all.
  const int64_t n = frequency <= 0 ? entries_ : std::max<int64_t>(1, entries_ / frequency);
  evict_.Reset();
  GW_RETURN_IF_ERROR(evict_.BindInt(1, n));
  Result<int64_t> removed = DeleteReturningSizes(&evict_);
  if (!removed.ok()) return removed.status();
  evictions_ += *removed;
  return Status::Ok();
}

Result<int64_t> CacheWriter::PagesInUse() {
  page_count_.Reset();
  freelist_count_.Reset();
  Result<bool> a = page_count_.Step();
  if (!a.ok()) return a.status();
  Result<bool> b = freelist_count_.Step();
  if (!b.ok()) return b.status();
  const int64_t used = page_count_.ColumnInt(0) - freelist_count_.ColumnInt(0);
  page_count_.Reset();
  freelist_count_.Reset();
  return used;
}

Status CacheWriter::EnforceBudget(int max_rounds, bool* unfinished) {
  // Bounded work per transaction: a few rounds of deletions, each of a bounded number of rows.
  constexpr int64_t kMaxRowsPerRound = 4096;
  if (unfinished != nullptr) *unfinished = false;
  if (options_.max_entries > 0 && entries_ > options_.max_entries) {
    evict_.Reset();
    GW_RETURN_IF_ERROR(evict_.BindInt(1, entries_ - options_.max_entries));
    Result<int64_t> removed = DeleteReturningSizes(&evict_);
    if (!removed.ok()) return removed.status();
    evictions_ += *removed;
  }
  if (options_.max_size <= 0) return Status::Ok();
  // The budget is on database pages in use, which is what the file grows by: freed pages are
  // reused before the file is extended. Evicting down to 90% leaves room for the next batches.
  const int64_t budget_pages = options_.max_size / page_size_;
  const int64_t target_pages = budget_pages * 9 / 10;
  for (int round = 0; round < max_rounds; ++round) {
    Result<int64_t> used = PagesInUse();
    if (!used.ok()) return used.status();
    if (*used <= budget_pages && round == 0) return Status::Ok();
    if (*used <= target_pages || entries_ == 0) break;
    const int64_t excess_bytes = (*used - target_pages) * page_size_;
    const int64_t avg_row = std::max<int64_t>(1, bytes_ / std::max<int64_t>(1, entries_));
    const int64_t rows = std::clamp<int64_t>(excess_bytes / avg_row + 1, 1, kMaxRowsPerRound);
    evict_.Reset();
    GW_RETURN_IF_ERROR(evict_.BindInt(1, rows));
    Result<int64_t> removed = DeleteReturningSizes(&evict_);
    if (!removed.ok()) return removed.status();
    evictions_ += *removed;
    // Out of rounds before reaching the target: maybe still over the budget.
    if (round == max_rounds - 1 && unfinished != nullptr) *unfinished = true;
  }
  return Status::Ok();
}

void CacheWriter::SweepExpired(int64_t now) {
  last_sweep_us_ = clock_->MonotonicMicros();
  // Small transactions, so a backlog of expired entries never holds up client writes for long.
  constexpr int kMaxSweepsPerTick = 20;
  for (int i = 0; i < kMaxSweepsPerTick; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!queue_.empty()) return;  // client writes first; the next tick continues
    }
    Result<WriteTransaction> txn = WriteTransaction::Begin(db_.get());
    if (!txn.ok()) return;
    const int64_t entries_before = entries_, bytes_before = bytes_;
    sweep_.Reset();
    if (!sweep_.BindInt(1, now).ok() || !sweep_.BindInt(2, options_.sweep_batch).ok()) return;
    Result<int64_t> removed = DeleteReturningSizes(&sweep_);
    if (!removed.ok() || !txn->Commit().ok()) {
      entries_ = entries_before;
      bytes_ = bytes_before;
      return;
    }
    expirations_ += *removed;
    Publish();
    if (*removed < options_.sweep_batch) return;
  }
}

void CacheWriter::FlushAccessTimes(std::vector<std::pair<std::string, int64_t>>* accesses) {
  Result<WriteTransaction> txn = WriteTransaction::Begin(db_.get());
  if (txn.ok()) {
    for (const auto& [key, at] : *accesses) {
      touch_access_.Reset();
      if (!touch_access_.BindBlob(1, key).ok() || !touch_access_.BindInt(2, at).ok()) break;
      if (!touch_access_.Run().ok()) break;
    }
    (void)txn->Commit();
  }
  accesses->clear();
}

}  // namespace services::cache
