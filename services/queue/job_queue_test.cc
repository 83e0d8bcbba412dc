#include "services/queue/job_queue.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <set>

#include "services/databases.h"
#include "services/queue/job_store.h"
#include "services/test_util.h"

namespace services::queue {
namespace {

class QueueTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open(std::vector<JobQueue::Schedule> schedules = {}) {
    queue_.reset();
    auto dbs = Databases::Open({dir_.File("app.db"), dir_.File("cache.db"), dir_.File("queue.db")},
                               SqliteTuning());
    ASSERT_TRUE(dbs.ok()) << dbs.status().ToString();
    dbs_ = std::move(*dbs);
    JobQueue::Hooks hooks;
    hooks.post = [this](std::function<void()> f) {
      std::lock_guard<std::mutex> lock(mu_);
      posted_.push_back(std::move(f));
      cv_.notify_all();
    };
    hooks.arm_timer = [this](int64_t at) { armed_ = at; };
    auto q =
        JobQueue::Open(dir_.File("queue.db"), SqliteTuning(), &clock_, hooks, std::move(schedules));
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    queue_ = std::move(*q);
  }

  // Runs posted completions on this (the owner) thread until `done` is true.
  void PumpUntil(const std::function<bool()>& done) {
    for (int i = 0; i < 2000 && !done(); ++i) {
      std::vector<std::function<void()>> run;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(5), [&] { return !posted_.empty(); });
        run.swap(posted_);
      }
      for (auto& f : run) f();
    }
    ASSERT_TRUE(done()) << "timed out waiting for the queue";
  }

  template <typename T, typename Op>
  Result<T> Call(Op op) {
    std::optional<Result<T>> out;
    op([&](Result<T> r) { out.emplace(std::move(r)); });
    PumpUntil([&] { return out.has_value(); });
    return std::move(*out);
  }

  Job Enqueue(std::string task, int64_t priority = 0, std::string queue = "default") {
    Job j;
    j.task = std::move(task);
    j.queue = std::move(queue);
    j.priority = priority;
    j.args = "\x90";
    j.kwargs = "\x80";
    return EnqueueJob(j);
  }
  Job EnqueueJob(Job j) {
    auto r = Call<std::vector<Job>>([&](auto cb) { queue_->Enqueue({j}, cb); });
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r->at(0);
  }
  std::vector<Job> Dequeue(size_t max = 1, int64_t wait_ms = 0, int64_t lease_ms = 10'000,
                           std::vector<std::string> queues = {"default"}) {
    JobQueue::DequeueRequest req;
    req.queues = std::move(queues);
    req.worker_id = "w1";
    req.max_jobs = max;
    req.wait_ms = wait_ms;
    req.lease_ms = lease_ms;
    auto r = Call<std::vector<Job>>([&](auto cb) { queue_->Dequeue(req, cb); });
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::vector<Job>();
  }
  Result<Job> Complete(const Job& j, std::string rv = "\xc3") {
    return Call<Job>([&](auto cb) { queue_->Complete(j.id, *j.lease_token, rv, cb); });
  }
  Result<JobQueue::CompletedAndDequeued> CompleteAndDequeue(const Job& j, int64_t wait_ms = 0,
                                                            std::string rv = "\xc3") {
    JobQueue::DequeueRequest req;
    req.queues = {"default"};
    req.worker_id = "w1";
    req.wait_ms = wait_ms;
    return Call<JobQueue::CompletedAndDequeued>([&](auto cb) {
      queue_->CompleteAndDequeue({j.id, *j.lease_token, rv}, req, cb);
    });
  }
  Result<Job> Fail(const Job& j, bool retry = true) {
    return Call<Job>(
        [&](auto cb) { queue_->Fail(j.id, *j.lease_token, "x.Err", "tb", retry, cb); });
  }
  // Waits until the in-memory index has no RUNNING job left (expiries write before they land).
  void PumpUntilNoneRunning() {
    PumpUntil([&] { return queue_->Stats()->at("default").states[JobState::kRunning] == 0; });
  }
  void Advance(int64_t ms) {
    clock_.Advance(ms * 1000);
    queue_->OnTimer();
  }
  JobState StateOf(const std::string& id) {
    auto j = queue_->Get(id);
    EXPECT_TRUE(j.ok() && j->has_value());
    return (*j)->VisibleState(clock_.NowUnixMicros() / 1000);
  }

  TempDir dir_;
  ManualClock clock_;
  std::unique_ptr<Databases> dbs_;
  std::unique_ptr<JobQueue> queue_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::function<void()>> posted_;
  std::optional<int64_t> armed_;
};

