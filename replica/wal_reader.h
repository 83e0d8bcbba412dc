// WalReader: reads committed transactions out of a SQLite WAL file, verifying salts and the
// cumulative frame checksums exactly as SQLite does (https://www.sqlite.org/fileformat2.html#walformat).
//
// A position in a WAL is a frame index plus the running checksum after that frame; frames after
// the last commit frame, or from the first frame whose salt or checksum does not match, are not
// returned (they are uncommitted, or left over from an earlier use of the file).
// Threads: a WalReader is used by one thread; it opens the file per call, so any number may exist.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "services/status.h"

namespace replica {

inline constexpr size_t kWalHeaderBytes = 32;
inline constexpr size_t kWalFrameHeaderBytes = 24;

struct WalHeader {
  uint32_t magic = 0;
  uint32_t page_size = 0;
  uint32_t checkpoint_seq = 0;
  uint32_t salt1 = 0;
  uint32_t salt2 = 0;
  uint32_t checksum1 = 0;
  uint32_t checksum2 = 0;
  bool big_endian_checksums() const { return (magic & 1) != 0; }
};

// Where reading stopped: frames consumed so far in this WAL and the checksum after the last one.
struct WalPosition {
  uint64_t frames = 0;
  uint32_t checksum1 = 0;
  uint32_t checksum2 = 0;
};

struct WalPage {
  uint32_t pgno = 0;
  std::string data;  // page_size bytes
};

struct WalTransaction {
  uint32_t db_pages = 0;        // database size in pages after the commit
  std::vector<WalPage> pages;   // in WAL order; a page may appear more than once
};

struct WalRead {
  std::vector<WalTransaction> transactions;
  WalPosition end;  // after the last returned transaction
};

// Reads the header; nullopt when the WAL is absent or shorter than a header (no frames yet).
// kCorruption when the magic or header checksum is wrong.
services::Result<std::optional<WalHeader>> ReadWalHeader(const std::string& wal_path);

// The position at the start of the WAL described by `header` (no frames consumed).
WalPosition StartOf(const WalHeader& header);

// Reads the committed transactions after `from` (which must have been returned for this same
// header), up to about `max_bytes` of page data (at least one transaction when there is one).
services::Result<WalRead> ReadCommitted(const std::string& wal_path, const WalHeader& header,
                                        const WalPosition& from, size_t max_bytes);

// How many frames after `from` belong to committed transactions (without copying pages).
services::Result<uint64_t> CountCommittedFrames(const std::string& wal_path, const WalHeader& header,
                                                const WalPosition& from);

// True when the WAL still holds `at` (the same frames, checksums matching): walks from the start.
services::Result<bool> WalContains(const std::string& wal_path, const WalHeader& header,
                                   const WalPosition& at);

}  // namespace replica
