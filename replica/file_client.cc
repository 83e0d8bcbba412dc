#include "replica/file_client.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>

namespace replica {
namespace {

using services::Result;
using services::Status;

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

std::string RandomSuffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IoError(Errno("cannot write", path));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// The etag of a file object: size and modification time, which change on every replace.
std::string EtagOf(const struct stat& st) {
  return std::to_string(st.st_size) + "-" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec) + "-" + std::to_string(st.st_ino);
}

}  // namespace

Status FsyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IoError(Errno("cannot open folder", dir));
  // The rename or link is durable only once the folder entry itself is on disk.
  int rc = fsync(fd);
  close(fd);
  if (rc != 0) return Status::IoError(Errno("cannot fsync folder", dir));
  return Status::Ok();
}

Status WriteFileDurably(const std::string& path, std::string_view data) {
  const std::string temp = path + ".tmp-" + RandomSuffix();
  int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError(Errno("cannot create", temp));
  Status st = WriteAll(fd, data, temp);
  // The data must be on disk before the name points at it, or a crash could leave an empty file.
  if (st.ok() && fsync(fd) != 0) st = Status::IoError(Errno("cannot fsync", temp));
  close(fd);
  if (st.ok() && rename(temp.c_str(), path.c_str()) != 0) {
    st = Status::IoError(Errno("cannot rename into", path));
  }
  if (!st.ok()) {
    unlink(temp.c_str());
    return st;
  }
  return FsyncDir(std::filesystem::path(path).parent_path().string());
}

Status CopyFileDurably(const std::string& from, const std::string& to) {
  int in = open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return Status::IoError(Errno("cannot open", from));
  const std::string temp = to + ".tmp-" + RandomSuffix();
  int out = open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (out < 0) {
    close(in);
    return Status::IoError(Errno("cannot create", temp));
  }
  Status st;
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = read(in, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st = Status::IoError(Errno("cannot read", from));
      break;
    }
    if (n == 0) break;
    st = WriteAll(out, std::string_view(buf.data(), static_cast<size_t>(n)), temp);
    if (!st.ok()) break;
  }
  if (st.ok() && fsync(out) != 0) st = Status::IoError(Errno("cannot fsync", temp));
  close(in);
  close(out);
  if (st.ok() && rename(temp.c_str(), to.c_str()) != 0) {
    st = Status::IoError(Errno("cannot rename into", to));
  }
  if (!st.ok()) {
    unlink(temp.c_str());
    return st;
  }
  return FsyncDir(std::filesystem::path(to).parent_path().string());
}

Result<std::unique_ptr<FileClient>> FileClient::Open(const std::string& root, Access access) {
  std::error_code ec;
  if (access == Access::kWrite) std::filesystem::create_directories(root, ec);
  if (ec) {
    return Status::IoError("cannot create replica folder " + root + ": " + ec.message() +
                           "; create it or fix [replica] url");
  }
  return std::unique_ptr<FileClient>(new FileClient(root, access));
}

void FileClient::Count(int64_t sent, int64_t received) const {
  ++requests_;
  bytes_sent_ += sent;
  bytes_received_ += received;
}

ClientStats FileClient::Stats() const {
  return {requests_.load(), bytes_sent_.load(), bytes_received_.load(), 0};
}

Result<std::string> FileClient::PathOf(const std::string& key) const {
  if (key.empty() || key.front() == '/' || key.find("..") != std::string::npos ||
      key.find('\0') != std::string::npos) {
    return Status::InvalidArgument("bad replica key '" + key + "'");
  }
  return root_ + "/" + key;
}

Result<std::string> FileClient::WriteTemp(const std::string& path, std::string_view data) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec) return Status::IoError("cannot create folder for " + path + ": " + ec.message());
  const std::string temp = path + ".tmp-" + RandomSuffix();
  int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError(Errno("cannot create", temp));
  Status st = WriteAll(fd, data, temp);
  if (st.ok() && fsync(fd) != 0) st = Status::IoError(Errno("cannot fsync", temp));
  close(fd);
  if (!st.ok()) {
    unlink(temp.c_str());
    return st;
  }
  return temp;
}

Status FileClient::Publish(const std::string& temp, const std::string& path, bool exclusive) {
  if (exclusive) {
    // link(2) fails with EEXIST instead of replacing: an atomic create-if-absent.
    int rc = link(temp.c_str(), path.c_str());
    int err = errno;
    unlink(temp.c_str());
    if (rc != 0) {
      if (err == EEXIST) return Status::AlreadyExists("replica object " + path + " exists");
      errno = err;
      return Status::IoError(Errno("cannot create", path));
    }
  } else if (rename(temp.c_str(), path.c_str()) != 0) {
    Status st = Status::IoError(Errno("cannot rename into", path));
    unlink(temp.c_str());
    return st;
  }
  return FsyncDir(std::filesystem::path(path).parent_path().string());
}

Status FileClient::PutNew(const std::string& key, std::string_view data) {
  Result<std::string> path = PathOf(key);
  if (!path.ok()) return path.status();
  Count(static_cast<int64_t>(data.size()), 0);
  Result<std::string> temp = WriteTemp(*path, data);
  if (!temp.ok()) return temp.status();
  return Publish(*temp, *path, true);
}

Status FileClient::Put(const std::string& key, std::string_view data) {
  Result<std::string> path = PathOf(key);
  if (!path.ok()) return path.status();
  Count(static_cast<int64_t>(data.size()), 0);
  Result<std::string> temp = WriteTemp(*path, data);
  if (!temp.ok()) return temp.status();
  return Publish(*temp, *path, false);
}

