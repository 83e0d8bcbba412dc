#include "services/queue/job.h"

#include <openssl/rand.h>

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

std::string RandomId() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    // OpenSSL's generator failed (it should not); fall back to the OS through random_device.
    std::random_device rd;
    for (unsigned char& b : bytes) b = static_cast<unsigned char>(rd());
  }
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(32);
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

}  // namespace services::queue
