#include "gateway/spin_gate.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
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
