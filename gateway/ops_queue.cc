#include "gateway/ops_queue.h"

#include <cmath>

namespace gateway {
namespace {

using services::Result;
using services::Status;
using services::queue::Job;
using services::queue::JobQueue;
using services::queue::JobState;

constexpr size_t kMaxNameBytes = 200;
constexpr size_t kMaxTaskBytes = 1000;
constexpr uint64_t kMaxDequeueJobs = 100;
constexpr uint64_t kMaxWaitMs = 600'000;
constexpr double kMaxLeaseSeconds = 7 * 86'400.0;

const OpSpec kEnqueueSpec{"queue.enqueue",
                          {{"task", ArgType::kStr, true},
                           {"queue", ArgType::kStr, false},
                           {"args", ArgType::kArray, false},
                           {"kwargs", ArgType::kMap, false},
                           {"priority", ArgType::kInt, false},
                           {"run_after", ArgType::kFloat, false},
                           {"max_attempts", ArgType::kUint, false},
                           {"backoff", ArgType::kFloat, false},
                           {"unique_key", ArgType::kStr, false}},
                          nullptr};
// The `complete` map of queue.dequeue: queue.complete's arguments.
const OpSpec kCompleteSpec{"queue.dequeue complete",
                           {{"id", ArgType::kStr, true},
                            {"lease_token", ArgType::kStr, true},
                            {"return_value", ArgType::kAny, false}},
                           nullptr};

void PackTime(Packer& p, const std::optional<int64_t>& ms) {
  if (ms) {
    PackFloat64(p, static_cast<double>(*ms) / 1000.0);
  } else {
    p.pack_nil();
  }
}

// Packs a stored msgpack value, or `empty_container` (0x90 / 0x80) or nil when there is none.
void PackStored(Packer& p, const std::string& bytes, const char* fallback_kind) {
  if (!bytes.empty()) {
    try {
      msgpack::object_handle h = msgpack::unpack(bytes.data(), bytes.size());
      p.pack(h.get());
      return;
    } catch (const std::exception&) {
      // Stored by this server from validated msgpack, so this cannot happen; answer nil.
    }
  }
  if (std::string_view(fallback_kind) == "array") {
    p.pack_array(0);
  } else if (std::string_view(fallback_kind) == "map") {
    p.pack_map(0);
  } else {
    p.pack_nil();
  }
}

std::string Repack(const msgpack::object& o) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, o);
  return std::string(buf.data(), buf.size());
}

void PackJob(Packer& p, const Job& j, int64_t now, bool with_lease) {
  p.pack_map(with_lease ? 20 : 18);
  PackStr(p, "id");
  PackStr(p, j.id);
  PackStr(p, "queue");
  PackStr(p, j.queue);
  PackStr(p, "task");
  PackStr(p, j.task);
  PackStr(p, "args");
  PackStored(p, j.args, "array");
  PackStr(p, "kwargs");
  PackStored(p, j.kwargs, "map");
  PackStr(p, "priority");
  p.pack_int64(j.priority);
  PackStr(p, "state");
  PackStr(p, services::queue::StateName(j.VisibleState(now)));
  PackStr(p, "run_after");
  PackTime(p, j.run_after_ms);
  PackStr(p, "attempts");
  p.pack_int64(j.attempts);
  PackStr(p, "max_attempts");
  p.pack_int64(j.max_attempts);
  PackStr(p, "enqueued_at");
  PackTime(p, j.enqueued_at_ms);
  PackStr(p, "started_at");
  PackTime(p, j.started_at_ms);
  PackStr(p, "finished_at");
  PackTime(p, j.finished_at_ms);
  PackStr(p, "last_attempted_at");
  PackTime(p, j.last_attempted_at_ms);
  PackStr(p, "worker_ids");
  if (j.history.empty() && j.worker_id) {
    p.pack_array(1);
    PackStr(p, *j.worker_id);
  } else {
    p.pack_array(static_cast<uint32_t>(j.history.size()));
    for (const auto& a : j.history) PackStr(p, a.worker_id);
  }
  PackStr(p, "errors");
  uint32_t errors = 0;
  for (const auto& a : j.history) errors += !a.exception_class_path.empty();
  p.pack_array(errors);
  for (const auto& a : j.history) {
    if (a.exception_class_path.empty()) continue;
    p.pack_map(5);
    PackStr(p, "attempt");
    p.pack_int64(a.attempt);
    PackStr(p, "at");
    PackTime(p, a.finished_at_ms);
    PackStr(p, "exception_class_path");
    PackStr(p, a.exception_class_path);
    PackStr(p, "traceback");
    PackStr(p, a.traceback);
    PackStr(p, "worker_id");
    PackStr(p, a.worker_id);
  }
  PackStr(p, "return_value");
  PackStored(p, j.return_value.value_or(std::string()), "nil");
  PackStr(p, "unique_key");
  if (j.unique_key) {
    PackStr(p, *j.unique_key);
  } else {
    p.pack_nil();
  }
  if (with_lease) {
    PackStr(p, "lease_token");
    PackStr(p, j.lease_token.value_or(""));
    PackStr(p, "lease_expires_at");
    PackTime(p, j.lease_expires_at_ms);
  }
}