TEST_F(QueueTest, HigherPriorityFirstThenEnqueueOrder) {
  Job a = Enqueue("a");
  Job b = Enqueue("b", 5);
  Job c = Enqueue("c");
  Job d = Enqueue("d", -5);
  std::vector<Job> got = Dequeue(10);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].id, b.id);
  EXPECT_EQ(got[1].id, a.id);
  EXPECT_EQ(got[2].id, c.id);
  EXPECT_EQ(got[3].id, d.id);
  EXPECT_EQ(got[0].attempts, 1);
  EXPECT_TRUE(got[0].lease_token.has_value());
  EXPECT_EQ(StateOf(a.id), JobState::kRunning);
  EXPECT_TRUE(Dequeue().empty());
}

TEST_F(QueueTest, RunAfterHoldsAJobUntilItsTime) {
  Job j;
  j.task = "later";
  j.run_after_ms = clock_.NowUnixMicros() / 1000 + 5000;
  Job later = EnqueueJob(j);
  EXPECT_EQ(StateOf(later.id), JobState::kScheduled);
  EXPECT_TRUE(Dequeue().empty());
  ASSERT_TRUE(armed_.has_value());
  Advance(5000);
  EXPECT_EQ(Dequeue().at(0).id, later.id);
}

TEST_F(QueueTest, ABlockedDequeueIsAnsweredByTheNextEnqueue) {
  std::optional<Result<std::vector<Job>>> got;
  JobQueue::DequeueRequest req;
  req.queues = {"other", "default"};
  req.worker_id = "w";
  req.wait_ms = 30'000;
  queue_->Dequeue(req, [&](Result<std::vector<Job>> r) { got.emplace(std::move(r)); });
  EXPECT_FALSE(got.has_value());
  Job j = Enqueue("t");
  PumpUntil([&] { return got.has_value(); });
  ASSERT_TRUE(got->ok());
  EXPECT_EQ((*got)->at(0).id, j.id);

  got.reset();
  queue_->Dequeue(req, [&](Result<std::vector<Job>> r) { got.emplace(std::move(r)); });
  Advance(30'000);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE((*got)->empty());
}

TEST_F(QueueTest, CompleteNeedsTheLiveLease) {
  Enqueue("t");
  Job running = Dequeue().at(0);
  Job forged = running;
  forged.lease_token = "not-the-token";
  EXPECT_TRUE(IsLeaseLost(Complete(forged).status()));
  auto done = Complete(running);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ(done->state, JobState::kSuccessful);
  EXPECT_EQ(done->return_value, "\xc3");
  ASSERT_EQ(done->history.size(), 1u);
  EXPECT_EQ(done->history[0].outcome, "successful");
  EXPECT_TRUE(IsLeaseLost(Complete(running).status()));  // not twice
}

TEST_F(QueueTest, AnExpiredLeaseIsAFailedAttemptAndTheLateCompleteIsRefused) {
  Job j;
  j.task = "t";
  j.max_attempts = 2;
  j.backoff_seconds = 0.001;
  Job queued = EnqueueJob(j);
  Job first = Dequeue(1, 0, 1000).at(0);
  Advance(1000);  // the worker died: no heartbeat
  // Wait for the in-memory index, not just the database, to see the attempt end.
  PumpUntil([&] { return queue_->Stats()->at("default").states[JobState::kRunning] == 0; });
  Advance(10);
  Job second = Dequeue().at(0);
  EXPECT_EQ(second.attempts, 2);
  EXPECT_NE(second.lease_token, first.lease_token);
  EXPECT_TRUE(IsLeaseLost(Complete(first).status()));
  ASSERT_TRUE(Complete(second).ok());
  auto stored = *queue_->Get(queued.id);
  ASSERT_EQ(stored->history.size(), 2u);
  EXPECT_EQ(stored->history[0].outcome, "lease_expired");
  EXPECT_EQ(stored->history[0].exception_class_path, "gateway.LeaseExpired");
}

TEST_F(QueueTest, PrefetchedJobsThatNeverStartedGoBackWithoutUsingAnAttempt) {
  Job j;
  j.task = "t";
  j.max_attempts = 1;
  std::vector<Job> queued;
  for (int i = 0; i < 4; ++i) queued.push_back(EnqueueJob(j));
  std::vector<Job> held = Dequeue(4, 0, 1000);
  ASSERT_EQ(held.size(), 4u);
  for (const Job& h : held) EXPECT_EQ(h.attempts, 1);
  ASSERT_TRUE(Complete(held[0]).ok());  // job 1 reported: job 2 has started
  Advance(1000);                        // the worker died while running job 2
  PumpUntilNoneRunning();
  // Job 2 used its only attempt; jobs 3 and 4 are as if never handed out.
  auto second = *queue_->Get(held[1].id);
  EXPECT_EQ(second->state, JobState::kFailed);
  ASSERT_EQ(second->history.size(), 1u);
  EXPECT_EQ(second->history[0].outcome, "lease_expired");
  for (int i = 2; i < 4; ++i) {
    auto back = *queue_->Get(held[i].id);
    EXPECT_EQ(back->state, JobState::kReady);
    EXPECT_EQ(back->attempts, 0);
    EXPECT_TRUE(back->history.empty());
    EXPECT_FALSE(back->started_at_ms.has_value());
    EXPECT_FALSE(back->last_attempted_at_ms.has_value());
    EXPECT_FALSE(back->lease_token.has_value());
    EXPECT_TRUE(IsLeaseLost(Complete(held[i]).status()));
  }
  // They keep their place: handed out again first, in enqueue order, as first attempts.
  std::vector<Job> again = Dequeue(4);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].id, held[2].id);
  EXPECT_EQ(again[1].id, held[3].id);
  EXPECT_EQ(again[0].attempts, 1);
  ASSERT_TRUE(Complete(again[0]).ok());
  ASSERT_TRUE(Complete(again[1]).ok());
  auto done = *queue_->Get(held[3].id);
  EXPECT_EQ(done->state, JobState::kSuccessful);
  ASSERT_EQ(done->history.size(), 1u);
  EXPECT_EQ(done->history[0].outcome, "successful");
}

