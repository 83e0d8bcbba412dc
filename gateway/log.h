// Structured logging: one line per event on stderr, as logfmt (`ts=... level=info event=listening
// socket=/run/gw.sock`) or JSON, chosen by [server] log_format.
//
// Never pass secrets as fields: nothing here can tell a secret from any other string.
// Threads: safe from any thread (each line is one write(2) of a prepared buffer).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

namespace gateway {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

struct LogField {
  LogField(std::string_view k, std::string_view v) : key(k), value(std::string(v)) {}
  LogField(std::string_view k, const char* v) : key(k), value(std::string(v)) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(v) {}
  LogField(std::string_view k, int64_t v) : key(k), value(v) {}
  LogField(std::string_view k, int v) : key(k), value(int64_t{v}) {}
  LogField(std::string_view k, uint64_t v) : key(k), value(static_cast<int64_t>(v)) {}
  LogField(std::string_view k, double v) : key(k), value(v) {}
  std::string_view key;
  std::variant<std::string, int64_t, double> value;
};

// Configures the process-wide logger; call before other threads start.
void SetLogFormat(bool json);
void SetLogLevel(LogLevel level);
bool ParseLogLevel(std::string_view text, LogLevel* out);

void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields = {});

// The line Log() would write, without the timestamp; for tests.
std::string FormatLogLine(bool json, LogLevel level, std::string_view event,
                          std::initializer_list<LogField> fields);

}  // namespace gateway
