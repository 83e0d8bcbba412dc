// JobQueue: the job queue's logic. Jobs live in the queue database; the jobs that are not finished
// are also indexed in memory (ready jobs per queue by priority and enqueue order, plus one timer
// structure for run_after times, lease deadlines and waits), rebuilt from the database at start.
//
// Every change is written through a GroupCommitWriter and becomes visible in the index only after
// its transaction committed, so an acknowledged enqueue, claim or completion survives a crash and
// a failed write leaves the index as it was. Blocking dequeues and job waits are parked and
// answered by the event that satisfies them; nothing polls.
//
// Threads: JobQueue is confined to one owner thread (the event loop): call every method there.
// It reaches other threads only through Hooks: `post` must run the given function on the owner
// thread later (it is called from the writer thread), and `arm_timer` asks the owner to call
// OnTimer() at or after a Unix time in ms (each call replaces the previous request). With
// `flush_soon` set, writes are gathered and the owner is asked to call FlushWrites() at the end
// of the current turn of its loop, which commits them on the owner thread when the writer is idle
// (GroupCommitWriter::TryApplyNow) and hands them to the writer thread otherwise; without it every
// write goes to the writer thread. Callbacks run on the owner thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "services/clock.h"
#include "services/group_commit.h"
#include "services/queue/cron.h"
#include "services/queue/job.h"
#include "services/sqlite_db.h"
#include "services/sqlite_tuning.h"
#include "services/status.h"

namespace services::queue {

// Errors the callbacks report, as Status codes:
//   kNotFound            no job has this id
//   kFailedPrecondition  the job is not in a state where the request applies; when the request
//                        named a lease that is gone, IsLeaseLost() is true
//   others               the database failed and nothing was changed
bool IsLeaseLost(const Status& status);

class JobQueue {
 public:
  struct Hooks {
    std::function<void(std::function<void()>)> post;
    std::function<void(int64_t unix_ms)> arm_timer;
    std::function<void()> flush_soon;  // optional
  };
  struct Schedule {
    std::string name;
    CronSchedule cron;
    Job job;  // queue, task, args, kwargs, priority, max_attempts, backoff
  };
  struct DequeueRequest {
    std::vector<std::string> queues;
    std::string worker_id;
    size_t max_jobs = 1;
    int64_t lease_ms = 60'000;
    int64_t wait_ms = 0;
    // False once nobody waits for the answer (the client left); such a waiter gets no job.
    std::function<bool()> alive;
  };
  // A successful attempt reported together with a dequeue (CompleteAndDequeue).
  struct Completion {
    std::string id;
    std::string token;
    std::optional<std::string> return_value;  // msgpack bytes; nil when absent
  };
  // What CompleteAndDequeue did: the completion's outcome (ok: `completed` holds the stored
  // job; otherwise why it was refused, as Complete would have said) and the jobs handed out.
  struct CompletedAndDequeued {
    Status completion = Status::Ok();
    std::optional<Job> completed;
    std::vector<Job> jobs;
  };
  struct HeartbeatResult {
    bool cancelled = false;
    int64_t lease_expires_at_ms = 0;
  };
  struct Latency {
    int64_t count = 0;
    double p50 = 0, p99 = 0, max = 0;  // seconds
  };
  struct QueueStats {
    bool paused = false;
    std::map<JobState, int64_t> states;
    std::optional<double> oldest_ready_age;  // seconds
    Latency pickup;
  };
  template <typename T>
  using Callback = std::function<void(Result<T>)>;

  static Result<std::unique_ptr<JobQueue>> Open(const std::string& path, const SqliteTuning& tuning,
                                                const Clock* clock, Hooks hooks,
                                                std::vector<Schedule> schedules,
                                                int64_t truncate_wal_bytes = 0);
  ~JobQueue();
  // Finishes queued writes and stops the writer thread. Owner thread, after its loop has stopped.
  void Stop();