TEST_F(QueueTest, AFailureReportAlsoStartsTheNextPrefetchedJob) {
  Enqueue("a");
  Enqueue("b");
  Enqueue("c");
  std::vector<Job> held = Dequeue(3, 0, 1000);
  ASSERT_EQ(held.size(), 3u);
  ASSERT_TRUE(Fail(held[0], false).ok());
  Advance(1000);
  PumpUntilNoneRunning();
  EXPECT_EQ(StateOf(held[1].id), JobState::kFailed);  // started, max_attempts 1
  EXPECT_EQ(StateOf(held[2].id), JobState::kReady);
  EXPECT_EQ((*queue_->Get(held[2].id))->attempts, 0);
}

TEST_F(QueueTest, ReleaseGivesBackOnlyJobsThatHaveNotStarted) {
  Enqueue("a");
  Enqueue("b");
  Enqueue("c");
  std::vector<Job> held = Dequeue(3);
  ASSERT_EQ(held.size(), 3u);
  auto release = [&](const Job& h, std::string token) {
    return Call<Job>([&](auto cb) { queue_->Release(h.id, token, cb); });
  };
  // The first job of an answer has started when handed out.
  Status first = release(held[0], *held[0].lease_token).status();
  EXPECT_EQ(first.code(), Status::Code::kFailedPrecondition);
  EXPECT_FALSE(IsLeaseLost(first));
  EXPECT_TRUE(IsLeaseLost(release(held[2], "not-the-token").status()));
  Result<Job> third = release(held[2], *held[2].lease_token);
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_EQ(third->state, JobState::kReady);
  EXPECT_EQ(third->attempts, 0);
  EXPECT_TRUE(IsLeaseLost(release(held[2], *held[2].lease_token).status()));
  ASSERT_TRUE(Complete(held[0]).ok());
  // Job 2 started once job 1 was reported.
  EXPECT_EQ(release(held[1], *held[1].lease_token).status().code(),
            Status::Code::kFailedPrecondition);
  ASSERT_TRUE(Complete(held[1]).ok());
  std::vector<Job> again = Dequeue(3);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].id, held[2].id);
  EXPECT_EQ(again[0].attempts, 1);
}

