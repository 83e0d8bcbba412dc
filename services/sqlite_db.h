// SqliteDb: one owned SQLite connection, with errors as Status and statements as RAII objects.
//
// Ownership: SqliteDb owns its sqlite3* and closes it in the destructor; Statement owns its
// sqlite3_stmt* and must not outlive the SqliteDb it came from.
// Threads: a SqliteDb and its statements are used by one thread at a time (SQLite is built
// serialized, but sharing one connection across threads serializes them and mixes transactions;
// give each thread its own SqliteDb).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "services/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace services {

class Statement {
 public:
  Statement() = default;
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Parameter indexes start at 1, as in sqlite3_bind_*.
  Status BindInt(int index, int64_t value);
  Status BindDouble(int index, double value);
  Status BindText(int index, std::string_view value);
  Status BindBlob(int index, std::string_view bytes);
  // Bind without a copy: the bytes must stay valid and unchanged until the statement is reset
  // (Reset clears every binding) or finalized.
  Status BindTextRef(int index, std::string_view value);
  Status BindBlobRef(int index, std::string_view bytes);
  Status BindNull(int index);

  // Advances one row. Returns true when a row is available, false when the statement is done.
  // Errors: kBusy when the database stayed locked past busy_timeout, kIoError/kCorruption from
  // SQLite, kFailedPrecondition for constraint violations.
  Result<bool> Step();
  // Runs the statement to completion, ignoring rows.
  Status Run();
  // Resets for another execution; bindings are cleared.
  void Reset();

  // Column indexes start at 0. Valid only after Step() returned true.
  int64_t ColumnInt(int index) const;
  double ColumnDouble(int index) const;
  std::string ColumnText(int index) const;
  std::string ColumnBlob(int index) const;
  bool ColumnIsNull(int index) const;
  // SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB or SQLITE_NULL.
  int ColumnType(int index) const;

 private:
  friend class SqliteDb;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Status BindTextOrBlob(int index, std::string_view bytes, bool text, bool copy);

  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

class SqliteDb {
 public:
  enum class Mode { kReadWriteCreate, kReadWrite, kReadOnly };

  // Opens (and with kReadWriteCreate creates) the database at `path`. The connection has extended
  // result codes on; nothing else is configured (see sqlite_tuning.h).
  static Result<std::unique_ptr<SqliteDb>> Open(const std::string& path, Mode mode);

  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;
  ~SqliteDb();

  // Runs one or more SQL statements that return no rows the caller needs.
  Status Exec(std::string_view sql);
  Result<Statement> Prepare(std::string_view sql);
  // A statement prepared once per connection and kept, reset and with bindings cleared. The
  // pointer stays valid for the life of this SqliteDb.
  Result<Statement*> Cached(const std::string& sql);

  // Runs a query whose first row's first column is an integer (or text); kNotFound if no row.
  Result<int64_t> QueryInt(std::string_view sql);
  Result<std::string> QueryText(std::string_view sql);

  const std::string& path() const { return path_; }
  sqlite3* raw() { return db_; }
  // Rows changed by the last INSERT, UPDATE or DELETE on this connection.
  int64_t Changes() const;

 private:
  SqliteDb(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

  sqlite3* db_;
  std::string path_;
  std::unordered_map<std::string, std::unique_ptr<Statement>> cached_;
};

// Turns a SQLite result code into a Status naming what failed ("step", "prepare", ...), with
// sqlite3_errmsg of `db` when given.
Status SqliteStatus(int rc, sqlite3* db, std::string_view what);

// A write transaction begun with BEGIN IMMEDIATE, so the write lock is taken up front and a
// concurrent writer waits in busy_timeout instead of failing later with SQLITE_BUSY on upgrade.
// Rolls back in the destructor unless Commit() succeeded.
class WriteTransaction {
 public:
  static Result<WriteTransaction> Begin(SqliteDb* db);
  WriteTransaction(WriteTransaction&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
  WriteTransaction& operator=(WriteTransaction&&) = delete;
  ~WriteTransaction();

  Status Commit();

 private:
  explicit WriteTransaction(SqliteDb* db) : db_(db) {}
  SqliteDb* db_;
};

}  // namespace services
