#include "gateway/spin_gate.h"

#include <gtest/gtest.h>

#include <optional>

namespace gateway {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kUs = 1'000;

TEST(SpinGate, SpinsForTheWindowAfterEachRequestWhileCpusAreFree) {
  double runnable = 2;  // the loop and one client, on 2 CPUs
  SpinGate gate(100 * kUs, 2, [&] { return std::optional<double>(runnable); });
  uint64_t now = 5 * kMs;
  EXPECT_TRUE(gate.OnActivity(now));
  EXPECT_TRUE(gate.KeepSpinning(now + 100 * kUs));
  EXPECT_FALSE(gate.KeepSpinning(now + 101 * kUs));
  now += 60 * kUs;
  EXPECT_TRUE(gate.OnActivity(now));  // each request starts a new window
  EXPECT_TRUE(gate.KeepSpinning(now + 90 * kUs));
}

TEST(SpinGate, ShutsWhileMoreTasksAreRunnableThanCpus) {
  double runnable = 1;
  int reads = 0;
  SpinGate gate(100 * kUs, 2, [&] {
    ++reads;
    return std::optional<double>(runnable);
  });
  uint64_t now = kMs;
  EXPECT_TRUE(gate.OnActivity(now));
  // Eight busy clients: the running average passes 2.5 within a few samples.
  runnable = 9;
  int samples = 0;
  while (gate.OnActivity(now += kMs)) ++samples;
  EXPECT_LE(samples, 2);
  EXPECT_FALSE(gate.cpu_free());
  // Samples are taken at most once a millisecond, however many requests come.
  const int before = reads;
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(gate.OnActivity(now += 5 * kUs));
  EXPECT_LE(reads - before, 1);
  // Busy for a while longer, then quiet again: it opens after a few samples.
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(gate.OnActivity(now += kMs));
  runnable = 1;
  int closed_samples = 0;
  while (!gate.OnActivity(now += kMs)) ++closed_samples;
  EXPECT_GE(closed_samples, 3);
  EXPECT_LE(closed_samples, 12);
  EXPECT_TRUE(gate.cpu_free());
}

TEST(SpinGate, StaysShutWhenTheRunnableCountCannotBeRead) {
  SpinGate gate(100 * kUs, 2, [] { return std::optional<double>(); });
  EXPECT_FALSE(gate.OnActivity(kMs));
  EXPECT_FALSE(gate.OnActivity(3 * kMs));
  SpinGate no_reader(100 * kUs, 2, nullptr);
  EXPECT_FALSE(no_reader.OnActivity(kMs));
}

TEST(SpinGate, ReadsTheRunnableCountOfThisMachine) {
  SpinGate::RunnableReader read = SpinGate::LoadavgReader();
  std::optional<double> first = read();
  ASSERT_TRUE(first.has_value()) << "/proc/loadavg could not be read";
  EXPECT_GE(*first, 1.0);  // this thread is running while it reads
  SpinGate::RunnableReader copy = read;
  read = nullptr;  // the descriptor stays open while a copy of the reader lives
  EXPECT_TRUE(copy().has_value());
}

TEST(SpinGate, CpuBudgetCountsTheCgroupQuota) {
  EXPECT_EQ(SpinGate::CpuBudget(4, "", "", ""), 4);
  EXPECT_EQ(SpinGate::CpuBudget(4, "max 100000\n", "", ""), 4);
  EXPECT_EQ(SpinGate::CpuBudget(4, "150000 100000\n", "", ""), 2);  // 1.5 CPUs: rounded up
  EXPECT_EQ(SpinGate::CpuBudget(4, "100000 100000\n", "", ""), 1);
  EXPECT_EQ(SpinGate::CpuBudget(2, "800000 100000\n", "", ""), 2);  // never above the affinity
  EXPECT_EQ(SpinGate::CpuBudget(8, "", "-1\n", "100000\n"), 8);     // cgroup v1, no quota
  EXPECT_EQ(SpinGate::CpuBudget(8, "", "200000\n", "100000\n"), 2);
  EXPECT_EQ(SpinGate::CpuBudget(8, "garbage", "", ""), 8);
  EXPECT_EQ(SpinGate::CpuBudget(0, "", "", ""), 1);
  EXPECT_GE(SpinGate::ReadCpuBudget(2), 1);
  EXPECT_LE(SpinGate::ReadCpuBudget(2), 2);
}

}  // namespace
}  // namespace gateway
