#include "replica/wal_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "replica/big_endian.h"

namespace replica {
namespace {

using services::Result;
using services::Status;

constexpr uint32_t kMagicLittle = 0x377f0682;
constexpr uint32_t kMagicBig = 0x377f0683;
constexpr size_t kWalReadBytes = 256 << 10;  // read per system call while walking frames

constexpr auto Be32 = GetBe32;
uint32_t Le32(const unsigned char* p) {
  return (uint32_t{p[3]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[1]} << 8) | uint32_t{p[0]};
}

// SQLite's WAL checksum: two running 32-bit sums over pairs of words, with the word byte order
// chosen by the magic number.
void Checksum(const unsigned char* data, size_t n, bool big_endian, uint32_t* s1, uint32_t* s2) {
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint32_t a = big_endian ? Be32(data + i) : Le32(data + i);
    const uint32_t b = big_endian ? Be32(data + i + 4) : Le32(data + i + 4);
    *s1 += a + *s2;
    *s2 += b + *s1;
  }
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reads up to n bytes at offset, fewer only at the end of the file; returns how many.
Result<size_t> ReadUpTo(int fd, uint64_t offset, char* buf, size_t n, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd, buf + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::IoError("cannot read " + path + ": " + std::strerror(errno));
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

// Reads exactly n bytes at offset; false at end of file.
Result<bool> ReadAt(int fd, uint64_t offset, unsigned char* buf, size_t n, const std::string& path) {
  Result<size_t> got = ReadUpTo(fd, offset, reinterpret_cast<char*>(buf), n, path);
  if (!got.ok()) return got.status();
  return *got == n;
}

// Calls `visit(frame_index, frame_header, page)` for each valid frame after `from`, tracking the
// checksum; stops at the end of the file or the first invalid frame. Returns the last position
// visited (the caller decides which positions are commit boundaries).
template <typename Visit>
Status Walk(const std::string& path, const WalHeader& h, const WalPosition& from, Visit&& visit) {
  int raw = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::IoError("cannot open " + path + ": " + std::strerror(errno));
  }
  Fd fd(raw);
  const size_t frame_bytes = kWalFrameHeaderBytes + h.page_size;
  // Frames are read a batch per system call (a busy round reads thousands of them).
  const size_t batch = std::max<size_t>(1, kWalReadBytes / frame_bytes);
  std::string buf(batch * frame_bytes, '\0');
  WalPosition pos = from;
  for (;;) {
    const uint64_t offset = kWalHeaderBytes + pos.frames * frame_bytes;
    Result<size_t> got = ReadUpTo(fd.get(), offset, buf.data(), buf.size(), path);
    if (!got.ok()) return got.status();
    const size_t frames = *got / frame_bytes;  // a frame cut short by the file's end is not one
    for (size_t i = 0; i < frames; ++i) {
      const auto* p = reinterpret_cast<const unsigned char*>(buf.data() + i * frame_bytes);
      // A frame belongs to this WAL only if it carries this header's salts...
      if (Be32(p + 8) != h.salt1 || Be32(p + 12) != h.salt2) return Status::Ok();
      // ...and its checksum continues the chain.
      uint32_t s1 = pos.checksum1, s2 = pos.checksum2;
      Checksum(p, 8, h.big_endian_checksums(), &s1, &s2);
      Checksum(p + kWalFrameHeaderBytes, h.page_size, h.big_endian_checksums(), &s1, &s2);
      if (s1 != Be32(p + 16) || s2 != Be32(p + 20)) return Status::Ok();
      pos = WalPosition{pos.frames + 1, s1, s2};
      const std::string_view page(buf.data() + i * frame_bytes + kWalFrameHeaderBytes, h.page_size);
      if (!visit(pos, Be32(p), Be32(p + 4), page)) return Status::Ok();
    }
    if (frames < batch) return Status::Ok();  // the end of the file
  }
}

}  // namespace

Result<std::optional<WalHeader>> ReadWalHeader(const std::string& path) {
  int raw = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) {
    if (errno == ENOENT) return std::optional<WalHeader>();
    return Status::IoError("cannot open " + path + ": " + std::strerror(errno));
  }
  Fd fd(raw);
  unsigned char b[kWalHeaderBytes];
  Result<bool> got = ReadAt(fd.get(), 0, b, sizeof b, path);
  if (!got.ok()) return got.status();
  if (!*got) return std::optional<WalHeader>();
  WalHeader h;
  h.magic = Be32(b);
  if (h.magic != kMagicLittle && h.magic != kMagicBig) {
    // An all-zero header is a WAL that was reset and not yet reused.
    bool zero = true;
    for (unsigned char c : b) zero &= c == 0;
    if (zero) return std::optional<WalHeader>();
    return Status::Corruption(path + " is not a WAL file (bad magic)");
  }
  h.page_size = Be32(b + 8);
  h.checkpoint_seq = Be32(b + 12);
  h.salt1 = Be32(b + 16);
  h.salt2 = Be32(b + 20);
  h.checksum1 = Be32(b + 24);
  h.checksum2 = Be32(b + 28);
  uint32_t s1 = 0, s2 = 0;
  Checksum(b, 24, h.big_endian_checksums(), &s1, &s2);
  if (s1 != h.checksum1 || s2 != h.checksum2) {
    // A header being rewritten by a writer right now; the caller tries again next time.
    return std::optional<WalHeader>();
  }
  if (h.page_size < 512 || h.page_size > 65536 || (h.page_size & (h.page_size - 1)) != 0) {
    return Status::Corruption(path + " has an impossible page size " + std::to_string(h.page_size));
  }
  return std::optional<WalHeader>(h);
}

WalPosition StartOf(const WalHeader& h) { return WalPosition{0, h.checksum1, h.checksum2}; }

Result<WalRead> ReadCommitted(const std::string& path, const WalHeader& h, const WalPosition& from,
                              size_t max_bytes) {
  WalRead out;
  out.end = from;
  WalTransaction pending;
  size_t bytes = 0;
  Status st = Walk(path, h, from,
                   [&](const WalPosition& pos, uint32_t pgno, uint32_t commit_size,
                       std::string_view page) {
                     pending.pages.push_back(WalPage{pgno, std::string(page)});
                     bytes += page.size();
                     if (commit_size == 0) return true;  // not a commit frame: keep collecting
                     pending.db_pages = commit_size;
                     out.transactions.push_back(std::move(pending));
                     pending = WalTransaction();
                     out.end = pos;
                     return bytes < max_bytes;
                   });
  if (!st.ok()) return st;
  return out;
}

Result<uint64_t> CountCommittedFrames(const std::string& path, const WalHeader& h,
                                      const WalPosition& from) {
  uint64_t committed = from.frames;
  Status st = Walk(path, h, from,
                   [&](const WalPosition& pos, uint32_t, uint32_t commit_size, std::string_view) {
                     if (commit_size != 0) committed = pos.frames;
                     return true;
                   });
  if (!st.ok()) return st;
  return committed - from.frames;
}

Result<bool> WalContains(const std::string& path, const WalHeader& h, const WalPosition& at) {
  if (at.frames == 0) return at.checksum1 == h.checksum1 && at.checksum2 == h.checksum2;
  bool found = false;
  Status st = Walk(path, h, StartOf(h),
                   [&](const WalPosition& pos, uint32_t, uint32_t, std::string_view) {
                     if (pos.frames < at.frames) return true;
                     found = pos.checksum1 == at.checksum1 && pos.checksum2 == at.checksum2;
                     return false;
                   });
  if (!st.ok()) return st;
  return found;
}

}  // namespace replica