ErrorCode QueueErrorCode(const Status& st) {
  ErrorCode code = ErrorCode::kStorageError;
  if (st.code() == Status::Code::kNotFound) {
    code = ErrorCode::kJobNotFound;
  } else if (services::queue::IsLeaseLost(st)) {
    code = ErrorCode::kLeaseLost;
  } else if (st.code() == Status::Code::kFailedPrecondition) {
    code = ErrorCode::kInvalidState;
  }
  return code;
}

void ReplyError(Reply& reply, const Status& st) { reply.Error(QueueErrorCode(st), st.message()); }

// Decodes dequeue's `complete` map; false after answering `reply`.
bool DecodeCompletion(const msgpack::object& map, Reply& reply, JobQueue::Completion* out) {
  if (std::optional<std::string> problem = OpTable::CheckArgs(kCompleteSpec, map)) {
    reply.Error(ErrorCode::kBadArgument, "complete: " + *problem);
    return false;
  }
  const Args c(map);
  out->id = std::string(*c.Str("id"));
  out->token = std::string(*c.Str("lease_token"));
  if (const msgpack::object* v = c.Find("return_value")) out->return_value = Repack(*v);
  return true;
}

// Decodes the arguments of one enqueue; false after answering `reply`.
bool DecodeJob(const Args& a, Reply& reply, Job* job) {
  auto bad = [&](const std::string& msg) {
    reply.Error(ErrorCode::kBadArgument, msg);
    return false;
  };
  job->task = std::string(*a.Str("task"));
  if (job->task.empty() || job->task.size() > kMaxTaskBytes)
    return bad("'task' must be 1 to 1000 bytes");
  job->queue = std::string(a.Str("queue").value_or("default"));
  if (job->queue.empty() || job->queue.size() > kMaxNameBytes)
    return bad("'queue' must be 1 to 200 bytes");
  const msgpack::object* args = a.Find("args");
  job->args = args ? Repack(*args) : std::string("\x90", 1);
  const msgpack::object* kwargs = a.Find("kwargs");
  job->kwargs = kwargs ? Repack(*kwargs) : std::string("\x80", 1);
  job->priority = a.Int("priority").value_or(0);
  if (job->priority < -100 || job->priority > 100) return bad("'priority' must be -100 to 100");
  if (std::optional<double> run_after = a.Float("run_after")) {
    if (!std::isfinite(*run_after)) return bad("'run_after' must be a finite Unix time");
    // Rounded up: a job never starts before the time it was given.
    job->run_after_ms = static_cast<int64_t>(std::ceil(*run_after * 1000.0));
  }
  job->max_attempts = static_cast<int64_t>(a.Uint("max_attempts").value_or(1));
  if (job->max_attempts < 1 || job->max_attempts > 1000)
    return bad("'max_attempts' must be 1 to 1000");
  job->backoff_seconds = a.Float("backoff").value_or(1.0);
  if (!(job->backoff_seconds >= 0) || job->backoff_seconds > 86'400) {
    return bad("'backoff' must be 0 to 86400 seconds");
  }
  if (std::optional<std::string_view> key = a.Str("unique_key")) {
    if (key->empty() || key->size() > kMaxTaskBytes)
      return bad("'unique_key' must be 1 to 1000 bytes");
    job->unique_key.emplace(*key);
  }
  return true;
}

}  // namespace

QueueOps::QueueOps(uv_loop_t* loop, LoopTasks* tasks, const services::Clock* clock)
    : check_(new uv_check_t), idle_(new uv_idle_t), tasks_(tasks), clock_(clock) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
  uv_check_init(loop, check_);
  uv_idle_init(loop, idle_);
  check_->data = this;
}

