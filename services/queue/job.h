// Job: one task call in the queue, as stored. See gateway/PROTOCOL.md "Queue operations".
//
// Arguments, keyword arguments and return values are opaque bytes here (the protocol layer stores
// them msgpack-encoded); services never look inside them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace services::queue {

// SCHEDULED is not stored: it is a READY job whose run_after is still in the future.
enum class JobState { kScheduled, kReady, kRunning, kSuccessful, kFailed, kCancelled };
std::string_view StateName(JobState state);
std::optional<JobState> ParseState(std::string_view name);
inline bool IsFinished(JobState s) {
  return s == JobState::kSuccessful || s == JobState::kFailed || s == JobState::kCancelled;
}

struct JobAttempt {
  int64_t attempt = 0;
  std::string worker_id;
  int64_t started_at_ms = 0;
  std::optional<int64_t> finished_at_ms;
  std::string outcome;  // "" while running, "successful", "failed", "lease_expired", "cancelled"
  std::string exception_class_path;
  std::string traceback;
};

struct Job {
  std::string id;
  int64_t seq = 0;  // enqueue order
  std::string queue = "default";
  std::string task;
  std::string args;    // opaque (msgpack array)
  std::string kwargs;  // opaque (msgpack map)
  int64_t priority = 0;
  std::optional<int64_t> run_after_ms;
  int64_t max_attempts = 1;
  int64_t attempts = 0;
  double backoff_seconds = 1.0;
  JobState state = JobState::kReady;  // as stored: never kScheduled
  int64_t enqueued_at_ms = 0;
  std::optional<int64_t> started_at_ms;
  std::optional<int64_t> finished_at_ms;
  std::optional<int64_t> last_attempted_at_ms;
  std::optional<std::string> lease_token;
  std::optional<int64_t> lease_expires_at_ms;
  std::optional<std::string> worker_id;  // of the current or last attempt
  std::optional<std::string> return_value;  // opaque
  std::optional<std::string> unique_key;
  std::vector<JobAttempt> history;  // filled by JobStore::Get

  // The state a client sees at `now_ms`: READY with a future run_after is SCHEDULED.
  JobState VisibleState(int64_t now_ms) const {
    if (state == JobState::kReady && run_after_ms && *run_after_ms > now_ms) {
      return JobState::kScheduled;
    }
    return state;
  }
};

// 32 random hex characters, for lease tokens and other markers.
std::string RandomId();
// A job id: 32 hex characters, the first 12 the enqueue time in Unix ms and the rest random (80
// bits). Jobs enqueued together get ids that sort together, so the rows and attempt records of
// jobs that are claimed and finished together share B-tree pages instead of each dirtying its
// own page in every commit.
std::string NewJobId(int64_t now_ms);

}  // namespace services::queue