  // Fills id, seq, times and state of each job; the jobs' own fields are taken as validated.
  void Enqueue(std::vector<Job> jobs, Callback<std::vector<Job>> done);
  void Dequeue(DequeueRequest request, Callback<std::vector<Job>> done);
  // Complete followed by a dequeue that never waits (request.wait_ms is ignored), in one write:
  // the completion and the claim of the handed-out jobs commit together, so one commit serves
  // both. A refused completion (lease lost, no such job) changes nothing and the dequeue goes on
  // alone; a failed write (the Callback's error) applies neither and hands out nothing.
  void CompleteAndDequeue(Completion completion, DequeueRequest request,
                          Callback<CompletedAndDequeued> done);
  void Heartbeat(const std::string& id, const std::string& token, int64_t lease_ms,
                 Callback<HeartbeatResult> done);
  void Complete(const std::string& id, const std::string& token,
                std::optional<std::string> return_value, Callback<Job> done);
  void Fail(const std::string& id, const std::string& token, std::string exception_class_path,
            std::string traceback, bool retry, Callback<Job> done);
  // Gives back a job handed out by a prefetching dequeue that has not started (PROTOCOL.md
  // "Prefetch"): READY again as if never handed out. kFailedPrecondition (not lease lost) if it
  // has started.
  void Release(const std::string& id, const std::string& token, Callback<Job> done);
  void Cancel(const std::string& id, Callback<Job> done);
  Result<std::optional<Job>> Get(const std::string& id);
  void Wait(const std::string& id, int64_t timeout_ms, Callback<Job> done);
  Result<std::map<std::string, QueueStats>> Stats();
  void SetPaused(const std::string& queue, bool paused, Callback<bool> done);
  void RetryFailed(std::optional<std::string> queue, std::vector<std::string> ids,
                   Callback<int64_t> done);
  void Prune(int64_t older_than_ms, std::vector<JobState> states, Callback<int64_t> done);

  // The owner calls this when the time asked for by arm_timer has come.
  void OnTimer();
  // The owner calls this after flush_soon, at the end of its loop's turn: commits the writes
  // gathered since, and runs their callbacks.
  void FlushWrites();
  // Answers every parked dequeue (no jobs) and job wait (the job as it is now) at once; for a
  // server that is shutting down, so idle workers are not held until their waits end.
  void ReleaseWaiters();

 private:
  // Where an unfinished job is. Transitions (kCommitting, kClaiming, kFinishing) wait for a
  // write; requests about the job that arrive meanwhile are deferred until it lands.
  enum class Phase { kCommitting, kWaiting, kClaiming, kRunning, kFinishing };
  // The jobs of one dequeue answer with several, in order: reported[i] turns true once the
  // holder reported job i (completed or failed it). Job i has started once every job before it
  // was reported; the first has started when handed out.
  struct Handout {
    std::vector<bool> reported;
  };
  struct Active {
    Job job;
    Phase phase = Phase::kCommitting;
    bool in_ready = false;
    int64_t ready_since_us = 0;  // when it last became ready, for pickup latency
    // Enqueued by this process and never claimed: it has no stored attempts, so the job as
    // claimed in memory is the stored one and need not be read back.
    bool never_attempted = false;
    // Its current attempt is its only one, claimed by this process: memory holds all of its
    // stored history, so a success's answer is built without reading the job back.
    bool sole_attempt = false;
    std::vector<std::function<void()>> deferred;
    // Set while the job is handed out as one of several in one dequeue answer (a prefetch): the
    // answer's report flags and this job's place in it. `before_claim` is the job as it was
    // before that claim (for all but the first), to put it back should it never start.
    std::shared_ptr<Handout> handout;
    size_t handout_index = 0;
    std::optional<Job> before_claim;
  };
  struct ReadyKey {
    int64_t neg_priority;
    int64_t seq;
    std::string id;
    bool operator<(const ReadyKey& o) const {
      return neg_priority != o.neg_priority ? neg_priority < o.neg_priority : seq < o.seq;
    }
  };
  enum class TimerKind { kRunAfter, kLease, kDequeueWait, kJobWait, kSchedule };
  struct TimerItem {
    TimerKind kind;
    std::string id;       // job
    uint64_t waiter = 0;  // dequeue or job waiter
    size_t schedule = 0;  // index into schedules_
  };
  struct DequeueWaiter {
    uint64_t id;
    DequeueRequest request;
    Callback<std::vector<Job>> done;
  };
  struct JobWaiter {
    uint64_t id;
    Callback<Job> done;
  };

