#include "services/queue/job_queue.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "services/queue/job_store.h"

namespace services::queue {
namespace {

constexpr char kLeaseLost[] = "lease lost: ";
constexpr int64_t kMaxBackoffMs = 3'600'000;
constexpr size_t kLatencySamples = 1000;

bool Transitional(int phase) { return phase == 0 || phase == 2 || phase == 4; }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

bool IsLeaseLost(const Status& status) {
  return status.code() == Status::Code::kFailedPrecondition &&
         status.message().rfind(kLeaseLost, 0) == 0;
}

Result<std::unique_ptr<JobQueue>> JobQueue::Open(const std::string& path,
                                                 const SqliteTuning& tuning, const Clock* clock,
                                                 Hooks hooks, std::vector<Schedule> schedules,
                                                 int64_t truncate_wal_bytes) {
  std::unique_ptr<JobQueue> q(new JobQueue(clock, std::move(hooks)));
  q->schedules_ = std::move(schedules);
  Result<std::unique_ptr<SqliteDb>> reader = SqliteDb::Open(path, SqliteDb::Mode::kReadWrite);
  if (!reader.ok()) return reader.status().WithContext("queue");
  GW_RETURN_IF_ERROR(ApplyTuning(reader->get(), tuning).WithContext("queue"));
  // This connection re-reads a job right after the writer changed it. With a memory map, SQLite
  // drops and remaps the file on nearly every such read (a munmap and page faults per job in
  // profiles of a drain); plain reads of the few pages a job needs are cheaper.
  GW_RETURN_IF_ERROR((*reader)->Exec("PRAGMA mmap_size = 0").WithContext("queue"));
  // For the same reason its page cache is emptied before nearly every read, and emptying costs
  // time in proportion to how large the cache once grew (a scan of the whole table for stats
  // grows it): a few hundred KiB hold the pages a job read needs.
  GW_RETURN_IF_ERROR((*reader)->Exec("PRAGMA cache_size = -256").WithContext("queue"));
  q->reader_ = std::move(*reader);
  Result<std::unique_ptr<GroupCommitWriter>> writer =
      GroupCommitWriter::Start(path, tuning, 512, truncate_wal_bytes);
  if (!writer.ok()) return writer.status().WithContext("queue writer");
  q->writer_ = std::move(*writer);
  GW_RETURN_IF_ERROR(q->Load().WithContext("queue"));
  return q;
}

JobQueue::~JobQueue() { Stop(); }

void JobQueue::Stop() {
  if (!writer_) return;
  // Nothing gathered may be dropped (a cron slot's record, say): the writer applies it.
  auto post = hooks_.post;
  for (size_t i = 0; i < gathered_.size(); ++i) {
    writer_->Submit(std::move(gathered_[i]),
                    [post, then = std::move(gathered_then_[i])](const Status& st) {
                      post([then, st] { then(st); });
                    });
  }
  gathered_.clear();
  gathered_then_.clear();
  writer_->Stop();
}

Status JobQueue::Load() {
  Result<std::vector<Job>> jobs = LoadActiveJobs(reader_.get());
  if (!jobs.ok()) return jobs.status();
  Result<int64_t> seq = MaxSeq(reader_.get());
  if (!seq.ok()) return seq.status();
  next_seq_ = *seq + 1;
  Result<std::set<std::string>> paused = LoadPaused(reader_.get());
  if (!paused.ok()) return paused.status();
  paused_ = std::move(*paused);
  const int64_t now = NowMs();
  for (Job& job : *jobs) {
    const std::string id = job.id;
    if (job.unique_key) unique_[*job.unique_key] = id;
    Active& a = active_[id];
    a.job = std::move(job);
    if (a.job.state == JobState::kRunning) {
      // The worker may still be at it (only the gateway restarted): its lease stands.
      a.phase = Phase::kRunning;
      AddTimer(a.job.lease_expires_at_ms.value_or(now), {TimerKind::kLease, id});
    } else {
      a.phase = Phase::kWaiting;
      Place(&a);
    }
  }
  for (size_t i = 0; i < schedules_.size(); ++i) {
    const Schedule& s = schedules_[i];
    Result<std::optional<int64_t>> last = LastSlot(reader_.get(), s.name);
    if (!last.ok()) return last.status();
    // After downtime only the most recent missed slot runs, once. A schedule seen for the first
    // time starts with its next slot: a daily 03:00 job added at 10:00 does not run at once.
    std::optional<int64_t> previous = s.cron.Previous(now);
    if (previous && *last && **last < *previous) EnqueueSlot(i, *previous);
    if (previous && !*last) {
      const std::string name = s.name;
      const int64_t slot = *previous;
      Write([name, slot](SqliteDb* db) { return SetLastSlot(db, name, slot); },
            [](const Status&) {});
    }
    if (std::optional<int64_t> next = s.cron.Next(now)) {
      AddTimer(*next, {TimerKind::kSchedule, "", 0, i});
    }
  }
  ArmNext();
  return Status::Ok();
}

void JobQueue::Write(std::function<Status(SqliteDb*)> apply,
                     std::function<void(const Status&)> then) {
  if (hooks_.flush_soon) {
    gathered_.push_back(std::move(apply));
    gathered_then_.push_back(std::move(then));
    // Once per batch; after it the owner may flush at once (at shutdown), so the write is in.
    if (gathered_.size() == 1) hooks_.flush_soon();
    return;
  }
  auto post = hooks_.post;
  writer_->Submit(std::move(apply), [post, then = std::move(then)](const Status& st) {
    post([then, st] { then(st); });
  });
}

void JobQueue::FlushWrites() {
  std::vector<GroupCommitWriter::Apply> applies;
  std::vector<std::function<void(const Status&)>> thens;
  applies.swap(gathered_);
  thens.swap(gathered_then_);
  if (applies.empty()) return;
  if (std::optional<Status> st = writer_->TryApplyNow(applies)) {
    // Callbacks may write again: that gathers for the next flush.
    for (auto& then : thens) then(*st);
    return;
  }
  auto post = hooks_.post;
  for (size_t i = 0; i < applies.size(); ++i) {
    writer_->Submit(std::move(applies[i]), [post, then = std::move(thens[i])](const Status& st) {
      post([then, st] { then(st); });
    });
  }
}

void JobQueue::AddTimer(int64_t at_ms, TimerItem item) {
  timers_.emplace(at_ms, std::move(item));
  if (!armed_at_ || at_ms < *armed_at_) {
    armed_at_ = at_ms;
    hooks_.arm_timer(at_ms);
  }
}

void JobQueue::ArmNext() {
  if (timers_.empty()) {
    armed_at_.reset();
    return;
  }
  const int64_t at = timers_.begin()->first;
  if (armed_at_ != at) {
    armed_at_ = at;
    hooks_.arm_timer(at);
  }
}

void JobQueue::Place(Active* a) {
  a->handout.reset();  // a job waiting to run is nobody's
  a->before_claim.reset();
  const Job& j = a->job;
  if (j.run_after_ms && *j.run_after_ms > NowMs()) {
    AddTimer(*j.run_after_ms, {TimerKind::kRunAfter, j.id});
    return;
  }
  ready_[j.queue].insert({-j.priority, j.seq, j.id});
  a->in_ready = true;
  // Ready since now, unless it was due well before (a job that waited through a restart, or a
  // run_after timer that fired late): then since its due time.
  const int64_t due_us = std::max(j.enqueued_at_ms, j.run_after_ms.value_or(0)) * 1000;
  const int64_t now_us = clock_->NowUnixMicros();
  a->ready_since_us = due_us + 1000 > now_us ? now_us : due_us;
}

void JobQueue::EndTransition(Active* a, Phase phase) {
  a->phase = phase;
  std::vector<std::function<void()>> deferred;
  deferred.swap(a->deferred);
  for (auto& retry : deferred) retry();  // may erase *a
}

bool JobQueue::DeferIfBusy(const std::string& id, std::function<void()> retry) {
  auto it = active_.find(id);
  if (it == active_.end() || !Transitional(static_cast<int>(it->second.phase))) return false;
  it->second.deferred.push_back(std::move(retry));
  return true;
}

// --- enqueue -------------------------------------------------------------------------------------

void JobQueue::Enqueue(std::vector<Job> jobs, Callback<std::vector<Job>> done) {
  const int64_t now = NowMs();
  std::vector<Job> results;
  std::vector<Job> inserts;
  std::vector<std::string> reserved;
  for (Job& job : jobs) {
    if (job.unique_key) {
      auto existing = unique_.find(*job.unique_key);
      if (existing != unique_.end()) {
        results.push_back(active_.at(existing->second).job);
        continue;
      }
    }
    job.id = NewJobId(now);
    job.seq = next_seq_++;
    job.enqueued_at_ms = now;
    job.state = JobState::kReady;
    job.attempts = 0;
    Active& a = active_[job.id];
    a.job = job;
    a.phase = Phase::kCommitting;
    a.never_attempted = true;
    if (job.unique_key) unique_[*job.unique_key] = job.id;
    reserved.push_back(job.id);
    results.push_back(job);
    inserts.push_back(std::move(job));
  }
  if (inserts.empty()) {
    done(std::move(results));
    return;
  }
  auto rows = std::make_shared<std::vector<Job>>(std::move(inserts));
  Write(
      [rows](SqliteDb* db) {
        for (const Job& j : *rows) GW_RETURN_IF_ERROR(InsertJob(db, j));
        return Status::Ok();
      },
      [this, reserved, results = std::move(results), done](const Status& st) mutable {
        for (const std::string& id : reserved) {
          Active& a = active_.at(id);
          if (!st.ok()) {
            if (a.job.unique_key) unique_.erase(*a.job.unique_key);
            auto deferred = std::move(a.deferred);
            active_.erase(id);
            for (auto& retry : deferred) retry();  // they will find no job
            continue;
          }
          Place(&a);
          EndTransition(&a, Phase::kWaiting);
        }
        if (!st.ok()) {
          done(st);
          return;
        }
        done(std::move(results));
        Dispatch();
        ArmNext();
      });
}

// --- dequeue -------------------------------------------------------------------------------------

std::vector<std::string> JobQueue::Take(const DequeueRequest& request) {
  std::vector<std::string> ids;
  for (const std::string& q : request.queues) {
    if (paused_.count(q) > 0) continue;
    auto it = ready_.find(q);
    if (it == ready_.end()) continue;
    std::set<ReadyKey>& ready = it->second;
    while (!ready.empty() && ids.size() < request.max_jobs) {
      Active& a = active_.at(ready.begin()->id);
      ready.erase(ready.begin());
      a.in_ready = false;
      a.phase = Phase::kClaiming;
      ids.push_back(a.job.id);
    }
    if (ids.size() == request.max_jobs) break;
  }
  return ids;
}

void JobQueue::Dequeue(DequeueRequest request, Callback<std::vector<Job>> done) {
  std::vector<std::string> ids = Take(request);
  if (!ids.empty()) {
    Claim(std::move(ids), std::move(request), std::move(done));
    return;
  }
  if (request.wait_ms <= 0) {
    done(std::vector<Job>());
    return;
  }
  const uint64_t waiter = next_waiter_++;
  const int64_t deadline = NowMs() + request.wait_ms;
  dequeue_waiters_.push_back({waiter, std::move(request), std::move(done)});
  AddTimer(deadline, {TimerKind::kDequeueWait, "", waiter});
}

void JobQueue::Dispatch() {
  for (auto it = dequeue_waiters_.begin(); it != dequeue_waiters_.end();) {
    if (it->request.alive && !it->request.alive()) {
      it = dequeue_waiters_.erase(it);
      continue;
    }
    std::vector<std::string> ids = Take(it->request);
    if (ids.empty()) {
      ++it;
      continue;
    }
    DequeueWaiter w = std::move(*it);
    it = dequeue_waiters_.erase(it);
    Claim(std::move(ids), std::move(w.request), std::move(w.done));
  }
}

void JobQueue::Claim(std::vector<std::string> ids, DequeueRequest request,
                     Callback<std::vector<Job>> done) {
  const int64_t now = NowMs();
  std::shared_ptr<std::vector<Job>> claimed = PrepareClaim(ids, request, now);
  Write([claimed, now](SqliteDb* db) { return WriteClaim(db, *claimed, now); },
        [this, claimed, done](const Status& st) { EndClaim(claimed, st, done); });
}

std::shared_ptr<std::vector<Job>> JobQueue::PrepareClaim(const std::vector<std::string>& ids,
                                                         const DequeueRequest& request,
                                                         int64_t now) {
  auto claimed = std::make_shared<std::vector<Job>>();
  claimed->reserve(ids.size());
  for (const std::string& id : ids) {
    Job j = active_.at(id).job;
    ++j.attempts;
    j.state = JobState::kRunning;
    j.lease_token = RandomId();
    j.lease_expires_at_ms = now + request.lease_ms;
    j.worker_id = request.worker_id;
    if (!j.started_at_ms) j.started_at_ms = now;
    j.last_attempted_at_ms = now;
    claimed->push_back(std::move(j));
  }
  return claimed;
}

Status JobQueue::WriteClaim(SqliteDb* db, const std::vector<Job>& claimed, int64_t now) {
  for (const Job& j : claimed) GW_RETURN_IF_ERROR(StartAttempt(db, j, now));
  return Status::Ok();
}

void JobQueue::EndClaim(const std::shared_ptr<std::vector<Job>>& claimed, const Status& st,
                        const Callback<std::vector<Job>>& done) {
  const int64_t at_us = clock_->NowUnixMicros();
  std::shared_ptr<Handout> handout;
  if (st.ok() && claimed->size() > 1) {
    handout = std::make_shared<Handout>(Handout{std::vector<bool>(claimed->size(), false)});
  }
  for (size_t i = 0; i < claimed->size(); ++i) {
    const Job& j = (*claimed)[i];
    Active& a = active_.at(j.id);
    if (!st.ok()) {
      Place(&a);
      EndTransition(&a, Phase::kWaiting);
      continue;
    }
    std::deque<double>& samples = pickup_samples_[j.queue];
    samples.push_back(static_cast<double>(at_us - a.ready_since_us) / 1e6);
    if (samples.size() > kLatencySamples) samples.pop_front();
    if (handout) {
      a.handout = handout;
      a.handout_index = i;
      if (i > 0) a.before_claim = std::move(a.job);
    }
    a.job = j;
    AddTimer(*j.lease_expires_at_ms, {TimerKind::kLease, j.id});
  }
  if (!st.ok()) {
    done(st);
    Dispatch();
    return;
  }
  // Answer with the stored jobs, which carry the history of earlier attempts as well (a first
  // attempt has none: the claimed job is the stored one, and the read is saved).
  for (Job& j : *claimed) {
    Active& a = active_.at(j.id);
    const bool first = a.never_attempted;
    a.never_attempted = false;
    a.sole_attempt = first;
    if (first) {
      j.history = {JobAttempt{j.attempts, j.worker_id.value_or(""),
                              j.last_attempted_at_ms.value_or(0), std::nullopt, "", "", ""}};
      continue;
    }
    Result<Job> stored = Reload(j.id);
    if (stored.ok()) j = std::move(*stored);
  }
  done(*claimed);
  for (const Job& j : *claimed) {
    auto it = active_.find(j.id);
    if (it != active_.end()) EndTransition(&it->second, Phase::kRunning);
  }
}

// --- leases -------------------------------------------------------------------------------------

Result<JobQueue::Active*> JobQueue::Leased(const std::string& id, const std::string& token) {
  auto it = active_.find(id);
  if (it == active_.end()) {
    Result<std::optional<Job>> stored = GetJob(reader_.get(), id);
    if (!stored.ok()) return stored.status();
    if (!stored->has_value()) return Status::NotFound("no job has id " + id);
    return Status::FailedPrecondition(std::string(kLeaseLost) + "job " + id + " is " +
                                      std::string(StateName((*stored)->state)));
  }
  Active& a = it->second;
  if (a.phase != Phase::kRunning || a.job.lease_token != token) {
    return Status::FailedPrecondition(std::string(kLeaseLost) +
                                      "this token does not hold the lease of job " + id);
  }
  if (a.job.lease_expires_at_ms.value_or(0) <= NowMs()) {
    return Status::FailedPrecondition(std::string(kLeaseLost) + "the lease of job " + id +
                                      " expired");
  }
  return &a;
}

void JobQueue::Heartbeat(const std::string& id, const std::string& token, int64_t lease_ms,
                         Callback<HeartbeatResult> done) {
  if (DeferIfBusy(id, [=, this] { Heartbeat(id, token, lease_ms, done); })) return;
  Result<Active*> a = Leased(id, token);
  if (!a.ok()) {
    // A cancelled job's holder is told so, rather than just losing its lease.
    Result<std::optional<Job>> stored = GetJob(reader_.get(), id);
    if (stored.ok() && stored->has_value() && (*stored)->state == JobState::kCancelled) {
      done(HeartbeatResult{true, 0});
      return;
    }
    done(a.status());
    return;
  }
  const int64_t expires = NowMs() + lease_ms;
  Write([id, expires](SqliteDb* db) { return ExtendLease(db, id, expires); },
        [this, id, token, expires, done](const Status& st) {
          if (!st.ok()) {
            done(st);
            return;
          }
          auto it = active_.find(id);
          if (it == active_.end() || it->second.job.lease_token != token) {
            done(Status::FailedPrecondition(std::string(kLeaseLost) + "job " + id +
                                            " changed hands during the heartbeat"));
            return;
          }
          it->second.job.lease_expires_at_ms = expires;
          AddTimer(expires, {TimerKind::kLease, id});
          done(HeartbeatResult{false, expires});
        });
}

Status JobQueue::WriteSuccess(SqliteDb* db, const std::string& id, int64_t attempt, int64_t now,
                              const std::optional<std::string>& return_value) {
  GW_RETURN_IF_ERROR(services::queue::FinishAttempt(db, id, attempt, now, "successful", "", ""));
  return MarkSuccessful(db, id, now, return_value);
}

void JobQueue::Complete(const std::string& id, const std::string& token,
                        std::optional<std::string> return_value, Callback<Job> done) {
  if (DeferIfBusy(id, [=, this] { Complete(id, token, return_value, done); })) return;
  Result<Active*> leased = Leased(id, token);
  if (!leased.ok()) {
    done(leased.status());
    return;
  }
  Active* a = *leased;
  MarkReported(a);
  a->phase = Phase::kFinishing;
  const int64_t now = NowMs();
  const int64_t attempt = a->job.attempts;
  std::optional<Job> stored = SucceededInMemory(*a, now, return_value);
  Write([id, attempt, now,
         return_value](SqliteDb* db) { return WriteSuccess(db, id, attempt, now, return_value); },
        [this, id, done, stored = std::move(stored)](const Status& st) {
          if (!st.ok()) {
            EndTransition(&active_.at(id), Phase::kRunning);
            done(st);
            return;
          }
          Finished(id, done, stored);
        });
}

void JobQueue::CompleteAndDequeue(Completion completion, DequeueRequest request,
                                  Callback<CompletedAndDequeued> done) {
  const std::string id = completion.id;
  if (DeferIfBusy(id, [=, this] { CompleteAndDequeue(completion, request, done); })) return;
  request.wait_ms = 0;
  Result<Active*> leased = Leased(id, completion.token);
  if (!leased.ok()) {
    // Refused as Complete would refuse it; the worker still gets its next jobs.
    Status refused = leased.status();
    Dequeue(std::move(request), [refused, done](Result<std::vector<Job>> r) {
      if (!r.ok()) {
        done(r.status());
        return;
      }
      CompletedAndDequeued out;
      out.completion = refused;
      out.jobs = std::move(*r);
      done(std::move(out));
    });
    return;
  }
  Active* a = *leased;
  MarkReported(a);
  a->phase = Phase::kFinishing;
  const int64_t now = NowMs();
  const int64_t attempt = a->job.attempts;
  std::optional<Job> stored = SucceededInMemory(*a, now, completion.return_value);
  std::shared_ptr<std::vector<Job>> claimed = PrepareClaim(Take(request), request, now);
  Write(
      [id, attempt, now, value = std::move(completion.return_value), claimed](SqliteDb* db) {
        GW_RETURN_IF_ERROR(WriteSuccess(db, id, attempt, now, value));
        return WriteClaim(db, *claimed, now);
      },
      [this, id, claimed, done, stored = std::move(stored)](const Status& st) {
        if (!st.ok()) {
          EndTransition(&active_.at(id), Phase::kRunning);
          EndClaim(claimed, st, [done](Result<std::vector<Job>> r) { done(r.status()); });
          return;
        }
        auto out = std::make_shared<CompletedAndDequeued>();
        Finished(
            id,
            [out](const Result<Job>& job) {
              // The write committed; only re-reading the stored job can fail here.
              if (job.ok()) out->completed = *job;
              out->completion = job.ok() ? Status::Ok() : job.status();
            },
            stored);
        EndClaim(claimed, st, [out, done](Result<std::vector<Job>> jobs) {
          out->jobs = std::move(*jobs);
          done(std::move(*out));
        });
      });
}

void JobQueue::Fail(const std::string& id, const std::string& token,
                    std::string exception_class_path, std::string traceback, bool retry,
                    Callback<Job> done) {
  if (DeferIfBusy(id,
                  [=, this] { Fail(id, token, exception_class_path, traceback, retry, done); })) {
    return;
  }
  Result<Active*> leased = Leased(id, token);
  if (!leased.ok()) {
    done(leased.status());
    return;
  }
  MarkReported(*leased);
  EndAttempt(*leased, "failed", std::move(exception_class_path), std::move(traceback), retry,
             std::move(done));
}

void JobQueue::Release(const std::string& id, const std::string& token, Callback<Job> done) {
  if (DeferIfBusy(id, [=, this] { Release(id, token, done); })) return;
  Result<Active*> leased = Leased(id, token);
  if (!leased.ok()) {
    done(leased.status());
    return;
  }
  if (Started(**leased)) {
    done(Status::FailedPrecondition(
        "job " + id +
        " has started (it was the first job of its dequeue answer, every job before it was "
        "reported, or it was handed out before the gateway restarted): report it with "
        "queue.complete or queue.fail instead of releasing it"));
    return;
  }
  PutBack(*leased, std::move(done));
}

bool JobQueue::Started(const Active& a) {
  if (!a.handout) return true;
  for (size_t i = 0; i < a.handout_index; ++i) {
    if (!a.handout->reported[i]) return false;
  }
  return true;
}

void JobQueue::MarkReported(Active* a) {
  if (a->handout) a->handout->reported[a->handout_index] = true;
}

void JobQueue::PutBack(Active* a, Callback<Job> done) {
  const std::string id = a->job.id;
  auto before = std::make_shared<const Job>(std::move(*a->before_claim));
  a->before_claim.reset();
  a->phase = Phase::kFinishing;
  Write([before](SqliteDb* db) { return UndoAttempt(db, *before); },
        [this, id, before, done](const Status& st) {
          Active& active = active_.at(id);
          if (!st.ok()) {
            active.before_claim = *before;
            EndTransition(&active, Phase::kRunning);
            done(st);
            return;
          }
          active.job = *before;
          // Answers are read back from the store until its next first attempt.
          active.never_attempted = false;
          active.sole_attempt = false;
          Place(&active);
          EndTransition(&active, Phase::kWaiting);
          done(Reload(id));
          Dispatch();
          ArmNext();
        });
}

void JobQueue::ExpireLease(const std::string& id) {
  auto it = active_.find(id);
  if (it == active_.end() || it->second.phase != Phase::kRunning) return;
  Active& a = it->second;
  if (a.job.lease_expires_at_ms.value_or(0) > NowMs()) return;  // renewed since
  if (!Started(a)) {
    // A prefetched job its holder never got to (it died or stopped): no attempt was made.
    PutBack(&a, [](const Result<Job>&) {});
    return;
  }
  EndAttempt(&a, "lease_expired", "gateway.LeaseExpired",
             "worker " + a.job.worker_id.value_or("?") +
                 " did not finish or heartbeat the job before its lease ended",
             true, [](const Result<Job>&) {});
}

int64_t JobQueue::RetryDelayMs(const Job& job) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  const double exp = std::pow(2.0, static_cast<double>(std::max<int64_t>(0, job.attempts - 1)));
  const double full =
      std::min(static_cast<double>(kMaxBackoffMs), job.backoff_seconds * 1000 * exp);
  // Jitter: uniform over the upper half, so retries of many jobs failing together spread out.
  std::uniform_real_distribution<double> half(0.5, 1.0);
  return static_cast<int64_t>(full * half(rng));
}

void JobQueue::EndAttempt(Active* a, std::string outcome, std::string exception_class_path,
                          std::string traceback, bool retry, Callback<Job> done) {
  const std::string id = a->job.id;
  const int64_t now = NowMs();
  const int64_t attempt = a->job.attempts;
  const bool again = retry && a->job.attempts < a->job.max_attempts;
  const int64_t run_after = now + (again ? RetryDelayMs(a->job) : 0);
  a->phase = Phase::kFinishing;
  Write(
      [=](SqliteDb* db) {
        GW_RETURN_IF_ERROR(services::queue::FinishAttempt(db, id, attempt, now, outcome,
                                                          exception_class_path, traceback));
        return again ? MarkRetry(db, id, run_after) : MarkFinished(db, id, JobState::kFailed, now);
      },
      [this, id, again, run_after, done](const Status& st) {
        Active& active = active_.at(id);
        if (!st.ok()) {
          EndTransition(&active, Phase::kRunning);
          done(st);
          return;
        }
        if (!again) {
          Finished(id, done);
          return;
        }
        active.job.state = JobState::kReady;
        active.job.run_after_ms = run_after;
        active.job.lease_token.reset();
        active.job.lease_expires_at_ms.reset();
        Place(&active);
        EndTransition(&active, Phase::kWaiting);
        done(Reload(id));
        Dispatch();
        ArmNext();
      });
}

// --- finishing, cancel, wait --------------------------------------------------------------------

std::optional<Job> JobQueue::SucceededInMemory(const Active& a, int64_t now,
                                               const std::optional<std::string>& return_value) {
  if (!a.sole_attempt) return std::nullopt;
  // What WriteSuccess stores, applied to the job as its claim stored it.
  Job j = a.job;
  j.state = JobState::kSuccessful;
  j.finished_at_ms = now;
  j.return_value = return_value;
  j.lease_token.reset();
  j.lease_expires_at_ms.reset();
  j.history = {JobAttempt{j.attempts, j.worker_id.value_or(""), j.last_attempted_at_ms.value_or(0),
                          now, "successful", "", ""}};
  return j;
}

void JobQueue::Finished(const std::string& id, Callback<Job> done, std::optional<Job> stored) {
  Active& a = active_.at(id);
  if (a.job.unique_key) unique_.erase(*a.job.unique_key);
  auto deferred = std::move(a.deferred);
  active_.erase(id);
  Result<Job> job = stored ? Result<Job>(std::move(*stored)) : Reload(id);
  done(job);
  auto waiters = job_waiters_.find(id);
  if (waiters != job_waiters_.end()) {
    std::vector<JobWaiter> list = std::move(waiters->second);
    job_waiters_.erase(waiters);
    for (JobWaiter& w : list) w.done(job);
  }
  for (auto& retry : deferred) retry();  // they will find the job finished
}

void JobQueue::Cancel(const std::string& id, Callback<Job> done) {
  if (DeferIfBusy(id, [=, this] { Cancel(id, done); })) return;
  auto it = active_.find(id);
  if (it == active_.end()) {
    Result<Job> stored = Reload(id);
    if (!stored.ok()) {
      done(stored.status());
      return;
    }
    done(Status::FailedPrecondition("job " + id + " is already " +
                                    std::string(StateName(stored->state))));
    return;
  }
  Active& a = it->second;
  const Phase before = a.phase;
  if (a.in_ready) {
    ready_[a.job.queue].erase({-a.job.priority, a.job.seq, id});
    a.in_ready = false;
  }
  a.phase = Phase::kFinishing;
  const int64_t now = NowMs();
  const bool running = before == Phase::kRunning;
  const int64_t attempt = a.job.attempts;
  // A prefetched job its holder has not started had no attempt: its count, worker and times go
  // back to what they were, and no attempt record is written.
  std::shared_ptr<const Job> unstarted;
  if (running && !Started(a)) unstarted = std::make_shared<const Job>(*a.before_claim);
  Write(
      [=](SqliteDb* db) {
        if (unstarted) {
          GW_RETURN_IF_ERROR(UndoAttempt(db, *unstarted));
        } else if (running) {
          GW_RETURN_IF_ERROR(
              services::queue::FinishAttempt(db, id, attempt, now, "cancelled", "", ""));
        }
        return MarkFinished(db, id, JobState::kCancelled, now);
      },
      [this, id, before, done](const Status& st) {
        Active& active = active_.at(id);
        if (!st.ok()) {
          if (before == Phase::kWaiting) Place(&active);
          EndTransition(&active, before);
          done(st);
          return;
        }
        Finished(id, done);
      });
}

Result<Job> JobQueue::Reload(const std::string& id) {
  Result<std::optional<Job>> job = GetJob(reader_.get(), id);
  if (!job.ok()) return job.status();
  if (!job->has_value()) return Status::NotFound("no job has id " + id);
  return std::move(**job);
}

Result<std::optional<Job>> JobQueue::Get(const std::string& id) {
  return GetJob(reader_.get(), id);
}

void JobQueue::Wait(const std::string& id, int64_t timeout_ms, Callback<Job> done) {
  if (active_.count(id) == 0 || timeout_ms <= 0) {
    done(Reload(id));
    return;
  }
  const uint64_t waiter = next_waiter_++;
  job_waiters_[id].push_back({waiter, std::move(done)});
  AddTimer(NowMs() + timeout_ms, {TimerKind::kJobWait, id, waiter});
}

void JobQueue::ReleaseWaiters() {
  std::list<DequeueWaiter> dequeues;
  dequeues.swap(dequeue_waiters_);
  for (DequeueWaiter& w : dequeues) w.done(std::vector<Job>());
  auto jobs = std::move(job_waiters_);
  job_waiters_.clear();
  for (auto& [id, list] : jobs) {
    Result<Job> job = Reload(id);
    for (JobWaiter& w : list) w.done(job);
  }
}

// --- timers -------------------------------------------------------------------------------------

void JobQueue::OnTimer() {
  armed_at_.reset();
  const int64_t now = NowMs();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    TimerItem item = std::move(timers_.begin()->second);
    timers_.erase(timers_.begin());
    switch (item.kind) {
      case TimerKind::kRunAfter: {
        auto it = active_.find(item.id);
        if (it != active_.end() && it->second.phase == Phase::kWaiting && !it->second.in_ready) {
          Place(&it->second);
        }
        break;
      }
      case TimerKind::kLease:
        ExpireLease(item.id);
        break;
      case TimerKind::kDequeueWait:
        for (auto it = dequeue_waiters_.begin(); it != dequeue_waiters_.end(); ++it) {
          if (it->id != item.waiter) continue;
          auto done = std::move(it->done);
          dequeue_waiters_.erase(it);
          done(std::vector<Job>());
          break;
        }
        break;
      case TimerKind::kJobWait: {
        auto list = job_waiters_.find(item.id);
        if (list == job_waiters_.end()) break;
        auto& v = list->second;
        for (auto it = v.begin(); it != v.end(); ++it) {
          if (it->id != item.waiter) continue;
          auto done = std::move(it->done);
          v.erase(it);
          if (v.empty()) job_waiters_.erase(list);
          done(Reload(item.id));
          break;
        }
        break;
      }
      case TimerKind::kSchedule: {
        const Schedule& s = schedules_[item.schedule];
        if (std::optional<int64_t> slot = s.cron.Previous(now)) EnqueueSlot(item.schedule, *slot);
        if (std::optional<int64_t> next = s.cron.Next(now)) {
          timers_.emplace(*next, TimerItem{TimerKind::kSchedule, "", 0, item.schedule});
        }
        break;
      }
    }
  }
  Dispatch();
  ArmNext();
}