JobQueue::Hooks QueueOps::Hooks() {
  JobQueue::Hooks hooks;
  LoopTasks* tasks = tasks_;
  hooks.post = [tasks](std::function<void()> f) { tasks->Post(std::move(f)); };
  hooks.arm_timer = [this](int64_t at_ms) {
    if (closed_) return;
    const int64_t now = clock_->NowUnixMicros() / 1000;
    uv_timer_start(&timer_, OnTimer, static_cast<uint64_t>(std::max<int64_t>(0, at_ms - now)), 0);
  };
  hooks.flush_soon = [this] {
    if (closed_) {
      // Past the loop's last turns: let the writer thread take it from here.
      if (queue_) queue_->FlushWrites();
      return;
    }
    uv_check_start(check_, OnCheck);
    uv_idle_start(idle_, [](uv_idle_t*) {});
  };
  return hooks;
}

void QueueOps::OnCheck(uv_check_t* check) {
  auto* self = static_cast<QueueOps*>(check->data);
  uv_check_stop(self->check_);
  uv_idle_stop(self->idle_);
  if (self->queue_) self->queue_->FlushWrites();
}

void QueueOps::OnTimer(uv_timer_t* timer) {
  auto* self = static_cast<QueueOps*>(timer->data);
  if (self->queue_) self->queue_->OnTimer();
}