TEST_F(QueueTest, ACancelledPrefetchedJobThatNeverStartedHasNoAttempt) {
  Enqueue("a");
  Enqueue("b");
  std::vector<Job> held = Dequeue(2);
  ASSERT_EQ(held.size(), 2u);
  Result<Job> cancelled = Call<Job>([&](auto cb) { queue_->Cancel(held[1].id, cb); });
  ASSERT_TRUE(cancelled.ok()) << cancelled.status().ToString();
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  EXPECT_EQ(cancelled->attempts, 0);
  EXPECT_TRUE(cancelled->history.empty());
  EXPECT_FALSE(cancelled->started_at_ms.has_value());
  // The first job of the answer had started: its cancellation ends an attempt.
  Result<Job> first = Call<Job>([&](auto cb) { queue_->Cancel(held[0].id, cb); });
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_EQ(first->history.size(), 1u);
  EXPECT_EQ(first->history[0].outcome, "cancelled");
}

TEST_F(QueueTest, AfterARestartEveryHandedOutJobCountsAsStarted) {
  Enqueue("a");
  Enqueue("b");
  std::vector<Job> held = Dequeue(2, 0, 1000);
  ASSERT_EQ(held.size(), 2u);
  queue_->Stop();
  Open();
  EXPECT_EQ(Call<Job>([&](auto cb) { queue_->Release(held[1].id, *held[1].lease_token, cb); })
                .status()
                .code(),
            Status::Code::kFailedPrecondition);
  Advance(1000);
  PumpUntilNoneRunning();
  EXPECT_EQ(StateOf(held[1].id), JobState::kFailed);  // max_attempts 1: the attempt counted
}

TEST_F(QueueTest, APrefetchedJobHeartbeatedAndReachedRunsNormally) {
  Enqueue("a");
  Enqueue("b");
  std::vector<Job> held = Dequeue(2, 0, 1000);
  ASSERT_EQ(held.size(), 2u);
  Advance(600);
  for (const Job& h : held) {
    ASSERT_TRUE(Call<JobQueue::HeartbeatResult>([&](auto cb) {
                  queue_->Heartbeat(h.id, *h.lease_token, 1000, cb);
                }).ok());
  }
  Advance(600);  // past the first lease, inside the renewed one
  ASSERT_TRUE(Complete(held[0]).ok());
  Result<Job> second = Complete(held[1]);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->attempts, 1);
  EXPECT_EQ(second->state, JobState::kSuccessful);
}

TEST_F(QueueTest, HeartbeatsKeepTheLease) {
  Enqueue("t");
  Job running = Dequeue(1, 0, 1000).at(0);
  for (int i = 0; i < 5; ++i) {
    Advance(600);
    auto hb = Call<JobQueue::HeartbeatResult>(
        [&](auto cb) { queue_->Heartbeat(running.id, *running.lease_token, 1000, cb); });
    ASSERT_TRUE(hb.ok()) << hb.status().ToString();
    EXPECT_FALSE(hb->cancelled);
  }
  EXPECT_EQ(StateOf(running.id), JobState::kRunning);
  EXPECT_TRUE(Complete(running).ok());
}

