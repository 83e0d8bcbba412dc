#ifndef GATEWAY_SPIN_GATE_H_
#define GATEWAY_SPIN_GATE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace gateway {

// Decides when the event loop may spin: keep polling its sockets without sleeping for a short
// window after each request, so that the next request of a client in a request/reply loop is
// read without a wake-up. A sleeping loop costs every request two scheduler wake-ups (the
// client's write wakes the loop, the reply wakes the client), and on a virtual machine each is an
// interrupt through the hypervisor: tens of microseconds of CPU and latency.
//
// Spinning only pays while the CPU it burns would otherwise be idle. The gate samples the number
// of tasks runnable on the machine (at most once a millisecond, from /proc/loadavg) into a
// running average, and allows spinning only while that average is at most the number of CPUs
// the process may use (plus a half, so the spinner and one busy client still fit on 2 CPUs),
// counting a container's CPU quota.
// With more runnable tasks than CPUs, a spinning loop would take the CPU its clients need.
class SpinGate {
 public:
  // Tasks runnable now, or nullopt when that cannot be read (the gate then stays shut).
  using RunnableReader = std::function<std::optional<double>()>;

  SpinGate(uint64_t spin_ns, int cpus, RunnableReader runnable);

  // Bytes arrived at now_ns: a new spin window starts. Returns whether the loop may spin (then
  // it asks KeepSpinning() on each turn).
  bool OnActivity(uint64_t now_ns);
  // Whether a loop that is spinning should go on at now_ns.
  bool KeepSpinning(uint64_t now_ns) const { return now_ns - last_activity_ns_ <= spin_ns_; }
  bool cpu_free() const { return cpu_free_; }

  // The CPUs this process may use: `affinity` (sched_getaffinity's count) cut to the CPU quota
  // of its cgroup, rounded up. `cpu_max` is cgroup v2's cpu.max ("max 100000", "150000 100000");
  // `cfs_quota` and `cfs_period` are cgroup v1's cpu.cfs_quota_us ("-1": none) and
  // cpu.cfs_period_us. Empty strings mean the file was not there.
  static int CpuBudget(int affinity, const std::string& cpu_max, const std::string& cfs_quota,
                       const std::string& cfs_period);
  // CpuBudget() of this process, from /sys/fs/cgroup.
  static int ReadCpuBudget(int affinity);

  // Reads the runnable count from /proc/loadavg ("0.91 1.20 1.50 2/345 12345": the 2). Opens
  // the file once and keeps it; returns a reader that gives nullopt if it cannot be read.
  static RunnableReader LoadavgReader();

 private:
  static constexpr uint64_t kSampleEveryNs = 1'000'000;
  static constexpr double kWeight = 0.25;  // of each new sample in the running average

  uint64_t spin_ns_;
  double cpus_;
  RunnableReader runnable_;
  uint64_t last_activity_ns_ = 0;
  uint64_t sampled_at_ns_ = 0;
  bool sampled_ = false;
  double runnable_avg_ = 0;
  bool cpu_free_ = false;
};

}  // namespace gateway

#endif  // GATEWAY_SPIN_GATE_H_
