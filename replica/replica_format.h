// The replica's objects and their names: snapshots (a whole database image) and segments (the
// transactions committed after it), each a fixed header plus a zstd-compressed body whose SHA-256
// is in the header. Specified in replica/FORMAT.md; this file is the code for that spec.
//
// Threads: pure functions, safe from any thread.
#pragma once

#include <cstdint>
#include <memory>
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

// zstd levels: level-0 segments are written while writers wait for the CPU, so they take the
// fastest level that still compresses pages well; merges and snapshots run rarely and take zstd's
// default. Not visible in the format: any zstd frame reads the same.
inline constexpr int kFastZstdLevel = 1;
inline constexpr int kDefaultZstdLevel = 3;

// Writes a segment object while its body is being produced: each piece of the body goes through
// SHA-256 and the zstd stream as it comes, so the body itself is never held in memory (a busy round
// reads tens of MiB of pages, and a merge copies its inputs' transactions). Pages come from
// wherever the caller holds them (a WAL read, another segment's body). One thread at a time.
class SegmentBuilder {
 public:
  explicit SegmentBuilder(int zstd_level);
  ~SegmentBuilder();
  SegmentBuilder(const SegmentBuilder&) = delete;
  SegmentBuilder& operator=(const SegmentBuilder&) = delete;

  void AddTransaction(uint64_t txid, int64_t time_ms, uint32_t db_pages,
                      const std::vector<WalPage>& pages);
  // Appends whole encoded transactions as they are (a run cut from a verified segment body).
  void AddEncoded(std::string_view transactions);
  uint64_t body_bytes() const { return body_bytes_; }
  // The object: `header` (kind, body size and checksum filled in here) + the compressed body.
  // Call once, then check status(): an object built after a compression error must not be used.
  std::string Finish(ObjectHeader header);
  // Not ok once compression failed (zstd could not allocate); Add then does nothing.
  const services::Status& status() const { return status_; }

 private:
  struct Stream;
  static thread_local std::unique_ptr<Stream> spare_;  // the last stream released on this thread
  void Add(std::string_view piece);
  std::unique_ptr<Stream> stream_;
  std::string object_;  // the header's room, then the compressed body so far
  uint64_t body_bytes_ = 0;
  services::Status status_ = services::Status::Ok();
};

// A whole segment object: header + compressed body (at kDefaultZstdLevel).
std::string EncodeSegment(ObjectHeader header, const std::vector<SegmentTransaction>& txns);

// Where one transaction sits in a segment body.
struct EncodedTransaction {
  uint64_t txid = 0;
  size_t offset = 0;  // of its 24-byte header in the body
  size_t bytes = 0;   // header and pages
};

// Decompresses a segment object and verifies its checksum (skipped with `verify_checksum` false:
// only for an object this process encoded and kept in memory); returns the raw body.
services::Result<std::string> DecodeSegmentBody(std::string_view object, ObjectHeader* header,
                                                bool verify_checksum = true);
// Checks a body's structure and says where each transaction is, without copying pages.
services::Result<std::vector<EncodedTransaction>> IndexSegmentBody(std::string_view body,
                                                                   uint32_t page_size);
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
