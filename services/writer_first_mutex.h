// WriterFirstMutex: the lock on a database connection shared by a writer thread, which blocks
// for it, and an event loop, which only ever tries it (TryApplyNow). Once the writer thread asks,
// the loop's next tries fail until the writer thread has had its turn: a loop that is never idle
// would otherwise take the lock back each turn before the woken writer thread runs, and the
// writer's queued work, sweeps and WAL rewinds would wait indefinitely.
//
// Threads: LockForWriter from the writer thread; TryLock from the loop thread.
#pragma once

#include <atomic>
#include <mutex>

namespace services {

class WriterFirstMutex {
 public:
  std::unique_lock<std::mutex> LockForWriter() {
    writer_waiting_.store(true);
    std::unique_lock<std::mutex> lock(mu_);
    writer_waiting_.store(false);
    return lock;
  }
  // Owns the lock on success; not when it is held or the writer thread is waiting for it.
  std::unique_lock<std::mutex> TryLock() {
    if (writer_waiting_.load()) return std::unique_lock<std::mutex>(mu_, std::defer_lock);
    return std::unique_lock<std::mutex>(mu_, std::try_to_lock);
  }

 private:
  std::mutex mu_;
  std::atomic<bool> writer_waiting_{false};
};

}  // namespace services
