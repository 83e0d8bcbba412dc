// Helpers shared by the fuzz targets: a scratch folder for code that reads files, an
// exactly-sized copy of the input so AddressSanitizer catches a read one byte past its end, and a
// check that aborts with a message (libFuzzer records any abort as a crash, with the input).
//
// Threads: libFuzzer runs a target on one thread; nothing here is thread-safe.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace fuzz {

// Aborts with `what` when `ok` is false: an invariant of the code under test is broken.
inline void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  std::abort();
}

// The input copied into a heap block of exactly its size: std::string's spare capacity would
// hide an over-read from AddressSanitizer.
class ExactCopy {
 public:
  ExactCopy(const uint8_t* data, size_t size)
      : bytes_(new char[size == 0 ? 1 : size]), size_(size) {
    if (size > 0) std::memcpy(bytes_.get(), data, size);
  }
  std::string_view view() const { return std::string_view(bytes_.get(), size_); }

 private:
  std::unique_ptr<char[]> bytes_;
  size_t size_;
};

// A folder of its own for this process (libFuzzer's -fork and -jobs run several), in /dev/shm when
// there is one so that writing the input as a file costs no disk I/O; removed at exit.
class ScratchDir {
 public:
  static ScratchDir& Get() {
    static ScratchDir* dir = new ScratchDir();  // never destroyed: atexit removes the folder
    return *dir;
  }

  // Writes `bytes` to the file `name` in the folder, replacing it; returns its path.
  std::string Write(const std::string& name, std::string_view bytes) const {
    const std::string path = Path(name);
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    Check(fd >= 0, "cannot create a scratch file");
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
      Check(n > 0, "cannot write a scratch file");
      done += static_cast<size_t>(n);
    }
    close(fd);
    return path;
  }

  std::string Path(const std::string& name) const { return root_ + "/" + name; }

 private:
  ScratchDir() {
    const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : nullptr;
    if (base == nullptr) base = std::getenv("TMPDIR") != nullptr ? std::getenv("TMPDIR") : "/tmp";
    std::string templ = std::string(base) + "/gateway-fuzz-XXXXXX";
    Check(mkdtemp(templ.data()) != nullptr, "cannot create the scratch folder");
    root_ = templ;
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(Get().root_, ignored);
    });
  }

  std::string root_;
};

}  // namespace fuzz
