// JobStore: the SQL of the queue database: one function per change or query, no policy.
//
// Every function takes the connection to use. Changes are meant to run inside a transaction the
// caller owns (GroupCommitWriter's); queries may run on any connection.
// Threads: whichever thread owns the connection.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "services/queue/job.h"
#include "services/sqlite_db.h"
#include "services/status.h"

namespace services::queue {

Status InsertJob(SqliteDb* db, const Job& job);
// Marks the job RUNNING under a new lease (its attempt record is written when it ends).
Status StartAttempt(SqliteDb* db, const Job& job, int64_t now_ms);
Status ExtendLease(SqliteDb* db, const std::string& id, int64_t lease_expires_at_ms);
// Writes the record of attempt `attempt` of job `id`, which ends now, from the job's row.
Status FinishAttempt(SqliteDb* db, const std::string& id, int64_t attempt, int64_t now_ms,
                     const std::string& outcome, const std::string& exception_class_path,
                     const std::string& traceback);
Status MarkSuccessful(SqliteDb* db, const std::string& id, int64_t now_ms,
                      const std::optional<std::string>& return_value);
// Back to READY (run_after set for the retry), lease cleared.
Status MarkRetry(SqliteDb* db, const std::string& id, int64_t run_after_ms);
// Takes back an attempt that never started, as if the job had never been handed out: READY with
// the attempt count, worker and times of `before` (the job as it was before the claim).
Status UndoAttempt(SqliteDb* db, const Job& before);
Status MarkFinished(SqliteDb* db, const std::string& id, JobState state, int64_t now_ms);

Result<std::optional<Job>> GetJob(SqliteDb* db, const std::string& id);
// READY and RUNNING jobs, in enqueue order.
Result<std::vector<Job>> LoadActiveJobs(SqliteDb* db);
Result<int64_t> MaxSeq(SqliteDb* db);

Status SetPaused(SqliteDb* db, const std::string& queue, bool paused);
Result<std::set<std::string>> LoadPaused(SqliteDb* db);

// The last slot (Unix ms) enqueued for a recurring schedule, or nullopt.
Result<std::optional<int64_t>> LastSlot(SqliteDb* db, const std::string& name);
Status SetLastSlot(SqliteDb* db, const std::string& name, int64_t slot_ms);

// FAILED jobs (of `queue` if set, of `ids` if not empty) made READY with attempts reset.
Result<std::vector<Job>> RetryFailed(SqliteDb* db, const std::optional<std::string>& queue,
                                     const std::vector<std::string>& ids);
// Deletes finished jobs in `states` whose finished_at is before `cutoff_ms`; returns how many.
Result<int64_t> PruneFinished(SqliteDb* db, int64_t cutoff_ms, const std::vector<JobState>& states);
// Finished jobs counted per queue and state.
Result<std::map<std::string, std::map<JobState, int64_t>>> CountFinished(SqliteDb* db);

}  // namespace services::queue