void JobQueue::EnqueueSlot(size_t schedule, int64_t slot_ms) {
  const Schedule& s = schedules_[schedule];
  Job job = s.job;
  job.id = NewJobId(NowMs());
  job.seq = next_seq_++;
  job.enqueued_at_ms = NowMs();
  job.state = JobState::kReady;
  Active& a = active_[job.id];
  a.job = job;
  a.phase = Phase::kCommitting;
  a.never_attempted = true;
  auto inserted = std::make_shared<bool>(false);
  const std::string name = s.name;
  Write(
      [job, name, slot_ms, inserted](SqliteDb* db) {
        // Checked again inside the transaction: the slot is enqueued exactly once.
        Result<std::optional<int64_t>> last = LastSlot(db, name);
        if (!last.ok()) return last.status();
        if (*last && **last >= slot_ms) return Status::Ok();
        GW_RETURN_IF_ERROR(InsertJob(db, job));
        GW_RETURN_IF_ERROR(SetLastSlot(db, name, slot_ms));
        *inserted = true;
        return Status::Ok();
      },
      [this, id = job.id, inserted](const Status& st) {
        Active& active = active_.at(id);
        if (!st.ok() || !*inserted) {
          auto deferred = std::move(active.deferred);
          active_.erase(id);
          for (auto& retry : deferred) retry();
          return;
        }
        Place(&active);
        EndTransition(&active, Phase::kWaiting);
        Dispatch();
        ArmNext();
      });
}

