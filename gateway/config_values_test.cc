#include "gateway/config_values.h"

#include <gtest/gtest.h>

#include <map>

namespace gateway {
namespace {

TEST(ParseSizeTest, AcceptsUnits) {
  const std::pair<const char*, int64_t> cases[] = {
      {"0", 0},
      {"512", 512},
      {"512B", 512},
      {"64KiB", 64 << 10},
      {"128MiB", 128 << 20},
      {"1GiB", 1ll << 30},
      {"2TiB", 2ll << 40},
      {"10MB", 10'000'000},
      {"1kb", 1000},
      {"1.5GiB", 3ll << 29},
      {"128mib", 128 << 20},
      {"4 KiB", 4096},
  };
  for (const auto& [text, want] : cases) {
    auto got = ParseSize(text);
    ASSERT_TRUE(got.ok()) << text << ": " << got.status().ToString();
    EXPECT_EQ(*got, want) << text;
  }
}

TEST(ParseSizeTest, RejectsNonsense) {
  for (const char* text : {"", "MiB", "12 parsecs", "-1", "1.5B", "1e99GiB", "1..2"}) {
    auto got = ParseSize(text);
    EXPECT_FALSE(got.ok()) << text;
  }
  EXPECT_NE(ParseSize("12XB").status().message().find("128MiB"), std::string::npos);
}

TEST(ParseDurationTest, AcceptsUnitsAndSums) {
  const std::pair<const char*, int64_t> cases[] = {
      {"250ms", 250},     {"1s", 1000},        {"1.5s", 1500},       {"10m", 600'000},
      {"6h", 21'600'000}, {"7d", 604'800'000}, {"1h30m", 5'400'000}, {"1m30s", 90'000},
  };
  for (const auto& [text, want] : cases) {
    auto got = ParseDurationMs(text);
    ASSERT_TRUE(got.ok()) << text << ": " << got.status().ToString();
    EXPECT_EQ(*got, want) << text;
  }
  for (const char* text : {"", "1", "s", "1y", "1 s x", "-1s"}) {
    EXPECT_FALSE(ParseDurationMs(text).ok()) << text;
  }
}

TEST(ParseFileModeTest, OctalOnly) {
  EXPECT_EQ(*ParseFileMode("0660"), 0660u);
  EXPECT_EQ(*ParseFileMode("600"), 0600u);
  EXPECT_FALSE(ParseFileMode("0688").ok());
  EXPECT_FALSE(ParseFileMode("01777").ok());
  EXPECT_FALSE(ParseFileMode("").ok());
}

TEST(ExpandEnvTest, ExpandsEscapesAndNamesMissingVariables) {
  std::map<std::string, std::string> env = {{"USER_", "ann"}, {"EMPTY", ""}};
  EnvLookup lookup = [&](const std::string& k) -> std::optional<std::string> {
    auto it = env.find(k);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  EXPECT_EQ(*ExpandEnv("/home/${USER_}/x", lookup), "/home/ann/x");
  EXPECT_EQ(*ExpandEnv("a${EMPTY}b", lookup), "ab");
  EXPECT_EQ(*ExpandEnv("cost $$5 and $x", lookup), "cost $5 and $x");
  auto missing = ExpandEnv("${NOPE_NOT_SET}", lookup);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("NOPE_NOT_SET"), std::string::npos);
  EXPECT_FALSE(ExpandEnv("${UNCLOSED", lookup).ok());
  EXPECT_FALSE(ExpandEnv("${}", lookup).ok());
}

TEST(FormatTest, RoundTripsThroughParsers) {
  for (int64_t v : {0ll, 1500ll, 1024ll, 128ll << 20, 3ll << 30}) {
    EXPECT_EQ(*ParseSize(FormatSize(v)), v);
  }
  for (int64_t v : {1ll, 1500ll, 60'000ll, 21'600'000ll, 86'400'000ll}) {
    EXPECT_EQ(*ParseDurationMs(FormatDurationMs(v)), v);
  }
}

}  // namespace
}  // namespace gateway
