// CronSchedule: a five-field cron expression ("*/5 * * * *"), evaluated in UTC.
//
// Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12), day of week (0-7, 0 and
// 7 are Sunday). Each field is "*", a number, a range "a-b", any of those with a step "/n", or a
// comma-separated list of them. As in classic cron, when both day fields are restricted a day
// matches if either does.
// Threads: immutable after Parse; safe from any thread.
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "services/status.h"

namespace services::queue {

class CronSchedule {
 public:
  static Result<CronSchedule> Parse(std::string_view expression);

  // The first slot strictly after `after_ms` (Unix ms), on a whole minute; nullopt if none within
  // five years (e.g. "0 0 31 2 *").
  std::optional<int64_t> Next(int64_t after_ms) const;
  // The last slot at or before `at_ms`; nullopt if none within the last five years.
  std::optional<int64_t> Previous(int64_t at_ms) const;

  const std::string& expression() const { return expression_; }

 private:
  bool MatchesDay(int mday, int month, int wday) const;

  std::string expression_;
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> mdays_;
  std::bitset<13> months_;
  std::bitset<8> wdays_;
  bool mday_any_ = true;
  bool wday_any_ = true;
};

}  // namespace services::queue
