#include "gateway/loop_tasks.h"

namespace gateway {

LoopTasks::LoopTasks(uv_loop_t* loop) {
  uv_async_init(loop, &async_, OnAsync);
  async_.data = this;
  // The async handle alone must not keep the loop running once everything else has stopped.
  uv_unref(reinterpret_cast<uv_handle_t*>(&async_));
}

LoopTasks::~LoopTasks() = default;

void LoopTasks::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_) {
      tasks_.push_back(std::move(task));
      // uv_async_send coalesces: many posts before the loop wakes cost one wake-up.
      uv_async_send(&async_);
      return;
    }
  }
  // Closed: `task` is destroyed here, outside the lock, without running.
}

void LoopTasks::OnAsync(uv_async_t* handle) {
  auto* self = static_cast<LoopTasks*>(handle->data);
  std::vector<std::function<void()>> run;
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    run.swap(self->tasks_);
  }
  for (std::function<void()>& task : run) task();
}

void LoopTasks::Close() {
  std::vector<std::function<void()>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    closed_ = true;
    dropped.swap(tasks_);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
}

}  // namespace gateway