TEST_F(QueueTest, FailuresRetryWithBackoffUntilMaxAttempts) {
  Job j;
  j.task = "t";
  j.max_attempts = 3;
  j.backoff_seconds = 10;
  Job queued = EnqueueJob(j);
  auto r = Fail(Dequeue().at(0));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->VisibleState(clock_.NowUnixMicros() / 1000), JobState::kScheduled);
  const int64_t delay1 = *r->run_after_ms - clock_.NowUnixMicros() / 1000;
  EXPECT_GE(delay1, 5000);
  EXPECT_LE(delay1, 10000);
  EXPECT_TRUE(Dequeue().empty());
  Advance(10'000);
  r = Fail(Dequeue().at(0));
  const int64_t delay2 = *r->run_after_ms - clock_.NowUnixMicros() / 1000;
  EXPECT_GE(delay2, 10000);  // doubled
  EXPECT_LE(delay2, 20000);
  Advance(20'000);
  r = Fail(Dequeue().at(0));
  EXPECT_EQ(r->state, JobState::kFailed);
  EXPECT_EQ(r->history.size(), 3u);
  EXPECT_EQ(r->history[2].exception_class_path, "x.Err");

  auto n = Call<int64_t>([&](auto cb) { queue_->RetryFailed(std::nullopt, {}, cb); });
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(Dequeue().at(0).id, queued.id);
}

TEST_F(QueueTest, CancelReadyAndRunningJobs) {
  Job ready = Enqueue("r");
  auto c = Call<Job>([&](auto cb) { queue_->Cancel(ready.id, cb); });
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state, JobState::kCancelled);
  EXPECT_TRUE(Dequeue().empty());

  Enqueue("s");
  Job running = Dequeue().at(0);
  ASSERT_TRUE(Call<Job>([&](auto cb) { queue_->Cancel(running.id, cb); }).ok());
  auto hb = Call<JobQueue::HeartbeatResult>(
      [&](auto cb) { queue_->Heartbeat(running.id, *running.lease_token, 1000, cb); });
  ASSERT_TRUE(hb.ok());
  EXPECT_TRUE(hb->cancelled);
  EXPECT_TRUE(IsLeaseLost(Complete(running).status()));
  auto again = Call<Job>([&](auto cb) { queue_->Cancel(running.id, cb); });
  EXPECT_EQ(again.status().code(), Status::Code::kFailedPrecondition);
  auto missing = Call<Job>([&](auto cb) { queue_->Cancel("nope", cb); });
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
}

TEST_F(QueueTest, UniqueKeysReturnTheLiveJob) {
  Job j;
  j.task = "t";
  j.unique_key = "report:1";
  Job first = EnqueueJob(j);
  Job second = EnqueueJob(j);
  EXPECT_EQ(first.id, second.id);
  Job running = Dequeue().at(0);
  EXPECT_EQ(EnqueueJob(j).id, first.id);
  ASSERT_TRUE(Complete(running).ok());
  EXPECT_NE(EnqueueJob(j).id, first.id);  // finished: a new job
}

TEST_F(QueueTest, PausedQueuesHandOutNothing) {
  ASSERT_TRUE(Call<bool>([&](auto cb) { queue_->SetPaused("default", true, cb); }).ok());
  Enqueue("t");
  EXPECT_TRUE(Dequeue().empty());
  auto stats = queue_->Stats();
  EXPECT_TRUE(stats->at("default").paused);
  EXPECT_EQ(stats->at("default").states.at(JobState::kReady), 1);
  ASSERT_TRUE(Call<bool>([&](auto cb) { queue_->SetPaused("default", false, cb); }).ok());
  EXPECT_EQ(Dequeue().size(), 1u);
}

