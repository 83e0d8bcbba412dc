// Restore: rebuilds a database from a replica, and lists what a replica holds.
//
// A restore picks a generation and its latest usable snapshot, applies the segments after it in
// transaction order up to the target, verifies every object's checksum and runs
// PRAGMA integrity_check on the result, and only then moves the file into place atomically
// (fsync, rename, fsync of the folder). The target is never left half-written.
// Threads: blocking; call from any thread (commands, or start-up before the server runs).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "replica/replica_client.h"
#include "replica/replica_format.h"
#include "services/status.h"

namespace replica {

struct GenerationInfo {
  std::string id;
  int64_t created_ms = 0;           // from the id
  uint64_t first_txid = 0;          // earliest snapshot's txid
  uint64_t last_txid = 0;           // newest transaction held
  int64_t first_time_ms = 0;        // earliest snapshot's time
  int64_t last_time_ms = 0;         // newest transaction's time
  int64_t snapshots = 0;
  int64_t segments = 0;
  int64_t bytes = 0;
};

struct SnapshotInfo {
  std::string generation;
  uint64_t txid = 0;
  int64_t time_ms = 0;
  int64_t bytes = 0;  // compressed object
  std::string key;
};

// Generations of database `db`, oldest first. Reads snapshot and last-segment headers.
services::Result<std::vector<GenerationInfo>> ListGenerations(ReplicaClient* client,
                                                              const std::string& db);
services::Result<std::vector<SnapshotInfo>> ListSnapshots(ReplicaClient* client,
                                                          const std::string& db);

struct RestoreTarget {
  std::optional<uint64_t> txid;      // the state right after this transaction
  std::optional<int64_t> time_ms;    // the state as of this time
};

struct RestoreResult {
  std::string generation;
  uint64_t txid = 0;      // last transaction applied
  int64_t time_ms = 0;    // its time
  int64_t objects = 0;    // objects read
  int64_t bytes = 0;      // compressed bytes read
};

using Progress = std::function<void(const std::string& line)>;

// Restores `db` into the file `output` (which must not exist; its folder is created).
// kNotFound when the replica holds nothing for `db` (or nothing at or before the target).
services::Result<RestoreResult> Restore(ReplicaClient* client, const std::string& db,
                                        const RestoreTarget& target, const std::string& output,
                                        const Progress& progress);

}  // namespace replica