  JobQueue(const Clock* clock, Hooks hooks) : clock_(clock), hooks_(std::move(hooks)) {}
  Status Load();
  int64_t NowMs() const { return clock_->NowUnixMicros() / 1000; }
  // Runs `apply` in a group commit, then `then` on the owner thread with the outcome.
  void Write(std::function<Status(SqliteDb*)> apply, std::function<void(const Status&)> then);
  void AddTimer(int64_t at_ms, TimerItem item);
  void ArmNext();
  // Makes a waiting job ready now or at its run_after.
  void Place(Active* active);
  void EndTransition(Active* active, Phase phase);
  // Hands ready jobs to parked dequeues.
  void Dispatch();
  std::vector<std::string> Take(const DequeueRequest& request);
  void Claim(std::vector<std::string> ids, DequeueRequest request, Callback<std::vector<Job>> done);
  // The parts of a claim: the jobs as they will be once claimed, their rows' writes (in the
  // caller's transaction), and the index update and answer once that transaction is over.
  std::shared_ptr<std::vector<Job>> PrepareClaim(const std::vector<std::string>& ids,
                                                 const DequeueRequest& request, int64_t now);
  static Status WriteClaim(SqliteDb* db, const std::vector<Job>& claimed, int64_t now);
  void EndClaim(const std::shared_ptr<std::vector<Job>>& claimed, const Status& st,
                const Callback<std::vector<Job>>& done);
  static Status WriteSuccess(SqliteDb* db, const std::string& id, int64_t attempt, int64_t now,
                             const std::optional<std::string>& return_value);
  // The running job whose live lease is `token`; otherwise the reason as a Status.
  Result<Active*> Leased(const std::string& id, const std::string& token);
  // When `id` is mid-transition, queues `retry` to run after it and returns true.
  bool DeferIfBusy(const std::string& id, std::function<void()> retry);
  void EndAttempt(Active* active, std::string outcome, std::string exception_class_path,
                  std::string traceback, bool retry, Callback<Job> done);
  // Ends `id`'s life in the index and answers `done` and its waiters with `stored` (the job as
  // just stored), or with the job read back when that is not given.
  void Finished(const std::string& id, Callback<Job> done, std::optional<Job> stored = {});
  // The job as a success at `now` stores it, if memory knows all of it (see sole_attempt).
  static std::optional<Job> SucceededInMemory(const Active& a, int64_t now,
                                              const std::optional<std::string>& return_value);
  void ExpireLease(const std::string& id);
  // Prefetch: whether the holder has started this job (see Handout); a report marks it.
  static bool Started(const Active& a);
  static void MarkReported(Active* a);
  // Puts a handed-out job that never started back to READY as it was before its claim.
  void PutBack(Active* a, Callback<Job> done);
  void EnqueueSlot(size_t schedule, int64_t slot_ms);
  Result<Job> Reload(const std::string& id);
  int64_t RetryDelayMs(const Job& job);

  const Clock* clock_;
  Hooks hooks_;
  std::vector<Schedule> schedules_;
  std::unique_ptr<GroupCommitWriter> writer_;
  std::unique_ptr<SqliteDb> reader_;
  // Writes waiting for FlushWrites (only with hooks_.flush_soon), and what runs after each.
  std::vector<GroupCommitWriter::Apply> gathered_;
  std::vector<std::function<void(const Status&)>> gathered_then_;

  std::unordered_map<std::string, Active> active_;
  std::unordered_map<std::string, std::string> unique_;  // unique_key -> id of an active job
  std::map<std::string, std::set<ReadyKey>> ready_;
  std::multimap<int64_t, TimerItem> timers_;
  std::optional<int64_t> armed_at_;
  std::list<DequeueWaiter> dequeue_waiters_;
  std::unordered_map<std::string, std::vector<JobWaiter>> job_waiters_;
  std::set<std::string> paused_;
  std::map<std::string, std::deque<double>> pickup_samples_;
  int64_t next_seq_ = 1;
  uint64_t next_waiter_ = 1;
};

}  // namespace services::queue