TEST_F(QueueTest, WaitAnswersWhenTheJobFinishes) {
  Job j = Enqueue("t");
  std::optional<Result<Job>> waited;
  queue_->Wait(j.id, 60'000, [&](Result<Job> r) { waited.emplace(std::move(r)); });
  EXPECT_FALSE(waited.has_value());
  ASSERT_TRUE(Complete(Dequeue().at(0)).ok());
  PumpUntil([&] { return waited.has_value(); });
  EXPECT_EQ((*waited)->state, JobState::kSuccessful);
}

TEST_F(QueueTest, RestartKeepsEveryJobInItsState) {
  Job ready = Enqueue("ready");
  Job running_q = Enqueue("running", 10);
  Job running = Dequeue().at(0);
  ASSERT_EQ(running.id, running_q.id);
  Job done_q = Enqueue("done", 10);
  ASSERT_TRUE(Complete(Dequeue().at(0)).ok());
  queue_->Stop();
  Open();
  EXPECT_EQ(StateOf(ready.id), JobState::kReady);
  EXPECT_EQ(StateOf(running.id), JobState::kRunning);
  EXPECT_EQ(StateOf(done_q.id), JobState::kSuccessful);
  // The running job's lease survives the restart: its worker can still finish it.
  ASSERT_TRUE(Complete(running).ok());
  std::vector<Job> rest = Dequeue(10);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].id, ready.id);
  Job next = Enqueue("after");
  EXPECT_GT(next.seq, ready.seq);
}

TEST_F(QueueTest, CompleteAndDequeueStoresTheResultAndHandsOutTheNextJob) {
  Enqueue("first");
  Job second = Enqueue("second");
  Job running = Dequeue().at(0);
  auto r = CompleteAndDequeue(running);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->completion.ok()) << r->completion.ToString();
  ASSERT_TRUE(r->completed.has_value());
  EXPECT_EQ(r->completed->id, running.id);
  EXPECT_EQ(r->completed->state, JobState::kSuccessful);
  EXPECT_EQ(r->completed->return_value, "\xc3");
  ASSERT_EQ(r->jobs.size(), 1u);
  EXPECT_EQ(r->jobs[0].id, second.id);
  EXPECT_EQ(r->jobs[0].attempts, 1);
  ASSERT_TRUE(r->jobs[0].lease_token.has_value());
  EXPECT_EQ(StateOf(second.id), JobState::kRunning);
  // The completion ended the lease: it cannot be used again, and the next job's can.
  EXPECT_TRUE(IsLeaseLost(Complete(running).status()));
  auto last = CompleteAndDequeue(r->jobs[0]);
  ASSERT_TRUE(last.ok());
  EXPECT_TRUE(last->completion.ok());
  EXPECT_TRUE(last->jobs.empty());
  EXPECT_EQ(StateOf(second.id), JobState::kSuccessful);
}

TEST_F(QueueTest, CompleteAndDequeueNeverWaits) {
  Enqueue("only");
  Job running = Dequeue().at(0);
  auto r = CompleteAndDequeue(running, 30'000);  // answered without any timer firing
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->completion.ok());
  EXPECT_TRUE(r->jobs.empty());
}

TEST_F(QueueTest, ACompletionWithALostLeaseChangesNothingAndTheDequeueGoesOn) {
  Job j;
  j.task = "t";
  j.max_attempts = 2;
  j.backoff_seconds = 10;  // the retry waits, so the dequeue below finds `other`
  Job queued = EnqueueJob(j);
  Job other = Enqueue("other");
  Job first = Dequeue(1, 0, 1000).at(0);
  ASSERT_EQ(first.id, queued.id);
  Advance(1000);  // the lease ends: the attempt failed and the job will run again
  PumpUntil([&] { return queue_->Stats()->at("default").states[JobState::kRunning] == 0; });

  Job forged = first;
  forged.lease_token = "not-the-token";
  auto r = CompleteAndDequeue(forged);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(IsLeaseLost(r->completion));
  EXPECT_FALSE(r->completed.has_value());
  ASSERT_EQ(r->jobs.size(), 1u);
  EXPECT_EQ(r->jobs[0].id, other.id);

  auto late = CompleteAndDequeue(first);
  ASSERT_TRUE(late.ok());
  EXPECT_TRUE(IsLeaseLost(late->completion));
  Advance(10'000);
  Job again = Dequeue().at(0);
  EXPECT_EQ(again.id, queued.id);
  EXPECT_EQ(again.attempts, 2);
  auto stored = *queue_->Get(queued.id);
  EXPECT_FALSE(stored->return_value.has_value());
  ASSERT_EQ(stored->history.size(), 2u);
  EXPECT_EQ(stored->history[0].outcome, "lease_expired");
}

TEST_F(QueueTest, ACompletionOfAFinishedJobIsRefused) {
  Enqueue("t");
  Job running = Dequeue().at(0);
  ASSERT_TRUE(Complete(running).ok());
  auto r = CompleteAndDequeue(running);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(IsLeaseLost(r->completion));
  Job unknown = running;
  unknown.id = "no-such-job";
  auto missing = CompleteAndDequeue(unknown);
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->completion.code(), Status::Code::kNotFound);
}

