// FileClient: a replica in a local folder (file:// URLs). Every object is a file under the root;
// keys map to relative paths.
//
// Durability: an object is written to a temporary file, fsynced, then moved into place (link(2)
// for PutNew, so an existing object is never replaced; rename(2) otherwise) and its folder is
// fsynced, so after a crash an object is either whole or absent.
// Threads: safe from any number of threads.
#pragma once

#include <atomic>
#include <string>

#include "replica/replica_client.h"

namespace replica {

class FileClient final : public ReplicaClient {
 public:
  enum class Access {
    // The gateway that replicates: the folder is created when missing, and temporary files that
    // uploads interrupted by a crash left behind (older than an hour) are deleted when listed.
    kWrite,
    // Commands that only read (restore, generations, snapshots): a missing folder is an empty
    // replica, and nothing is created or deleted.
    kRead,
  };
  // `root` is an absolute folder.
  static services::Result<std::unique_ptr<FileClient>> Open(const std::string& root,
                                                            Access access = Access::kWrite);

  std::string Describe() const override { return "file://" + root_; }
  services::Status PutNew(const std::string& key, std::string_view data) override;
  services::Status Put(const std::string& key, std::string_view data) override;
  services::Result<std::string> PutIfMatch(const std::string& key, std::string_view data,
                                           const std::string& etag) override;
  services::Status PutFileNew(const std::string& key, const std::string& path) override;
  services::Result<std::string> Get(const std::string& key) override;
  services::Result<std::string> GetPrefix(const std::string& key, size_t n) override;
  services::Status GetToFile(const std::string& key, const std::string& path) override;
  services::Result<ObjectInfo> Head(const std::string& key) override;
  services::Result<std::vector<ObjectInfo>> List(const std::string& prefix) override;
  services::Status Delete(const std::string& key) override;
  ClientStats Stats() const override;

  // Reads a small local file whole (not a replica object).
  static services::Result<std::string> ReadLocal(const std::string& path);

 private:
  FileClient(std::string root, Access access) : root_(std::move(root)), access_(access) {}
  services::Result<std::string> PathOf(const std::string& key) const;
  // Writes `data` to a fresh temporary file beside `path`, fsynced; returns its name.
  services::Result<std::string> WriteTemp(const std::string& path, std::string_view data);
  // Moves `temp` to `path` (without replacing when `exclusive`), then fsyncs the folder.
  services::Status Publish(const std::string& temp, const std::string& path, bool exclusive);
  void Count(int64_t sent, int64_t received) const;

  std::string root_;
  Access access_;
  mutable std::atomic<int64_t> requests_{0}, bytes_sent_{0}, bytes_received_{0};
};

// Durable local file helpers, shared with restore.
services::Status WriteFileDurably(const std::string& path, std::string_view data);
services::Status FsyncDir(const std::string& dir);
services::Status CopyFileDurably(const std::string& from, const std::string& to);

}  // namespace replica
