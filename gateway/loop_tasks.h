// LoopTasks: hands work from other threads to the event loop thread.
//
// Post() may be called from any thread; the task runs soon after on the loop thread, in posting
// order. After Close() (loop thread), posted tasks are destroyed without running, on the posting
// thread; tasks must therefore be safe to destroy anywhere (a Reply is: once the loop has stopped
// its connections are gone and completing it is a no-op).
#pragma once

#include <uv.h>

#include <functional>
#include <mutex>
#include <vector>

namespace gateway {

class LoopTasks {
 public:
  explicit LoopTasks(uv_loop_t* loop);
  ~LoopTasks();

  void Post(std::function<void()> task);
  // Stops running tasks and closes the async handle. Loop thread only.
  void Close();

 private:
  static void OnAsync(uv_async_t* handle);

  uv_async_t async_;
  std::mutex mu_;
  std::vector<std::function<void()>> tasks_;  // guarded by mu_
  bool closed_ = false;                       // guarded by mu_
};

}  // namespace gateway