Result<std::string> FileClient::PutIfMatch(const std::string& key, std::string_view data,
                                           const std::string& etag) {
  Result<std::string> path = PathOf(key);
  if (!path.ok()) return path.status();
  if (etag.empty()) {
    GW_RETURN_IF_ERROR(PutNew(key, data));
  } else {
    // Compare and swap under an flock, so two gateways on one folder cannot both win; the kernel
    // drops the lock if we die here, so a crash never leaves the object locked.
    const std::string lock_path = *path + ".lock";
    int lock = open(lock_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (lock < 0 || flock(lock, LOCK_EX) != 0) {
      if (lock >= 0) close(lock);
      return Status::IoError(Errno("cannot lock", lock_path));
    }
    Result<ObjectInfo> current = Head(key);
    Status st;
    if (!current.ok()) {
      st = current.status();
    } else if (current->etag != etag) {
      st = Status::FailedPrecondition("replica object " + *path + " changed (etag mismatch)");
    } else {
      st = Put(key, data);
    }
    close(lock);  // releases the flock; the file stays (removing it would race the next locker)
    GW_RETURN_IF_ERROR(st);
  }
  Result<ObjectInfo> now = Head(key);
  if (!now.ok()) return now.status();
  return now->etag;
}

Status FileClient::PutFileNew(const std::string& key, const std::string& path) {
  Result<std::string> dest = PathOf(key);
  if (!dest.ok()) return dest.status();
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(*dest).parent_path(), ec);
  const std::string temp = *dest + ".tmp-" + RandomSuffix();
  GW_RETURN_IF_ERROR(CopyFileDurably(path, temp));
  Count(static_cast<int64_t>(std::filesystem::file_size(temp, ec)), 0);
  return Publish(temp, *dest, true);
}

Result<std::string> FileClient::Get(const std::string& key) {
  Result<std::string> path = PathOf(key);
  if (!path.ok()) return path.status();
  Result<std::string> data = ReadLocal(*path);
  if (data.ok()) Count(0, static_cast<int64_t>(data->size()));
  return data;
}

Result<std::string> FileClient::ReadLocal(const std::string& local_path) {
  const std::string* path = &local_path;
  int fd = open(path->c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("no replica object " + *path);
    return Status::IoError(Errno("cannot open", *path));
  }
  std::string data;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status st = Status::IoError(Errno("cannot read", *path));
      close(fd);
      return st;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return data;
}

Result<std::string> FileClient::GetPrefix(const std::string& key, size_t n) {
  Result<std::string> path = PathOf(key);
  if (!path.ok()) return path.status();
  int fd = open(path->c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("no replica object " + *path);
    return Status::IoError(Errno("cannot open", *path));
  }
  std::string data(n, '\0');
  ssize_t got = pread(fd, data.data(), n, 0);
  int err = errno;
  close(fd);
  if (got < 0) {
    errno = err;
    return Status::IoError(Errno("cannot read", *path));
  }
  data.resize(static_cast<size_t>(got));
  Count(0, got);
  return data;
}

Status FileClient::GetToFile(const std::string& key, const std::string& path) {
  Result<std::string> src = PathOf(key);
  if (!src.ok()) return src.status();
  if (access(src->c_str(), F_OK) != 0) return Status::NotFound("no replica object " + *src);
  std::error_code ec;
  Count(0, static_cast<int64_t>(std::filesystem::file_size(*src, ec)));
  return CopyFileDurably(*src, path);
}

Result<ObjectInfo> FileClient::Head(const std::string& key) {
  Result<std::string> path = PathOf(key);
  if (!path.ok()) return path.status();
  Count(0, 0);
  struct stat st;
  if (stat(path->c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::NotFound("no replica object " + *path);
    return Status::IoError(Errno("cannot stat", *path));
  }
  return ObjectInfo{key, st.st_size,
                    static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000,
                    EtagOf(st)};
}

Result<std::vector<ObjectInfo>> FileClient::List(const std::string& prefix) {
  Count(0, 0);
  std::vector<ObjectInfo> out;
  std::error_code ec;
  // Walk only the folder the prefix names (or its parent), not the whole replica.
  std::string dir = root_;
  const size_t slash = prefix.rfind('/');
  if (slash != std::string::npos) dir += "/" + prefix.substr(0, slash);
  if (!std::filesystem::exists(dir, ec)) return out;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    std::string key = it->path().string().substr(root_.size() + 1);
    if (key.rfind(prefix, 0) != 0) continue;
    const bool temp = key.find(".tmp-") != std::string::npos;
    if (temp && access_ == Access::kWrite) {
      // An upload's temporary file lives for seconds; one an hour old was left by a process
      // killed mid-upload (uploads of other gateways are younger), and nothing else removes it.
      struct stat st;
      constexpr time_t kAbandonedAfterSeconds = 3600;
      if (stat(it->path().c_str(), &st) == 0 &&
          st.st_mtim.tv_sec + kAbandonedAfterSeconds < time(nullptr)) {
        unlink(it->path().c_str());
      }
      continue;
    }
    if (temp || key.ends_with(".lock")) continue;
    struct stat st;
    if (stat(it->path().c_str(), &st) != 0) continue;  // deleted meanwhile
    out.push_back({key, st.st_size,
                   static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000,
                   EtagOf(st)});
  }
  if (ec) return Status::IoError("cannot list " + dir + ": " + ec.message());
  std::sort(out.begin(), out.end(),
            [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  return out;
}

Status FileClient::Delete(const std::string& key) {
  Result<std::string> path = PathOf(key);
  if (!path.ok()) return path.status();
  Count(0, 0);
  if (unlink(path->c_str()) != 0 && errno != ENOENT) {
    return Status::IoError(Errno("cannot delete", *path));
  }
  return Status::Ok();
}

}  // namespace replica