// --- admin --------------------------------------------------------------------------------------

Result<std::map<std::string, JobQueue::QueueStats>> JobQueue::Stats() {
  std::map<std::string, QueueStats> out;
  const int64_t now = NowMs();
  for (const auto& [id, a] : active_) {
    if (a.phase == Phase::kCommitting) continue;
    QueueStats& q = out[a.job.queue];
    const JobState state = a.phase == Phase::kRunning || a.phase == Phase::kClaiming
                               ? JobState::kRunning
                               : a.job.VisibleState(now);
    ++q.states[state];
    if (state == JobState::kReady) {
      const int64_t since = std::max(a.job.enqueued_at_ms, a.job.run_after_ms.value_or(0));
      const double age = static_cast<double>(now - since) / 1000.0;
      if (!q.oldest_ready_age || age > *q.oldest_ready_age) q.oldest_ready_age = age;
    }
  }
  Result<std::map<std::string, std::map<JobState, int64_t>>> finished =
      CountFinished(reader_.get());
  if (!finished.ok()) return finished.status();
  for (const auto& [queue, counts] : *finished) {
    for (const auto& [state, n] : counts) out[queue].states[state] += n;
  }
  for (const std::string& q : paused_) out[q].paused = true;
  for (const auto& [queue, samples] : pickup_samples_) {
    std::vector<double> v(samples.begin(), samples.end());
    Latency& l = out[queue].pickup;
    l.count = static_cast<int64_t>(v.size());
    l.p50 = Percentile(v, 0.5);
    l.p99 = Percentile(v, 0.99);
    l.max = v.empty() ? 0 : *std::max_element(v.begin(), v.end());
  }
  return out;
}