// Every field a client can see, and the history, of `answered` equals the stored job's.
void ExpectStored(const Job& answered, const Job& stored) {
  EXPECT_EQ(answered.id, stored.id);
  EXPECT_EQ(answered.queue, stored.queue);
  EXPECT_EQ(answered.task, stored.task);
  EXPECT_EQ(answered.args, stored.args);
  EXPECT_EQ(answered.kwargs, stored.kwargs);
  EXPECT_EQ(answered.priority, stored.priority);
  EXPECT_EQ(answered.run_after_ms, stored.run_after_ms);
  EXPECT_EQ(answered.max_attempts, stored.max_attempts);
  EXPECT_EQ(answered.attempts, stored.attempts);
  EXPECT_EQ(answered.state, stored.state);
  EXPECT_EQ(answered.enqueued_at_ms, stored.enqueued_at_ms);
  EXPECT_EQ(answered.started_at_ms, stored.started_at_ms);
  EXPECT_EQ(answered.finished_at_ms, stored.finished_at_ms);
  EXPECT_EQ(answered.last_attempted_at_ms, stored.last_attempted_at_ms);
  EXPECT_EQ(answered.lease_token, stored.lease_token);
  EXPECT_EQ(answered.lease_expires_at_ms, stored.lease_expires_at_ms);
  EXPECT_EQ(answered.worker_id, stored.worker_id);
  EXPECT_EQ(answered.return_value, stored.return_value);
  EXPECT_EQ(answered.unique_key, stored.unique_key);
  ASSERT_EQ(answered.history.size(), stored.history.size());
  for (size_t i = 0; i < stored.history.size(); ++i) {
    const JobAttempt& a = answered.history[i];
    const JobAttempt& b = stored.history[i];
    EXPECT_EQ(a.attempt, b.attempt);
    EXPECT_EQ(a.worker_id, b.worker_id);
    EXPECT_EQ(a.started_at_ms, b.started_at_ms);
    EXPECT_EQ(a.finished_at_ms, b.finished_at_ms);
    EXPECT_EQ(a.outcome, b.outcome);
    EXPECT_EQ(a.exception_class_path, b.exception_class_path);
    EXPECT_EQ(a.traceback, b.traceback);
  }
}

