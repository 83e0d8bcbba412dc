#include "services/sqlite_db.h"

#include <sqlite3.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "services/wal_batching_vfs.h"

namespace services {

Status SqliteStatus(int rc, sqlite3* db, std::string_view what) {
  if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return Status::Ok();
  std::string msg(what);
  msg += ": ";
  msg += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  msg += " (SQLite code " + std::to_string(rc) + ")";
  // SQLite's "disk I/O error" hides the cause; the operating system's errno names it (a full
  // disk, a read-only filesystem), which is what an operator needs to act.
  const int os_errno = db != nullptr ? sqlite3_system_errno(db) : 0;
  if (os_errno != 0 && ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_FULL ||
                        (rc & 0xff) == SQLITE_CANTOPEN || (rc & 0xff) == SQLITE_READONLY)) {
    msg += ": ";
    msg += std::strerror(os_errno);
    if (os_errno == EROFS) {
      msg += " (the filesystem is read-only: remount it read-write; if the kernel made it "
             "read-only after a disk error, see dmesg, and unmount and fsck it first)";
    }
    if (os_errno == ENOSPC) msg += " (the disk is full; free space)";
  }
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Busy(msg + "; another writer held the database past busy_timeout");
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
      return Status::InvalidArgument(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status::Corruption(msg);
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_PERM:
    case SQLITE_PROTOCOL:
      return Status::IoError(msg);
    default:
      return Status::Internal(msg);
  }
}

// --- Statement ---------------------------------------------------------------------------------

Statement::Statement(Statement&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), stmt_(std::exchange(other.stmt_, nullptr)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(stmt_);
    db_ = std::exchange(other.db_, nullptr);
    stmt_ = std::exchange(other.stmt_, nullptr);
  }
  return *this;
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Status Statement::BindInt(int index, int64_t value) {
  return SqliteStatus(sqlite3_bind_int64(stmt_, index, value), db_, "bind");
}
Status Statement::BindDouble(int index, double value) {
  return SqliteStatus(sqlite3_bind_double(stmt_, index, value), db_, "bind");
}
Status Statement::BindText(int index, std::string_view value) {
  return BindTextOrBlob(index, value, /*text=*/true, /*copy=*/true);
}
Status Statement::BindBlob(int index, std::string_view bytes) {
  return BindTextOrBlob(index, bytes, /*text=*/false, /*copy=*/true);
}
Status Statement::BindTextRef(int index, std::string_view value) {
  return BindTextOrBlob(index, value, /*text=*/true, /*copy=*/false);
}
Status Statement::BindBlobRef(int index, std::string_view bytes) {
  return BindTextOrBlob(index, bytes, /*text=*/false, /*copy=*/false);
}
Status Statement::BindTextOrBlob(int index, std::string_view bytes, bool text, bool copy) {
  // A zero-length blob must still be a blob, not NULL, so never pass a null pointer.
  static const char kEmpty = 0;
  const char* data = bytes.empty() ? &kEmpty : bytes.data();
  const sqlite3_destructor_type lifetime = copy ? SQLITE_TRANSIENT : SQLITE_STATIC;
  const int rc = text ? sqlite3_bind_text64(stmt_, index, data, bytes.size(), lifetime, SQLITE_UTF8)
                      : sqlite3_bind_blob64(stmt_, index, data, bytes.size(), lifetime);
  return SqliteStatus(rc, db_, "bind");
}
Status Statement::BindNull(int index) {
  return SqliteStatus(sqlite3_bind_null(stmt_, index), db_, "bind");
}

Result<bool> Statement::Step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteStatus(rc, db_, "step");
}