void JobQueue::SetPaused(const std::string& queue, bool paused, Callback<bool> done) {
  Write([queue, paused](SqliteDb* db) { return services::queue::SetPaused(db, queue, paused); },
        [this, queue, paused, done](const Status& st) {
          if (!st.ok()) {
            done(st);
            return;
          }
          if (paused) {
            paused_.insert(queue);
          } else {
            paused_.erase(queue);
            Dispatch();
          }
          done(true);
        });
}

void JobQueue::RetryFailed(std::optional<std::string> queue, std::vector<std::string> ids,
                           Callback<int64_t> done) {
  auto jobs = std::make_shared<std::vector<Job>>();
  Write(
      [queue, ids, jobs](SqliteDb* db) {
        Result<std::vector<Job>> r = services::queue::RetryFailed(db, queue, ids);
        if (!r.ok()) return r.status();
        *jobs = std::move(*r);
        return Status::Ok();
      },
      [this, jobs, done](const Status& st) {
        if (!st.ok()) {
          done(st);
          return;
        }
        for (Job& j : *jobs) {
          if (j.unique_key && unique_.count(*j.unique_key) == 0) unique_[*j.unique_key] = j.id;
          Active& a = active_[j.id];
          a.job = std::move(j);
          a.phase = Phase::kWaiting;
          Place(&a);
        }
        done(static_cast<int64_t>(jobs->size()));
        Dispatch();
        ArmNext();
      });
}

void JobQueue::Prune(int64_t older_than_ms, std::vector<JobState> states, Callback<int64_t> done) {
  const int64_t cutoff = NowMs() - older_than_ms;
  auto removed = std::make_shared<int64_t>(0);
  Write(
      [cutoff, states, removed](SqliteDb* db) {
        Result<int64_t> n = PruneFinished(db, cutoff, states);
        if (!n.ok()) return n.status();
        *removed = *n;
        return Status::Ok();
      },
      [removed, done](const Status& st) {
        if (!st.ok()) {
          done(st);
          return;
        }
        done(*removed);
      });
}

}  // namespace services::queue
