#include "gateway/socket_lock.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "services/test_util.h"

namespace gateway {
namespace {

// Leaves a socket file behind, as a gateway killed with SIGKILL would.
void MakeStaleSocket(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  close(fd);
}

TEST(SocketLockTest, OneOwnerAtATime) {
  services::TempDir dir;
  const std::string sock = dir.File("run/gw.sock");
  auto first = SocketLock::Acquire(sock);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = SocketLock::Acquire(sock);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), services::Status::Code::kAlreadyExists);
  EXPECT_NE(second.status().message().find("pid " + std::to_string(getpid())), std::string::npos)
      << second.status().message();
  first->reset();
  EXPECT_TRUE(SocketLock::Acquire(sock).ok());
}

TEST(SocketLockTest, ReplacesAStaleSocketButNotOtherFiles) {
  services::TempDir dir;
  const std::string sock = dir.File("gw.sock");
  MakeStaleSocket(sock);
  struct stat st;
  ASSERT_EQ(stat(sock.c_str(), &st), 0);
  auto lock = SocketLock::Acquire(sock);
  ASSERT_TRUE(lock.ok()) << lock.status().ToString();
  EXPECT_NE(stat(sock.c_str(), &st), 0) << "stale socket should be gone";
  lock->reset();

  std::ofstream(dir.File("file.sock")) << "not a socket";
  auto refused = SocketLock::Acquire(dir.File("file.sock"));
  EXPECT_EQ(refused.status().code(), services::Status::Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("not a socket"), std::string::npos);
}

TEST(SocketLockTest, RefusesPathsTooLongForUnixSockets) {
  auto lock = SocketLock::Acquire("/tmp/" + std::string(200, 'x'));
  EXPECT_EQ(lock.status().code(), services::Status::Code::kFailedPrecondition);
  EXPECT_NE(lock.status().message().find("shorter"), std::string::npos);
}

}  // namespace
}  // namespace gateway
