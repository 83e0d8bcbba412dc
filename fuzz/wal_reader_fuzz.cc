// Fuzz target: replica's WAL reader (ReadWalHeader, ReadCommitted, WalContains) on a WAL file.
//
// Input: [mode][WAL file bytes...], written to a scratch file because the reader takes a path.
// Random bytes almost never carry valid salts and checksums, so most inputs would stop at the
// header; when mode bit 0 is set the target first repairs the input into a WAL that SQLite could
// have written: the magic (bit 4: big-endian checksums), a page size of 512 << bits 1-3, the
// header checksum, and the salts and running checksum of each frame (all frames, or only the
// first n-1 when bits 5-7 hold n), leaving page numbers, commit sizes and page bytes as fuzzed.
//
// Checked: every returned transaction ends with a commit frame and holds whole pages; the frames
// returned are exactly the frames up to the end position and lie inside the file; reading in
// small steps (max_bytes 1) gives the same transactions as reading all at once, and each step
// ends where that read ended; WalContains holds for the start, the first and the last end
// returned, and not for an end with a wrong checksum.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "replica/wal_reader.h"

namespace {

using fuzz::Check;
using replica::kWalFrameHeaderBytes;
using replica::kWalHeaderBytes;
using replica::WalHeader;
using replica::WalPosition;
using replica::WalTransaction;

uint32_t Get32(const std::string& s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
void Put32(std::string* s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*s)[at + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
}

// SQLite's WAL checksum (fileformat2.html#walformat), written independently of the reader's.
void Sum(const std::string& s, size_t at, size_t n, bool big_endian, uint32_t* s1, uint32_t* s2) {
  for (size_t i = at; i + 8 <= at + n; i += 8) {
    uint32_t a = Get32(s, i), b = Get32(s, i + 4);
    if (!big_endian) {
      a = __builtin_bswap32(a);
      b = __builtin_bswap32(b);
    }
    *s1 += a + *s2;
    *s2 += b + *s1;
  }
}

// Makes `wal` a well-formed WAL as described at the top of the file.
void Repair(uint8_t mode, std::string* wal) {
  if (wal->size() < kWalHeaderBytes) return;
  const bool big_endian = (mode & 0x10) != 0;
  const uint32_t page_size = 512u << ((mode >> 1) & 7);
  const unsigned fixed_frames = (mode >> 5) == 0 ? UINT32_MAX : (mode >> 5) - 1u;
  Put32(wal, 0, big_endian ? 0x377f0683 : 0x377f0682);
  Put32(wal, 4, 3007000);
  Put32(wal, 8, page_size);
  uint32_t s1 = 0, s2 = 0;
  Sum(*wal, 0, 24, big_endian, &s1, &s2);
  Put32(wal, 24, s1);
  Put32(wal, 28, s2);
  const size_t frame_bytes = kWalFrameHeaderBytes + page_size;
  for (unsigned i = 0; i < fixed_frames; ++i) {
    const size_t at = kWalHeaderBytes + i * frame_bytes;
    if (at + frame_bytes > wal->size()) break;
    Put32(wal, at + 8, Get32(*wal, 16));
    Put32(wal, at + 12, Get32(*wal, 20));
    Sum(*wal, at, 8, big_endian, &s1, &s2);
    Sum(*wal, at + kWalFrameHeaderBytes, page_size, big_endian, &s1, &s2);
    Put32(wal, at + 16, s1);
    Put32(wal, at + 20, s2);
  }
}

bool SamePosition(const WalPosition& a, const WalPosition& b) {
  return a.frames == b.frames && a.checksum1 == b.checksum1 && a.checksum2 == b.checksum2;
}

bool SameTransactions(const std::vector<WalTransaction>& a, const std::vector<WalTransaction>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].db_pages != b[i].db_pages || a[i].pages.size() != b[i].pages.size()) return false;
    for (size_t j = 0; j < a[i].pages.size(); ++j) {
      if (a[i].pages[j].pgno != b[i].pages[j].pgno || a[i].pages[j].data != b[i].pages[j].data) {
        return false;
      }
    }
  }
  return true;
}

void CheckContains(const std::string& path, const WalHeader& h, const WalPosition& at) {
  services::Result<bool> in = replica::WalContains(path, h, at);
  Check(in.ok() && *in, "WalContains denies a position the reader returned");
  if (at.frames == 0) return;
  WalPosition wrong = at;
  wrong.checksum2 ^= 1;
  services::Result<bool> out = replica::WalContains(path, h, wrong);
  Check(out.ok() && !*out, "WalContains accepts a position with a wrong checksum");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return -1;
  std::string wal(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] & 1) Repair(data[0], &wal);
  const std::string path = fuzz::ScratchDir::Get().Write("db-wal", wal);

  services::Result<std::optional<WalHeader>> header = replica::ReadWalHeader(path);
  if (!header.ok() || !header->has_value()) return 0;
  const WalHeader h = **header;
  Check(h.page_size >= 512 && h.page_size <= 65536 && (h.page_size & (h.page_size - 1)) == 0,
        "ReadWalHeader accepted an impossible page size");

  const WalPosition start = replica::StartOf(h);
  services::Result<replica::WalRead> all = replica::ReadCommitted(path, h, start, SIZE_MAX);
  Check(all.ok(), "ReadCommitted failed on a readable file");
  uint64_t frames = 0;
  for (const WalTransaction& t : all->transactions) {
    Check(!t.pages.empty() && t.db_pages != 0, "a transaction without its commit frame");
    for (const replica::WalPage& p : t.pages) {
      Check(p.data.size() == h.page_size, "a page that is not page_size bytes");
    }
    frames += t.pages.size();
  }
  Check(frames == all->end.frames, "the end position does not count the frames returned");
  Check(kWalHeaderBytes + frames * (kWalFrameHeaderBytes + h.page_size) <= wal.size(),
        "frames returned beyond the end of the file");
  Check(all->transactions.empty() == SamePosition(all->end, start),
        "the end moved without a transaction, or stayed with one");

  // Step by step, the way replication reads with a byte budget.
  std::vector<WalTransaction> stepped;
  WalPosition at = start;
  CheckContains(path, h, at);
  for (size_t step = 0; step <= all->transactions.size(); ++step) {
    services::Result<replica::WalRead> r = replica::ReadCommitted(path, h, at, 1);
    Check(r.ok(), "ReadCommitted failed on a readable file");
    if (r->transactions.empty()) {
      Check(SamePosition(r->end, at), "an empty read moved the position");
      break;
    }
    Check(r->transactions.size() == 1,
          "a read with max_bytes 1 returned more than one transaction");
    for (WalTransaction& t : r->transactions) stepped.push_back(std::move(t));
    at = r->end;
    // WalContains walks from the start, so checking every step would make a run quadratic: the
    // first step's end and the last one cover a position in the middle and at the end.
    if (step == 0) CheckContains(path, h, at);
  }
  Check(SameTransactions(stepped, all->transactions), "stepped reads differ from one whole read");
  Check(SamePosition(at, all->end), "stepped reads end elsewhere than one whole read");
  CheckContains(path, h, at);
  return 0;
}
