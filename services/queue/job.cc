#include "services/queue/job.h"

#include <openssl/rand.h>

#include <algorithm>
#include <random>

namespace services::queue {

std::string_view StateName(JobState state) {
  switch (state) {
    case JobState::kScheduled: return "SCHEDULED";
    case JobState::kReady: return "READY";
    case JobState::kRunning: return "RUNNING";
    case JobState::kSuccessful: return "SUCCESSFUL";
    case JobState::kFailed: return "FAILED";
    case JobState::kCancelled: return "CANCELLED";
  }
  return "READY";
}

std::optional<JobState> ParseState(std::string_view name) {
  for (JobState s : {JobState::kScheduled, JobState::kReady, JobState::kRunning,
                     JobState::kSuccessful, JobState::kFailed, JobState::kCancelled}) {
    if (StateName(s) == name) return s;
  }
  return std::nullopt;
}

namespace {

void FillRandom(unsigned char* bytes, size_t n) {
  if (RAND_bytes(bytes, static_cast<int>(n)) != 1) {
    // OpenSSL's generator failed (it should not); fall back to the OS through random_device.
    std::random_device rd;
    for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<unsigned char>(rd());
  }
}

std::string Hex(const unsigned char* bytes, size_t n) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out += kHex[bytes[i] >> 4];
    out += kHex[bytes[i] & 15];
  }
  return out;
}

}  // namespace

std::string RandomId() {
  unsigned char bytes[16];
  FillRandom(bytes, sizeof bytes);
  return Hex(bytes, sizeof bytes);
}

std::string NewJobId(int64_t now_ms) {
  unsigned char bytes[16];
  const uint64_t ms = static_cast<uint64_t>(std::max<int64_t>(0, now_ms));
  for (int i = 0; i < 6; ++i) bytes[i] = static_cast<unsigned char>(ms >> (8 * (5 - i)));
  FillRandom(bytes + 6, sizeof bytes - 6);
  return Hex(bytes, sizeof bytes);
}

}  // namespace services::queue
