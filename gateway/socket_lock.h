// SocketLock: makes sure one gateway at a time serves a socket path.
//
// The lock is an flock(2) on "<socket>.lock", held for the life of the process: the kernel drops
// it when the process dies, even by SIGKILL, so a socket file left behind by a dead gateway is
// recognised as stale and replaced, while a live one is never stolen.
// Threads: create and destroy on the main thread.
#pragma once

#include <memory>
#include <string>

#include "services/status.h"

namespace gateway {

class SocketLock {
 public:
  // Takes the lock and removes a stale socket file. Errors: kAlreadyExists when another process
  // holds the lock (the message names its pid); kFailedPrecondition when the path exists and is
  // not a socket, or is too long for a Unix socket; kIoError when the lock file cannot be made.
  static services::Result<std::unique_ptr<SocketLock>> Acquire(const std::string& socket_path);
  ~SocketLock();  // releases the lock; the lock file stays (removing it would race a new owner)

  SocketLock(const SocketLock&) = delete;
  SocketLock& operator=(const SocketLock&) = delete;

 private:
  explicit SocketLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace gateway
