#include "gateway/spin_gate.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

namespace gateway {

SpinGate::SpinGate(uint64_t spin_ns, int cpus, RunnableReader runnable)
    : spin_ns_(spin_ns), cpus_(cpus > 0 ? cpus : 1), runnable_(std::move(runnable)) {}

bool SpinGate::OnActivity(uint64_t now_ns) {
  last_activity_ns_ = now_ns;
  if (!sampled_ || now_ns - sampled_at_ns_ >= kSampleEveryNs) {
    std::optional<double> runnable = runnable_ ? runnable_() : std::nullopt;
    if (!runnable) {
      cpu_free_ = false;
    } else {
      runnable_avg_ = sampled_ ? runnable_avg_ + (*runnable - runnable_avg_) * kWeight : *runnable;
      cpu_free_ = runnable_avg_ <= cpus_ + 0.5;
    }
    sampled_ = true;
    sampled_at_ns_ = now_ns;
  }
  return cpu_free_;
}

namespace {

// A whole file's text, or "" if it cannot be read.
std::string ReadSmallFile(const char* path) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[256];
  const ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// ceil(quota / period) for positive numbers; 0 when there is no quota or the text is not one.
int QuotaCpus(const std::string& quota, const std::string& period) {
  char* end = nullptr;
  const long long q = std::strtoll(quota.c_str(), &end, 10);
  if (end == quota.c_str() || q <= 0) return 0;
  const long long p = std::strtoll(period.c_str(), &end, 10);
  if (end == period.c_str() || p <= 0) return 0;
  return static_cast<int>((q + p - 1) / p);
}

}  // namespace

int SpinGate::CpuBudget(int affinity, const std::string& cpu_max, const std::string& cfs_quota,
                        const std::string& cfs_period) {
  int cpus = affinity > 0 ? affinity : 1;
  int quota = 0;
  if (!cpu_max.empty()) {
    const size_t space = cpu_max.find(' ');
    if (space != std::string::npos) {
      quota = QuotaCpus(cpu_max.substr(0, space), cpu_max.substr(space + 1));
    }
  } else if (!cfs_quota.empty()) {
    quota = QuotaCpus(cfs_quota, cfs_period);
  }
  return quota > 0 && quota < cpus ? quota : cpus;
}

int SpinGate::ReadCpuBudget(int affinity) {
  return CpuBudget(affinity, ReadSmallFile("/sys/fs/cgroup/cpu.max"),
                   ReadSmallFile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                   ReadSmallFile("/sys/fs/cgroup/cpu/cpu.cfs_period_us"));
}

SpinGate::RunnableReader SpinGate::LoadavgReader() {
  // The descriptor is closed when the last copy of the reader goes.
  std::shared_ptr<int> fd(new int(open("/proc/loadavg", O_RDONLY | O_CLOEXEC)), [](int* p) {
    if (*p >= 0) close(*p);
    delete p;
  });
  return [fd]() -> std::optional<double> {
    if (*fd < 0) return std::nullopt;
    char buf[128];
    const ssize_t n = pread(*fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return std::nullopt;
    buf[n] = '\0';
    // Skip the three load averages to the "running/total" field.
    const char* p = buf;
    for (int field = 0; field < 3; ++field) {
      while (*p != '\0' && *p != ' ') ++p;
      while (*p == ' ') ++p;
    }
    char* end = nullptr;
    const unsigned long running = std::strtoul(p, &end, 10);
    if (end == p || *end != '/') return std::nullopt;
    return static_cast<double>(running);
  };
}

}  // namespace gateway
