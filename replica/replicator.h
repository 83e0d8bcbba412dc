// Replicator: continuously copies the gateway's databases to a replica (one thread for all).
//
// Per database it holds a read transaction open (the "pin") so no checkpoint can move past WAL
// frames it has not copied, reads new committed frames from the WAL file every sync_interval,
// uploads them as a segment, and then checkpoints PASSIVE (it is the only checkpointer: every
// gateway connection runs with wal_autocheckpoint=0 and Django's with the same). Whenever it cannot
// prove that the WAL it reads continues the one it shipped (the WAL was restarted by someone
// else's checkpoint, truncated, or replaced), it starts a new generation with a full snapshot
// instead of shipping a gap. See replica/FORMAT.md for the objects and DESIGN.md for the why.
//
// Nothing is sent when nothing was written: an idle database costs no requests.
// Threads: Start, RequestSync, Statuses and Stop may be called from any thread; completions run
// on the replication thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "replica/replica_client.h"
#include "services/clock.h"
#include "services/sqlite_tuning.h"
#include "services/status.h"

namespace replica {

struct ReplicatedDb {
  std::string name;  // "main", "cache", "queue": the folder in the replica
  std::string path;
};

struct ReplicatorOptions {
  int64_t sync_interval_ms = 1000;
  int64_t snapshot_interval_ms = 6 * 3'600'000;
  // Also snapshot once the segments uploaded since the last snapshot pass this many times the
  // database file's size (and at least snapshot_segment_min_bytes), so a restore reads at most a
  // few times the database whatever the write rate. 0 turns this off.
  int64_t snapshot_segment_ratio = 4;
  int64_t snapshot_segment_min_bytes = 64 << 20;
  int64_t retention_ms = 72 * 3'600'000;
  size_t compaction_fanout = 32;  // segments merged into one of the next level
  services::SqliteTuning tuning;
  // Receives one line per notable event ("new_generation", "sync_failed"); any thread.
  std::function<void(const std::string& event, const std::string& db, const std::string& detail)>
      log;
};

struct DbReplicaStatus {
  std::string name;
  std::string generation;
  uint64_t last_txid = 0;           // last transaction in the replica
  int64_t last_txid_time_ms = 0;    // when it was read from the WAL
  int64_t last_sync_ms = 0;         // when a sync last completed
  uint64_t pending_frames = 0;      // committed WAL frames not yet in the replica
  int64_t wal_bytes = 0;
  int64_t segments_sent = 0;
  int64_t snapshots_sent = 0;
  int64_t generations_started = 0;
  std::string last_error;           // empty when the last sync worked
};

class Replicator {
 public:
  static services::Result<std::unique_ptr<Replicator>> Start(
      std::shared_ptr<ReplicaClient> client, std::vector<ReplicatedDb> dbs,
      ReplicatorOptions options, const services::Clock* clock);
  ~Replicator();  // Stop()

  // `done` runs once everything committed before this call is in the replica (OK), or when the
  // attempt failed (the error says why).
  void RequestSync(std::function<void(const services::Status&)> done);
  std::vector<DbReplicaStatus> Statuses() const;
  ClientStats Stats() const { return client_->Stats(); }
  const ReplicaClient& client() const { return *client_; }
  // Ships what is left, then stops the thread.
  void Stop();
  // Stops all writes to the replica for good (the lease was lost: another gateway may be writing).
  // Syncs fail from then on with `why`.
  void Fence(const std::string& why);
  // Lifts a fence after the lease was taken back (nobody else wrote meanwhile).
  void Unfence();

 private:
  class DbShipper;
  Replicator(std::shared_ptr<ReplicaClient> client, ReplicatorOptions options,
             const services::Clock* clock);
  void Run();

  std::shared_ptr<ReplicaClient> client_;
  const ReplicatorOptions options_;
  const services::Clock* clock_;
  std::vector<std::unique_ptr<DbShipper>> shippers_;  // replication thread only, after Start

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::function<void(const services::Status&)>> waiters_;  // guarded by mu_
  bool stopping_ = false;                                               // guarded by mu_
  std::string fenced_;                                                  // guarded by mu_
  std::vector<DbReplicaStatus> statuses_;                               // guarded by mu_
  std::thread thread_;
};

}  // namespace replica