void QueueOps::Close() {
  if (closed_) return;
  closed_ = true;
  if (queue_) queue_->FlushWrites();
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(check_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
  uv_close(reinterpret_cast<uv_handle_t*>(idle_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
}

bool QueueOps::Ready(Reply& reply) {
  if (queue_) return true;
  reply.Error(ErrorCode::kInternal, "the queue is not open yet");
  return false;
}

void QueueOps::Register(OpTable* table) {
  auto bind = [this](void (QueueOps::*fn)(const Args&, Reply)) {
    return [this, fn](const Args& a, Reply r) {
      if (Ready(r)) (this->*fn)(a, std::move(r));
    };
  };
  const ArgSpec id{"id", ArgType::kStr, true};
  const ArgSpec token{"lease_token", ArgType::kStr, true};
  OpSpec enqueue = kEnqueueSpec;
  enqueue.handler = bind(&QueueOps::Enqueue);
  table->Add(std::move(enqueue));
  table->Add(
      {"queue.enqueue_many", {{"jobs", ArgType::kArray, true}}, bind(&QueueOps::EnqueueMany)});
  table->Add({"queue.dequeue",
              {{"queues", ArgType::kArray, true},
               {"worker_id", ArgType::kStr, true},
               {"max_jobs", ArgType::kUint, false},
               {"lease_seconds", ArgType::kFloat, false},
               {"wait_ms", ArgType::kUint, false},
               {"complete", ArgType::kMap, false}},
              bind(&QueueOps::Dequeue)});
  table->Add({"queue.heartbeat",
              {id, token, {"lease_seconds", ArgType::kFloat, false}},
              bind(&QueueOps::Heartbeat)});
  table->Add({"queue.complete",
              {id, token, {"return_value", ArgType::kAny, false}},
              bind(&QueueOps::Complete)});
  table->Add({"queue.fail",
              {id,
               token,
               {"exception_class_path", ArgType::kStr, false},
               {"traceback", ArgType::kStr, false},
               {"retry", ArgType::kBool, false}},
              bind(&QueueOps::Fail)});
  table->Add({"queue.release", {id, token}, bind(&QueueOps::Release)});
  table->Add({"queue.cancel", {id}, bind(&QueueOps::Cancel)});
  table->Add({"queue.get", {id}, bind(&QueueOps::Get)});
  table->Add({"queue.wait", {id, {"timeout_ms", ArgType::kUint, false}}, bind(&QueueOps::Wait)});
  table->Add({"queue.stats", {}, [this](const Args&, Reply r) {
                if (Ready(r)) Stats(std::move(r));
              }});
  const ArgSpec queue_name{"queue", ArgType::kStr, true};
  table->Add({"queue.pause", {queue_name}, [this](const Args& a, Reply r) {
                if (Ready(r)) Pause(a, std::move(r), true);
              }});
  table->Add({"queue.resume", {queue_name}, [this](const Args& a, Reply r) {
                if (Ready(r)) Pause(a, std::move(r), false);
              }});
  table->Add({"queue.retry_failed",
              {{"queue", ArgType::kStr, false}, {"ids", ArgType::kArray, false}},
              bind(&QueueOps::RetryFailed)});
  table->Add({"queue.prune",
              {{"older_than", ArgType::kFloat, true}, {"states", ArgType::kArray, false}},
              bind(&QueueOps::Prune)});
}

// Completes `reply` with the job list `r` (or its error). Shared so a callback can own it.
static void ReplyJobs(Reply& reply, const Result<std::vector<Job>>& r, int64_t now, bool lease) {
  if (!r.ok()) {
    ReplyError(reply, r.status());
    return;
  }
  reply.Ok([&](Packer& p) {
    p.pack_array(static_cast<uint32_t>(r->size()));
    for (const Job& j : *r) PackJob(p, j, now, lease);
  });
}

static void ReplyJob(Reply& reply, const Result<Job>& r, int64_t now) {
  if (!r.ok()) {
    ReplyError(reply, r.status());
    return;
  }
  reply.Ok([&](Packer& p) { PackJob(p, *r, now, false); });
}

void QueueOps::Enqueue(const Args& args, Reply reply) {
  Job job;
  if (!DecodeJob(args, reply, &job)) return;
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->Enqueue({std::move(job)}, [this, shared](Result<std::vector<Job>> r) {
    if (!r.ok()) {
      ReplyError(*shared, r.status());
      return;
    }
    ReplyJob(*shared, r->at(0), clock_->NowUnixMicros() / 1000);
  });
}

void QueueOps::EnqueueMany(const Args& args, Reply reply) {
  const msgpack::object_array& items = args.Find("jobs")->via.array;
  std::vector<Job> jobs;
  jobs.reserve(items.size);
  for (uint32_t i = 0; i < items.size; ++i) {
    const msgpack::object& item = items.ptr[i];
    if (item.type != msgpack::type::MAP) {
      reply.Error(ErrorCode::kBadArgument,
                  "each element of 'jobs' must be a map of enqueue arguments");
      return;
    }
    if (std::optional<std::string> problem = OpTable::CheckArgs(kEnqueueSpec, item)) {
      reply.Error(ErrorCode::kBadArgument, "jobs[" + std::to_string(i) + "]: " + *problem);
      return;
    }
    Job job;
    if (!DecodeJob(Args(item), reply, &job)) return;
    jobs.push_back(std::move(job));
  }
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->Enqueue(std::move(jobs), [this, shared](Result<std::vector<Job>> r) {
    ReplyJobs(*shared, r, clock_->NowUnixMicros() / 1000, false);
  });
}

void QueueOps::Dequeue(const Args& args, Reply reply) {
  JobQueue::DequeueRequest req;
  const msgpack::object_array& queues = args.Find("queues")->via.array;
  for (uint32_t i = 0; i < queues.size; ++i) {
    if (queues.ptr[i].type != msgpack::type::STR) {
      reply.Error(ErrorCode::kBadArgument, "'queues' must hold queue names (str)");
      return;
    }
    req.queues.emplace_back(queues.ptr[i].via.str.ptr, queues.ptr[i].via.str.size);
  }
  if (req.queues.empty()) {
    reply.Error(ErrorCode::kBadArgument, "'queues' must name at least one queue");
    return;
  }
  req.worker_id = std::string(*args.Str("worker_id"));
  req.max_jobs = args.Uint("max_jobs").value_or(1);
  if (req.max_jobs < 1 || req.max_jobs > kMaxDequeueJobs) {
    reply.Error(ErrorCode::kBadArgument, "'max_jobs' must be 1 to 100");
    return;
  }
  const double lease = args.Float("lease_seconds").value_or(60.0);
  if (!(lease > 0) || lease > kMaxLeaseSeconds) {
    reply.Error(ErrorCode::kBadArgument, "'lease_seconds' must be more than 0 and at most 7 days");
    return;
  }
  req.lease_ms = static_cast<int64_t>(std::ceil(lease * 1000));
  req.wait_ms = static_cast<int64_t>(std::min(args.Uint("wait_ms").value_or(0), kMaxWaitMs));
  if (const msgpack::object* complete = args.Find("complete")) {
    JobQueue::Completion completion;
    if (!DecodeCompletion(*complete, reply, &completion)) return;
    CompleteAndDequeue(std::move(completion), std::move(req), std::move(reply));
    return;
  }
  auto shared = std::make_shared<Reply>(std::move(reply));
  req.alive = [shared] { return shared->connected(); };
  queue_->Dequeue(std::move(req), [this, shared](Result<std::vector<Job>> r) {
    ReplyJobs(*shared, r, clock_->NowUnixMicros() / 1000, true);
  });
}

void QueueOps::CompleteAndDequeue(JobQueue::Completion completion, JobQueue::DequeueRequest req,
                                  Reply reply) {
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->CompleteAndDequeue(std::move(completion), std::move(req),
                             [this, shared](Result<JobQueue::CompletedAndDequeued> r) {
                               if (!r.ok()) {
                                 ReplyError(*shared, r.status());
                                 return;
                               }
                               const int64_t now = clock_->NowUnixMicros() / 1000;
                               shared->Ok([&](Packer& p) {
                                 p.pack_map(3);
                                 PackStr(p, "jobs");
                                 p.pack_array(static_cast<uint32_t>(r->jobs.size()));
                                 for (const Job& j : r->jobs) PackJob(p, j, now, true);
                                 PackStr(p, "completed");
                                 if (r->completed) {
                                   PackJob(p, *r->completed, now, false);
                                 } else {
                                   p.pack_nil();
                                 }
                                 PackStr(p, "completion_error");
                                 if (r->completion.ok()) {
                                   p.pack_nil();
                                 } else {
                                   const ErrorCode code = QueueErrorCode(r->completion);
                                   p.pack_map(3);
                                   PackStr(p, "status");
                                   p.pack_uint32(static_cast<uint32_t>(code));
                                   PackStr(p, "code");
                                   PackStr(p, ErrorCodeName(code));
                                   PackStr(p, "message");
                                   PackStr(p, r->completion.message());
                                 }
                               });
                             });
}

void QueueOps::Heartbeat(const Args& args, Reply reply) {
  const double lease = args.Float("lease_seconds").value_or(60.0);
  if (!(lease > 0) || lease > kMaxLeaseSeconds) {
    reply.Error(ErrorCode::kBadArgument, "'lease_seconds' must be more than 0 and at most 7 days");
    return;
  }
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->Heartbeat(std::string(*args.Str("id")), std::string(*args.Str("lease_token")),
                    static_cast<int64_t>(std::ceil(lease * 1000)),
                    [shared](Result<JobQueue::HeartbeatResult> r) {
                      if (!r.ok()) {
                        ReplyError(*shared, r.status());
                        return;
                      }
                      shared->Ok([&](Packer& p) {
                        p.pack_map(r->cancelled ? 1 : 2);
                        PackStr(p, "cancelled");
                        r->cancelled ? p.pack_true() : p.pack_false();
                        if (!r->cancelled) {
                          PackStr(p, "lease_expires_at");
                          PackTime(p, r->lease_expires_at_ms);
                        }
                      });
                    });
}

void QueueOps::Complete(const Args& args, Reply reply) {
  std::optional<std::string> value;
  if (const msgpack::object* v = args.Find("return_value")) value = Repack(*v);
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->Complete(
      std::string(*args.Str("id")), std::string(*args.Str("lease_token")), std::move(value),
      [this, shared](Result<Job> r) { ReplyJob(*shared, r, clock_->NowUnixMicros() / 1000); });
}

void QueueOps::Fail(const Args& args, Reply reply) {
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->Fail(
      std::string(*args.Str("id")), std::string(*args.Str("lease_token")),
      std::string(args.Str("exception_class_path").value_or("builtins.Exception")),
      std::string(args.Str("traceback").value_or("")), args.Bool("retry").value_or(true),
      [this, shared](Result<Job> r) { ReplyJob(*shared, r, clock_->NowUnixMicros() / 1000); });
}

void QueueOps::Release(const Args& args, Reply reply) {
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->Release(
      std::string(*args.Str("id")), std::string(*args.Str("lease_token")),
      [this, shared](Result<Job> r) { ReplyJob(*shared, r, clock_->NowUnixMicros() / 1000); });
}

void QueueOps::Cancel(const Args& args, Reply reply) {
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->Cancel(std::string(*args.Str("id")), [this, shared](Result<Job> r) {
    ReplyJob(*shared, r, clock_->NowUnixMicros() / 1000);
  });
}

void QueueOps::Get(const Args& args, Reply reply) {
  const std::string id(*args.Str("id"));
  Result<std::optional<Job>> job = queue_->Get(id);
  if (!job.ok()) {
    ReplyError(reply, job.status());
    return;
  }
  if (!job->has_value()) {
    reply.Error(ErrorCode::kJobNotFound, "no job has id " + id);
    return;
  }
  ReplyJob(reply, std::move(**job), clock_->NowUnixMicros() / 1000);
}

void QueueOps::Wait(const Args& args, Reply reply) {
  const uint64_t timeout = std::min(args.Uint("timeout_ms").value_or(30'000), kMaxWaitMs);
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->Wait(
      std::string(*args.Str("id")), static_cast<int64_t>(timeout),
      [this, shared](Result<Job> r) { ReplyJob(*shared, r, clock_->NowUnixMicros() / 1000); });
}

void QueueOps::Stats(Reply reply) {
  Result<std::map<std::string, JobQueue::QueueStats>> stats = queue_->Stats();
  if (!stats.ok()) {
    ReplyError(reply, stats.status());
    return;
  }
  reply.Ok([&](Packer& p) {
    p.pack_map(1);
    PackStr(p, "queues");
    p.pack_map(static_cast<uint32_t>(stats->size()));
    for (const auto& [name, q] : *stats) {
      PackStr(p, name);
      p.pack_map(4);
      PackStr(p, "paused");
      q.paused ? p.pack_true() : p.pack_false();
      PackStr(p, "states");
      p.pack_map(static_cast<uint32_t>(q.states.size()));
      for (const auto& [state, n] : q.states) {
        PackStr(p, services::queue::StateName(state));
        p.pack_int64(n);
      }
      PackStr(p, "oldest_ready_age");
      if (q.oldest_ready_age) {
        PackFloat64(p, *q.oldest_ready_age);
      } else {
        p.pack_nil();
      }
      PackStr(p, "pickup_latency");
      p.pack_map(4);
      PackStr(p, "count");
      p.pack_int64(q.pickup.count);
      PackStr(p, "p50");
      PackFloat64(p, q.pickup.p50);
      PackStr(p, "p99");
      PackFloat64(p, q.pickup.p99);
      PackStr(p, "max");
      PackFloat64(p, q.pickup.max);
    }
  });
}

void QueueOps::Pause(const Args& args, Reply reply, bool paused) {
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->SetPaused(std::string(*args.Str("queue")), paused, [shared](Result<bool> r) {
    if (!r.ok()) {
      ReplyError(*shared, r.status());
      return;
    }
    shared->Ok([](Packer& p) { p.pack_true(); });
  });
}

void QueueOps::RetryFailed(const Args& args, Reply reply) {
  std::optional<std::string> queue;
  if (std::optional<std::string_view> q = args.Str("queue")) queue.emplace(*q);
  std::vector<std::string> ids;
  if (const msgpack::object* list = args.Find("ids")) {
    for (uint32_t i = 0; i < list->via.array.size; ++i) {
      const msgpack::object& o = list->via.array.ptr[i];
      if (o.type != msgpack::type::STR) {
        reply.Error(ErrorCode::kBadArgument, "'ids' must hold job ids (str)");
        return;
      }
      ids.emplace_back(o.via.str.ptr, o.via.str.size);
    }
    if (ids.empty()) {
      reply.Ok([](Packer& p) { p.pack_int64(0); });
      return;
    }
  }
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->RetryFailed(std::move(queue), std::move(ids), [shared](Result<int64_t> r) {
    if (!r.ok()) {
      ReplyError(*shared, r.status());
      return;
    }
    shared->Ok([&](Packer& p) { p.pack_int64(*r); });
  });
}

void QueueOps::Prune(const Args& args, Reply reply) {
  const double older = *args.Float("older_than");
  if (!(older >= 0)) {
    reply.Error(ErrorCode::kBadArgument, "'older_than' must be 0 or more seconds");
    return;
  }
  std::vector<JobState> states = {JobState::kSuccessful, JobState::kFailed, JobState::kCancelled};
  if (const msgpack::object* list = args.Find("states")) {
    states.clear();
    for (uint32_t i = 0; i < list->via.array.size; ++i) {
      const msgpack::object& o = list->via.array.ptr[i];
      std::optional<JobState> s;
      if (o.type == msgpack::type::STR) {
        s = services::queue::ParseState(std::string_view(o.via.str.ptr, o.via.str.size));
      }
      if (!s || !services::queue::IsFinished(*s)) {
        reply.Error(ErrorCode::kBadArgument,
                    "'states' may hold only SUCCESSFUL, FAILED and CANCELLED");
        return;
      }
      states.push_back(*s);
    }
  }
  auto shared = std::make_shared<Reply>(std::move(reply));
  queue_->Prune(static_cast<int64_t>(older * 1000), std::move(states), [shared](Result<int64_t> r) {
    if (!r.ok()) {
      ReplyError(*shared, r.status());
      return;
    }
    shared->Ok([&](Packer& p) { p.pack_int64(*r); });
  });
}

}  // namespace gateway
