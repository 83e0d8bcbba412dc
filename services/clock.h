// Clock: the one source of time for services, injectable so TTLs, leases and schedules can be
// tested without sleeping.
//
// Thread safety: SystemClock is stateless and safe from any thread. ManualClock is safe from any
// thread (its time is atomic); tests move it forward explicitly.
#pragma once

#include <atomic>
#include <cstdint>

namespace services {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time, microseconds since the Unix epoch. May jump (NTP); use for stored timestamps.
  virtual int64_t NowUnixMicros() const = 0;
  // Monotonic time in microseconds from an arbitrary origin. Never goes backwards; use for
  // durations and deadlines inside one process run.
  virtual int64_t MonotonicMicros() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t NowUnixMicros() const override;
  int64_t MonotonicMicros() const override;
  // A process-wide instance; never destroyed.
  static SystemClock* Default();
};

// A clock that moves only when told to. Both readings advance together.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t unix_micros = 1'700'000'000'000'000) : unix_(unix_micros) {}
  int64_t NowUnixMicros() const override { return unix_.load(); }
  int64_t MonotonicMicros() const override { return mono_.load(); }
  void Advance(int64_t micros) {
    unix_ += micros;
    mono_ += micros;
  }

 private:
  std::atomic<int64_t> unix_;
  std::atomic<int64_t> mono_{0};
};

}  // namespace services
