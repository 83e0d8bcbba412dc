// QueueOps: the queue.* rows of the op table (PROTOCOL.md "Queue operations").
//
// Op glue: decodes arguments into services::queue types, calls JobQueue, and packs jobs back.
// Also the JobQueue's bridge to the event loop: its timer requests become a uv_timer, its writes
// are flushed at the end of each turn of the loop (a uv_check handle, as in CacheOps), and its
// writer thread's completions come back through LoopTasks.
// Threads: loop thread only.
#pragma once

#include <uv.h>

#include <memory>

#include "gateway/loop_tasks.h"
#include "gateway/op_table.h"
#include "services/clock.h"
#include "services/queue/job_queue.h"

namespace gateway {

class QueueOps {
 public:
  QueueOps(uv_loop_t* loop, LoopTasks* tasks, const services::Clock* clock);

  // The hooks to open the JobQueue with; valid as long as this object.
  services::queue::JobQueue::Hooks Hooks();
  // Takes the opened queue; ops answer `internal` until this is called.
  void Attach(std::unique_ptr<services::queue::JobQueue> queue) { queue_ = std::move(queue); }
  void Register(OpTable* table);
  // The queue, once attached (for metrics); nullptr before.
  services::queue::JobQueue* queue() { return queue_.get(); }
  // Answers parked dequeues and waits now (shutdown begins).
  void ReleaseWaiters() {
    if (queue_) queue_->ReleaseWaiters();
  }
  // Closes the timer (loop thread, at shutdown); the JobQueue is stopped on destruction.
  void Close();

 private:
  static void OnTimer(uv_timer_t* timer);
  static void OnCheck(uv_check_t* check);

  void Enqueue(const Args& args, Reply reply);
  void EnqueueMany(const Args& args, Reply reply);
  void Dequeue(const Args& args, Reply reply);
  // queue.dequeue with `complete`: the worker's finished job and its next ones in one write.
  void CompleteAndDequeue(services::queue::JobQueue::Completion completion,
                          services::queue::JobQueue::DequeueRequest req, Reply reply);
  void Heartbeat(const Args& args, Reply reply);
  void Complete(const Args& args, Reply reply);
  void Fail(const Args& args, Reply reply);
  void Release(const Args& args, Reply reply);
  void Cancel(const Args& args, Reply reply);
  void Get(const Args& args, Reply reply);
  void Wait(const Args& args, Reply reply);
  void Stats(Reply reply);
  void Pause(const Args& args, Reply reply, bool paused);
  void RetryFailed(const Args& args, Reply reply);
  void Prune(const Args& args, Reply reply);
  bool Ready(Reply& reply);

  uv_timer_t timer_;
  // Owned by the loop until their close callbacks free them. The idle handle keeps poll from
  // blocking when writes were gathered outside the poll phase; check handles alone do not.
  uv_check_t* check_;
  uv_idle_t* idle_;
  LoopTasks* tasks_;
  const services::Clock* clock_;
  std::unique_ptr<services::queue::JobQueue> queue_;
  bool closed_ = false;
};

}  // namespace gateway