TEST_F(QueueTest, AnsweredJobsAreTheStoredOnesForFirstAndLaterAttempts) {
  // First attempts are answered from memory, later ones read back: both must match the store.
  Job j;
  j.task = "t";
  j.args = "\x91\x01";
  j.kwargs = "\x80";
  j.max_attempts = 3;
  j.backoff_seconds = 0;
  j.unique_key = "k";
  Job queued = EnqueueJob(j);
  Enqueue("next");
  Job first = Dequeue().at(0);
  ExpectStored(first, **queue_->Get(queued.id));
  clock_.Advance(7'000);
  ASSERT_TRUE(Fail(first).ok());
  clock_.Advance(3'000);
  Job second = Dequeue().at(0);
  ASSERT_EQ(second.id, queued.id);
  ExpectStored(second, **queue_->Get(queued.id));
  clock_.Advance(5'000);
  auto done = Complete(second);
  ASSERT_TRUE(done.ok());
  ExpectStored(*done, **queue_->Get(queued.id));

  Job other = Dequeue().at(0);
  clock_.Advance(2'000);
  auto r = CompleteAndDequeue(other);
  ASSERT_TRUE(r.ok() && r->completed.has_value());
  ExpectStored(*r->completed, **queue_->Get(other.id));
  Job third = Enqueue("third");
  Job running = Dequeue().at(0);
  auto plain = Complete(running, "\x92\x01\xa1x");
  ASSERT_TRUE(plain.ok());
  ExpectStored(*plain, **queue_->Get(third.id));
}

TEST_F(QueueTest, CompleteAndDequeueSurvivesARestart) {
  Enqueue("first");
  Job second = Enqueue("second");
  Job running = Dequeue().at(0);
  auto r = CompleteAndDequeue(running);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->jobs.size(), 1u);
  queue_->Stop();
  Open();
  EXPECT_EQ(StateOf(running.id), JobState::kSuccessful);
  EXPECT_EQ(StateOf(second.id), JobState::kRunning);
  ASSERT_TRUE(Complete(r->jobs[0]).ok());  // its lease survived with it
}

TEST_F(QueueTest, MissedScheduleSlotsRunOnceAcrossRestarts) {
  auto cron = CronSchedule::Parse("*/10 * * * *");
  ASSERT_TRUE(cron.ok());
  JobQueue::Schedule s{"tick", *cron, Job()};
  s.job.task = "tick";
  Open({s});  // first sight: no catch-up, just the next slot
  PumpUntil([&] { return true; });
  auto stats = queue_->Stats();
  EXPECT_EQ(stats->count("default"), 0u);
  // Pretend the gateway was down across a slot.
  queue_->Stop();
  clock_.Advance(int64_t{3600} * 1'000'000);
  Open({s});
  PumpUntil([&] { return queue_->Stats()->count("default") == 1; });
  EXPECT_EQ(queue_->Stats()->at("default").states.at(JobState::kReady), 1);
  queue_->Stop();
  Open({s});  // same slot again: nothing new
  PumpUntil([&] { return true; });
  EXPECT_EQ(queue_->Stats()->at("default").states.at(JobState::kReady), 1);
  // The next slot arrives through the timer.
  const int64_t next = *cron->Next(clock_.NowUnixMicros() / 1000);
  clock_.Advance((next - clock_.NowUnixMicros() / 1000) * 1000);
  queue_->OnTimer();
  PumpUntil([&] { return queue_->Stats()->at("default").states[JobState::kReady] == 2; });
}

TEST(JobIdTest, IdsAreHexSortByEnqueueTimeAndDoNotRepeat) {
  std::set<std::string> seen;
  std::string previous;
  for (int64_t ms = 1'700'000'000'000; ms < 1'700'000'000'000 + 2000; ms += 7) {
    const std::string id = NewJobId(ms);
    ASSERT_EQ(id.size(), 32u);
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
    EXPECT_LT(previous, id);
    EXPECT_TRUE(seen.insert(id).second);
    EXPECT_TRUE(seen.insert(NewJobId(ms)).second);  // same millisecond: the random part differs
    previous = id;
  }
  EXPECT_EQ(NewJobId(0x0123456789ab).substr(0, 12), "0123456789ab");
}

TEST(CronTest, ParsesAndFindsSlots) {
  auto every5 = CronSchedule::Parse("*/5 * * * *");
  ASSERT_TRUE(every5.ok());
  const int64_t t = 1'700'000'123'456;                 // 2023-11-14T22:15:23.456Z
  EXPECT_EQ(*every5->Next(t), 1'700'000'400'000);      // 22:20
  EXPECT_EQ(*every5->Previous(t), 1'700'000'100'000);  // 22:15
  auto daily = CronSchedule::Parse("30 3 * * *");
  EXPECT_EQ(*daily->Next(t) % 86'400'000, (3 * 60 + 30) * 60'000);
  auto weekdays = CronSchedule::Parse("0 9 * * 1-5");
  ASSERT_TRUE(weekdays.ok());
  EXPECT_FALSE(CronSchedule::Parse("* * *").ok());
  EXPECT_FALSE(CronSchedule::Parse("60 * * * *").ok());
  EXPECT_FALSE(CronSchedule::Parse("*/0 * * * *").ok());
  EXPECT_FALSE(CronSchedule::Parse("0 0 31 2 *")->Next(t).has_value());
}

}  // namespace
}  // namespace services::queue
