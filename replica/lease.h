// ReplicaLease: one writer per replica. A small object "lease" at the replica's root names the
// gateway that may write, until a deadline it keeps pushing forward; it is only ever changed with
// a conditional write (create-if-absent, or replace-if-etag-matches), so two gateways can never
// both believe they hold it.
//
// Threads: Acquire blocks the caller; renewals run on the lease's own thread; Release and lost()
// from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "replica/replica_client.h"
#include "services/clock.h"
#include "services/status.h"

namespace replica {

inline constexpr char kLeaseKey[] = "lease";

struct LeaseOptions {
  std::string owner;         // who we are, e.g. "host:pid:random"
  int64_t ttl_ms = 30'000;   // how long the lease lasts without renewal
  int64_t wait_ms = 0;       // how long Acquire waits for another holder to release or expire
  // Where we run, e.g. "host|/run/gw.sock". A lease held under the same identity is taken over at
  // once: the caller holds that socket's lock, so the gateway that wrote it is dead (restarted
  // after a crash) and waiting for its lease to expire would only delay the restart.
  std::string identity;
  // Told about waiting, taking over an expired lease, and losing the lease. Any thread.
  std::function<void(const std::string& event, const std::string& detail)> log;
  // Called once, on the renewal thread, when the lease is lost (taken over, or not renewed in
  // time). Replication must stop writing.
  std::function<void(const std::string& why)> on_lost;
  // Called on the renewal thread when a lease lost only because the store was unreachable is
  // taken back (nobody else took it meanwhile). Replication may resume.
  std::function<void()> on_regained;
};

class ReplicaLease {
 public:
  // Takes the lease: when nobody holds it, when it was released, or when its holder let it
  // expire. Otherwise waits up to wait_ms, then fails with kBusy naming the holder.
  static services::Result<std::unique_ptr<ReplicaLease>> Acquire(
      std::shared_ptr<ReplicaClient> client, LeaseOptions options, const services::Clock* clock);
  ~ReplicaLease();  // stops renewing (without releasing)

  // Marks the lease released, so a waiting successor takes it at once. Only if we still hold it.
  services::Status Release();
  bool lost() const { return lost_.load(); }

 private:
  ReplicaLease(std::shared_ptr<ReplicaClient> client, LeaseOptions options,
               const services::Clock* clock)
      : client_(std::move(client)), options_(std::move(options)), clock_(clock) {}
  void RenewLoop();
  enum class RegainResult { kRegained, kRetry, kGone };
  RegainResult Regain();
  std::string Encode(int64_t expires_ms, bool released) const;

  std::shared_ptr<ReplicaClient> client_;
  LeaseOptions options_;
  const services::Clock* clock_;
  std::string etag_;            // guarded by mu_
  int64_t expires_ms_ = 0;      // guarded by mu_
  bool stopping_ = false;       // guarded by mu_
  std::atomic<bool> lost_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
};

// What a lease object says, parsed; for tests and `gateway status`.
struct LeaseState {
  std::string owner;
  std::string identity;
  int64_t expires_ms = 0;
  bool released = false;
};
services::Result<LeaseState> ParseLease(const std::string& text);

}  // namespace replica
