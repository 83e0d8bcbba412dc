// Status and Result<T>: how every fallible call in services/, replica/ and gateway/ reports errors.
//
// Errors are values: no exception crosses a module boundary. A Status is cheap to copy when OK (no
// allocation) and carries a code plus a message meant for people ("what was wrong and what to
// do"). Result<T> holds either a T or a non-OK Status.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace services {

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,     // the caller passed something malformed; fix the input
    kNotFound,            // the thing asked for does not exist
    kAlreadyExists,       // creating something that is already there
    kFailedPrecondition,  // the system is not in a state where the call can work (e.g. locked)
    kBusy,                // a lock could not be taken in time; retrying may work
    kIoError,             // the operating system or SQLite failed to read or write
    kCorruption,          // stored data is damaged or not what it claims to be
    kInternal,            // a bug or an impossible state
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) { return Status(Code::kInvalidArgument, msg); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status AlreadyExists(std::string msg) { return Status(Code::kAlreadyExists, msg); }
  static Status FailedPrecondition(std::string m) { return Status(Code::kFailedPrecondition, m); }
  static Status Busy(std::string msg) { return Status(Code::kBusy, std::move(msg)); }
  static Status IoError(std::string msg) { return Status(Code::kIoError, std::move(msg)); }
  static Status Corruption(std::string msg) { return Status(Code::kCorruption, std::move(msg)); }
  static Status Internal(std::string msg) { return Status(Code::kInternal, std::move(msg)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "IO error: cannot open db/app.sqlite3: ..." (or "OK").
  std::string ToString() const;
  static std::string_view CodeName(Code code);

  // Returns a copy whose message is "<context>: <message>"; OK stays OK.
  Status WithContext(std::string_view context) const;

 private:
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  Code code_ = Code::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design, like absl::StatusOr
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    assert(!std::get<Status>(v_).ok() && "Result needs a value or a non-OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  // OK when a value is held.
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }

  // Precondition: ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace services

// Returns early from the enclosing function with the status of `expr` if it is not OK.
#define GW_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::services::Status gw_status_ = (expr);  \
    if (!gw_status_.ok()) return gw_status_; \
  } while (0)
