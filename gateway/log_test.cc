#include "gateway/log.h"

#include <gtest/gtest.h>

namespace gateway {
namespace {

TEST(LogTest, LogfmtQuotesWhatWouldBreakTheLine) {
  EXPECT_EQ(FormatLogLine(false, LogLevel::kInfo, "listening",
                          {{"socket", "/run/gw.sock"}, {"conns", 3}}),
            "level=info event=listening socket=/run/gw.sock conns=3");
  EXPECT_EQ(FormatLogLine(false, LogLevel::kWarn, "oops", {{"error", "disk full\nnow"}, {"k", ""}}),
            "level=warn event=oops error=\"disk full\\nnow\" k=\"\"");
}

TEST(LogTest, JsonKeepsNumbersAsNumbers) {
  EXPECT_EQ(FormatLogLine(true, LogLevel::kError, "start_failed",
                          {{"error", "say \"hi\""}, {"pid", int64_t{42}}, {"lag", 0.5}}),
            "{\"level\":\"error\",\"event\":\"start_failed\",\"error\":\"say \\\"hi\\\"\","
            "\"pid\":42,\"lag\":0.5}");
}

}  // namespace
}  // namespace gateway