Status Statement::Run() {
  for (;;) {
    Result<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return Status::Ok();
  }
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

int64_t Statement::ColumnInt(int index) const { return sqlite3_column_int64(stmt_, index); }
double Statement::ColumnDouble(int index) const { return sqlite3_column_double(stmt_, index); }
std::string Statement::ColumnText(int index) const {
  const unsigned char* text = sqlite3_column_text(stmt_, index);
  if (text == nullptr) return std::string();
  return std::string(reinterpret_cast<const char*>(text), sqlite3_column_bytes(stmt_, index));
}
std::string Statement::ColumnBlob(int index) const {
  const void* data = sqlite3_column_blob(stmt_, index);
  if (data == nullptr) return std::string();
  return std::string(static_cast<const char*>(data), sqlite3_column_bytes(stmt_, index));
}
int Statement::ColumnType(int index) const { return sqlite3_column_type(stmt_, index); }

bool Statement::ColumnIsNull(int index) const {
  return sqlite3_column_type(stmt_, index) == SQLITE_NULL;
}

// --- SqliteDb ----------------------------------------------------------------------------------

Result<std::unique_ptr<SqliteDb>> SqliteDb::Open(const std::string& path, Mode mode) {
  int flags = SQLITE_OPEN_URI;
  switch (mode) {
    case Mode::kReadWriteCreate:
      flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
      break;
    case Mode::kReadWrite:
      flags |= SQLITE_OPEN_READWRITE;
      break;
    case Mode::kReadOnly:
      flags |= SQLITE_OPEN_READONLY;
      break;
  }
  sqlite3* db = nullptr;
  // Every connection of the gateway batches its WAL writes (wal_batching_vfs.h); the files are
  // the same to every other process, which opens them with SQLite's default VFS.
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, WalBatchingVfsName());
  if (rc != SQLITE_OK) {
    Status st = SqliteStatus(rc, db, "open " + path);
    sqlite3_close_v2(db);
    return st;
  }
  sqlite3_extended_result_codes(db, 1);
  if (mode != Mode::kReadOnly && sqlite3_db_readonly(db, "main") == 1) {
    // SQLite quietly falls back to read-only when it cannot open the file for writing; every
    // write would then fail until a restart, so say so now.
    sqlite3_close_v2(db);
    return Status::IoError(
        path + " can only be opened read-only: its filesystem is mounted read-only, or the file "
        "or its folder is not writable by this user. The gateway writes this database: remount "
        "the folder read-write or fix its permissions, then start again");
  }
  return std::unique_ptr<SqliteDb>(new SqliteDb(db, path));
}

SqliteDb::~SqliteDb() {
  // close_v2 defers the close until every statement is finalized, so a leaked statement cannot
  // turn into a use-after-free; the WAL is checkpointed and removed if this is the last connection.
  sqlite3_close_v2(db_);
}

int64_t SqliteDb::Changes() const { return sqlite3_changes64(db_); }

Status SqliteDb::Exec(std::string_view sql) {
  std::string owned(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(db_, owned.c_str(), nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return Status::Ok();
  std::string what = "exec '" + owned.substr(0, 80) + "'";
  sqlite3_free(err);
  return SqliteStatus(rc, db_, what);
}

Result<Statement> SqliteDb::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return SqliteStatus(rc, db_, "prepare '" + std::string(sql.substr(0, 80)) + "'");
  }
  return Statement(db_, stmt);
}

Result<Statement*> SqliteDb::Cached(const std::string& sql) {
  auto it = cached_.find(sql);
  if (it == cached_.end()) {
    Result<Statement> stmt = Prepare(sql);
    if (!stmt.ok()) return stmt.status();
    it = cached_.emplace(sql, std::make_unique<Statement>(std::move(*stmt))).first;
  }
  it->second->Reset();
  return it->second.get();
}

Result<int64_t> SqliteDb::QueryInt(std::string_view sql) {
  Result<Statement> stmt = Prepare(sql);
  if (!stmt.ok()) return stmt.status();
  Result<bool> row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) return Status::NotFound("no row from '" + std::string(sql) + "'");
  return stmt->ColumnInt(0);
}

Result<std::string> SqliteDb::QueryText(std::string_view sql) {
  Result<Statement> stmt = Prepare(sql);
  if (!stmt.ok()) return stmt.status();
  Result<bool> row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) return Status::NotFound("no row from '" + std::string(sql) + "'");
  return stmt->ColumnText(0);
}

// --- WriteTransaction ---------------------------------------------------------------------------

namespace {

// BEGIN, COMMIT and ROLLBACK run on every write: prepared once per connection, not parsed each
// time.
Status RunCached(SqliteDb* db, const std::string& sql) {
  Result<Statement*> stmt = db->Cached(sql);
  if (!stmt.ok()) return stmt.status();
  Status st = (*stmt)->Run();
  (*stmt)->Reset();
  return st.ok() ? st : st.WithContext(sql);
}

}  // namespace

Result<WriteTransaction> WriteTransaction::Begin(SqliteDb* db) {
  static const std::string kBegin = "BEGIN IMMEDIATE";
  GW_RETURN_IF_ERROR(RunCached(db, kBegin));
  return WriteTransaction(db);
}

WriteTransaction::~WriteTransaction() {
  static const std::string kRollback = "ROLLBACK";
  if (db_ != nullptr) (void)RunCached(db_, kRollback);
}

Status WriteTransaction::Commit() {
  static const std::string kCommit = "COMMIT";
  if (db_ == nullptr) return Status::FailedPrecondition("transaction already finished");
  Status st = RunCached(db_, kCommit);
  if (st.ok()) db_ = nullptr;  // on failure the destructor rolls back
  return st;
}

}  // namespace services
