#include "services/queue/cron.h"

#include <charconv>
#include <ctime>
#include <vector>

namespace services::queue {
namespace {

constexpr int64_t kMinuteMs = 60'000;
constexpr int64_t kDayMs = 86'400'000;
constexpr int kSearchDays = 366 * 5;

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

bool ParseInt(std::string_view s, int* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Sets bits lo..hi of one field from its text; false on a syntax or range error.
template <size_t N>
bool ParseField(std::string_view text, int lo, int hi, std::bitset<N>* bits, bool* any) {
  *any = text == "*";
  for (std::string_view part : Split(text, ',')) {
    int step = 1;
    std::vector<std::string_view> by_step = Split(part, '/');
    if (by_step.size() > 2) return false;
    if (by_step.size() == 2 && (!ParseInt(by_step[1], &step) || step < 1)) return false;
    int first = lo, last = hi;
    std::string_view range = by_step[0];
    if (range != "*") {
      std::vector<std::string_view> ends = Split(range, '-');
      if (ends.size() > 2 || !ParseInt(ends[0], &first)) return false;
      last = first;
      if (ends.size() == 2 && !ParseInt(ends[1], &last)) return false;
      if (by_step.size() == 2 && ends.size() == 1) last = hi;  // "5/15" means 5-hi/15
    }
    if (first < lo || last > hi || first > last) return false;
    for (int v = first; v <= last; v += step) bits->set(static_cast<size_t>(v));
  }
  return true;
}

}  // namespace

Result<CronSchedule> CronSchedule::Parse(std::string_view expression) {
  CronSchedule c;
  c.expression_.assign(expression);
  std::vector<std::string_view> fields;
  for (std::string_view f : Split(expression, ' ')) {
    if (!f.empty()) fields.push_back(f);
  }
  const std::string bad = "cron expression \"" + c.expression_ + "\" ";
  if (fields.size() != 5) {
    return Status::InvalidArgument(bad + "must have 5 fields: minute hour day-of-month month "
                                   "day-of-week, e.g. \"*/5 * * * *\"");
  }
  bool ignored = false;
  const struct {
    bool ok;
    const char* name;
  } checks[] = {
      {ParseField(fields[0], 0, 59, &c.minutes_, &ignored), "minute (0-59)"},
      {ParseField(fields[1], 0, 23, &c.hours_, &ignored), "hour (0-23)"},
      {ParseField(fields[2], 1, 31, &c.mdays_, &c.mday_any_), "day of month (1-31)"},
      {ParseField(fields[3], 1, 12, &c.months_, &ignored), "month (1-12)"},
      {ParseField(fields[4], 0, 7, &c.wdays_, &c.wday_any_), "day of week (0-7)"},
  };
  for (const auto& check : checks) {
    if (!check.ok) {
      return Status::InvalidArgument(bad + "has a bad " + check.name +
                                     " field; use *, n, a-b, */n or lists of them");
    }
  }
  if (c.wdays_.test(7)) c.wdays_.set(0);
  return c;
}

bool CronSchedule::MatchesDay(int mday, int month, int wday) const {
  if (!months_.test(static_cast<size_t>(month))) return false;
  const bool m = mdays_.test(static_cast<size_t>(mday));
  const bool w = wdays_.test(static_cast<size_t>(wday));
  if (mday_any_ || wday_any_) return m && w;
  return m || w;
}

std::optional<int64_t> CronSchedule::Next(int64_t after_ms) const {
  // Start at the next whole minute, then walk day by day; within a matching day the first
  // matching hour and minute at or after the start is the answer.
  int64_t start = (after_ms / kMinuteMs + 1) * kMinuteMs;
  for (int d = 0; d <= kSearchDays; ++d) {
    const int64_t day_start = (start / kDayMs) * kDayMs;
    const time_t secs = static_cast<time_t>(day_start / 1000);
    std::tm tm;
    gmtime_r(&secs, &tm);
    if (MatchesDay(tm.tm_mday, tm.tm_mon + 1, tm.tm_wday)) {
      const int from_minute = static_cast<int>((start - day_start) / kMinuteMs);
      for (int m = from_minute; m < 24 * 60; ++m) {
        if (hours_.test(static_cast<size_t>(m / 60)) && minutes_.test(static_cast<size_t>(m % 60))) {
          return day_start + m * kMinuteMs;
        }
      }
    }
    start = day_start + kDayMs;
  }
  return std::nullopt;
}

std::optional<int64_t> CronSchedule::Previous(int64_t at_ms) const {
  int64_t end = (at_ms / kMinuteMs) * kMinuteMs;  // inclusive
  for (int d = 0; d <= kSearchDays; ++d) {
    const int64_t day_start = (end / kDayMs) * kDayMs;
    const time_t secs = static_cast<time_t>(day_start / 1000);
    std::tm tm;
    gmtime_r(&secs, &tm);
    if (MatchesDay(tm.tm_mday, tm.tm_mon + 1, tm.tm_wday)) {
      for (int m = static_cast<int>((end - day_start) / kMinuteMs); m >= 0; --m) {
        if (hours_.test(static_cast<size_t>(m / 60)) && minutes_.test(static_cast<size_t>(m % 60))) {
          return day_start + m * kMinuteMs;
        }
      }
    }
    end = day_start - kMinuteMs;
  }
  return std::nullopt;
}

}  // namespace services::queue
