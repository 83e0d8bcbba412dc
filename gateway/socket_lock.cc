#include "gateway/socket_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

namespace gateway {

using services::Result;
using services::Status;

Result<std::unique_ptr<SocketLock>> SocketLock::Acquire(const std::string& socket_path) {
  if (socket_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::FailedPrecondition(
        "socket path " + socket_path + " is " + std::to_string(socket_path.size()) +
        " bytes; Unix sockets allow at most " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
        ": choose a shorter [server] socket");
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(socket_path).parent_path(), ec);
  if (ec) {
    return Status::IoError("cannot create the folder of socket " + socket_path + ": " +
                           ec.message());
  }
  const std::string lock_path = socket_path + ".lock";
  int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Status::IoError("cannot open lock file " + lock_path + ": " + std::strerror(errno));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {0};
    ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
    close(fd);
    std::string who = n > 0 ? std::string(pid, static_cast<size_t>(n)) : "unknown";
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    return Status::AlreadyExists("another gateway (pid " + who + ") is serving " + socket_path +
                                 "; stop it first or give this one another [server] socket");
  }
  const std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    Status st =
        Status::IoError("cannot write lock file " + lock_path + ": " + std::strerror(errno));
    close(fd);
    return st;
  }

  struct stat st;
  if (lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      close(fd);
      return Status::FailedPrecondition(socket_path +
                                        " exists and is not a socket; move it away "
                                        "or choose another [server] socket");
    }
    // We hold the lock, so whoever made this socket is gone: it is stale.
    if (unlink(socket_path.c_str()) != 0) {
      Status err = Status::IoError("cannot remove stale socket " + socket_path + ": " +
                                   std::strerror(errno));
      close(fd);
      return err;
    }
  }
  return std::unique_ptr<SocketLock>(new SocketLock(fd));
}

SocketLock::~SocketLock() { close(fd_); }

}  // namespace gateway
