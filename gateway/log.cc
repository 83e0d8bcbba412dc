#include "gateway/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace gateway {
namespace {

std::atomic<bool> g_json{false};
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

void AppendJsonString(std::string* out, std::string_view s) {
  *out += '"';
  for (char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\t':
        *out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          *out += buf;
        } else {
          *out += c;
        }
    }
  }
  *out += '"';
}

// logfmt quotes values with spaces, quotes or '=' so each line splits unambiguously.
void AppendLogfmtValue(std::string* out, std::string_view s) {
  bool quote = s.empty();
  for (char c : s)
    quote |= c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x20;
  if (quote) {
    AppendJsonString(out, s);
  } else {
    *out += s;
  }
}

std::string ValueText(const LogField& f) {
  if (const auto* s = std::get_if<std::string>(&f.value)) return *s;
  if (const auto* i = std::get_if<int64_t>(&f.value)) return std::to_string(*i);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", std::get<double>(f.value));
  return buf;
}

void AppendField(std::string* out, bool json, std::string_view key, const LogField* f,
                 std::string_view text) {
  if (json) {
    *out += out->size() > 1 ? "," : "";
    AppendJsonString(out, key);
    *out += ':';
    if (f != nullptr && !std::holds_alternative<std::string>(f->value)) {
      *out += text;
    } else {
      AppendJsonString(out, text);
    }
  } else {
    *out += out->empty() ? "" : " ";
    *out += key;
    *out += '=';
    AppendLogfmtValue(out, text);
  }
}

std::string Timestamp() {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const std::time_t secs = system_clock::to_time_t(now);
  const auto millis = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm;
  gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(millis));
  return buf;
}

std::string Format(bool json, const std::string* ts, LogLevel level, std::string_view event,
                   std::initializer_list<LogField> fields) {
  std::string out = json ? "{" : "";
  if (ts != nullptr) AppendField(&out, json, "ts", nullptr, *ts);
  AppendField(&out, json, "level", nullptr, LevelName(level));
  AppendField(&out, json, "event", nullptr, event);
  for (const LogField& f : fields) AppendField(&out, json, f.key, &f, ValueText(f));
  if (json) out += '}';
  return out;
}

}  // namespace

void SetLogFormat(bool json) { g_json = json; }
void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }

bool ParseLogLevel(std::string_view text, LogLevel* out) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    if (text == LevelName(l)) {
      *out = l;
      return true;
    }
  }
  return false;
}

std::string FormatLogLine(bool json, LogLevel level, std::string_view event,
                          std::initializer_list<LogField> fields) {
  return Format(json, nullptr, level, event, fields);
}

void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) {
  if (static_cast<int>(level) < g_level.load()) return;
  const std::string ts = Timestamp();
  std::string line = Format(g_json.load(), &ts, level, event, fields);
  line += '\n';
  // One write per line, so lines from different threads never interleave.
  ssize_t ignored = write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace gateway
