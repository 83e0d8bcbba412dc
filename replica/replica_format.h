// The replica's objects and their names: snapshots (a whole database image) and segments (the
// transactions committed after it), each a fixed header plus a zstd-compressed body whose SHA-256
// is in the header. Specified in replica/FORMAT.md; this file is the code for that spec.
//
// Threads: pure functions, safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "replica/wal_reader.h"
#include "services/status.h"

namespace replica {

inline constexpr size_t kObjectHeaderBytes = 128;

enum class ObjectKind { kSnapshot, kSegment };

struct ObjectHeader {
  ObjectKind kind = ObjectKind::kSegment;
  uint32_t page_size = 0;
  uint64_t first_txid = 0;  // snapshot: its txid
  uint64_t last_txid = 0;   // snapshot: its txid
  int64_t first_time_ms = 0;
  int64_t last_time_ms = 0;
  uint64_t body_bytes = 0;  // uncompressed
  std::string body_sha256;  // 32 raw bytes
  // The WAL position this object's data ends at, so replication can continue from it.
  uint32_t wal_salt1 = 0;
  uint32_t wal_salt2 = 0;
  uint32_t wal_checkpoint_seq = 0;
  WalPosition wal_end;
  uint32_t db_pages = 0;  // database size after the last transaction
};

std::string EncodeHeader(const ObjectHeader& h);
services::Result<ObjectHeader> DecodeHeader(std::string_view bytes);

// One transaction as stored in a segment.
struct SegmentTransaction {
  uint64_t txid = 0;
  int64_t time_ms = 0;
  uint32_t db_pages = 0;
  std::vector<WalPage> pages;
};

// A whole segment object: header + compressed body.
std::string EncodeSegment(ObjectHeader header, const std::vector<SegmentTransaction>& txns);
// Decodes and verifies (header, checksum, structure) a segment object.
services::Result<std::vector<SegmentTransaction>> DecodeSegment(std::string_view object,
                                                                ObjectHeader* header);

// Writes a snapshot object for the database file `db_path` (a consistent copy) to `out_path`.
services::Status WriteSnapshotFile(const std::string& db_path, ObjectHeader header,
                                   const std::string& out_path);
// Reads the snapshot object at `object_path` into a database file at `db_path`, verifying the
// checksum. Returns the header.
services::Result<ObjectHeader> ReadSnapshotFile(const std::string& object_path,
                                                const std::string& db_path);

// --- names ---------------------------------------------------------------------------------------

// "<unix ms, 16 hex>-<8 random hex>": sorts by creation time.
std::string NewGenerationId(int64_t now_ms);
std::string GenerationPrefix(const std::string& db, const std::string& generation);
// Keys carry the transaction range and time, so choosing objects needs no header reads.
std::string SnapshotKey(const std::string& db, const std::string& generation, uint64_t txid,
                        int64_t time_ms);
std::string SegmentKey(const std::string& db, const std::string& generation, int level,
                       uint64_t first_txid, uint64_t last_txid, int64_t last_time_ms);

// What a key names, parsed back.
struct ParsedKey {
  std::string db;
  std::string generation;
  ObjectKind kind = ObjectKind::kSegment;
  int level = 0;
  uint64_t first_txid = 0;
  uint64_t last_txid = 0;
  int64_t time_ms = 0;  // snapshot: its time; segment: its last transaction's time
};
std::optional<ParsedKey> ParseKey(std::string_view key);

std::string Hex16(uint64_t v);

}  // namespace replica
