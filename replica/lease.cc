#include "replica/lease.h"

#include <chrono>
#include <map>

namespace replica {

using services::Result;
using services::Status;

Result<LeaseState> ParseLease(const std::string& text) {
  std::map<std::string, std::string> kv;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    const size_t eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
    start = end + 1;
  }
  if (kv.count("owner") == 0 || kv.count("expires_ms") == 0) {
    return Status::Corruption("the replica's lease object is not one this gateway wrote");
  }
  return LeaseState{kv["owner"], kv["identity"],
                    std::strtoll(kv["expires_ms"].c_str(), nullptr, 10), kv["released"] == "1"};
}

std::string ReplicaLease::Encode(int64_t expires_ms, bool released) const {
  return "owner=" + options_.owner + "\nidentity=" + options_.identity +
         "\nexpires_ms=" + std::to_string(expires_ms) +
         "\nreleased=" + (released ? "1" : "0") + "\n";
}

Result<std::unique_ptr<ReplicaLease>> ReplicaLease::Acquire(std::shared_ptr<ReplicaClient> client,
                                                            LeaseOptions options,
                                                            const services::Clock* clock) {
  std::unique_ptr<ReplicaLease> lease(new ReplicaLease(std::move(client), std::move(options), clock));
  const int64_t give_up = clock->MonotonicMicros() / 1000 + lease->options_.wait_ms;
  bool told = false;
  for (;;) {
    const int64_t now = clock->NowUnixMicros() / 1000;
    const std::string mine = lease->Encode(now + lease->options_.ttl_ms, false);
    Result<ObjectInfo> head = lease->client_->Head(kLeaseKey);
    std::string etag;  // empty: create only if absent
    std::string holder;
    if (head.ok()) {
      Result<std::string> text = lease->client_->Get(kLeaseKey);
      if (!text.ok() && text.status().code() != Status::Code::kNotFound) return text.status();
      Result<LeaseState> state = text.ok() ? ParseLease(*text) : Result<LeaseState>(LeaseState{});
      if (!state.ok()) return state.status();
      // Take over only what its holder gave back or let lapse; the store's etag guards the race.
      const bool ours = !lease->options_.identity.empty() &&
                        state->identity == lease->options_.identity;
      const bool live = !state->released && state->expires_ms > now;
      if (!live || ours) {
        etag = head->etag;
        // One line saying why it is taken: a live lease of our own is reclaimed, a lapsed one
        // taken over; one given back needs no line.
        if (lease->options_.log && live) {
          lease->options_.log("lease_reclaimed", "previous holder " + state->owner +
                                                     " ran here on the same socket and is gone");
        } else if (lease->options_.log && !state->released && !state->owner.empty()) {
          lease->options_.log("lease_expired_takeover", "previous holder " + state->owner);
        }
      } else {
        holder = state->owner;
      }
    } else if (head.status().code() != Status::Code::kNotFound) {
      return head.status().WithContext("reading the replica lease");
    }
    if (holder.empty()) {
      Result<std::string> taken = lease->client_->PutIfMatch(kLeaseKey, mine, etag);
      if (taken.ok()) {
        lease->etag_ = *taken;
        lease->expires_ms_ = now + lease->options_.ttl_ms;
        lease->thread_ = std::thread([raw = lease.get()] { raw->RenewLoop(); });
        return lease;
      }
      const Status::Code code = taken.status().code();
      if (code != Status::Code::kAlreadyExists && code != Status::Code::kFailedPrecondition &&
          code != Status::Code::kNotFound) {
        return taken.status().WithContext("taking the replica lease");
      }
      // Someone else won the race; look again.
    }
    if (clock->MonotonicMicros() / 1000 >= give_up) {
      return Status::Busy("the replica " + lease->client_->Describe() + " is held by " +
                          (holder.empty() ? std::string("another gateway") : holder) +
                          "; stop that gateway, or wait for it with --lease-wait DURATION");
    }
    if (!told && lease->options_.log) {
      lease->options_.log("lease_waiting", "held by " + holder);
      told = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

ReplicaLease::~ReplicaLease() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void ReplicaLease::RenewLoop() {
  const auto period = std::chrono::milliseconds(std::max<int64_t>(options_.ttl_ms / 3, 10));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_ && !lost_) {
    cv_.wait_for(lock, period, [&] { return stopping_; });
    if (stopping_) return;
    const int64_t now = clock_->NowUnixMicros() / 1000;
    const std::string etag = etag_;
    lock.unlock();
    Result<std::string> renewed = client_->PutIfMatch(kLeaseKey, Encode(now + options_.ttl_ms, false), etag);
    lock.lock();
    if (renewed.ok()) {
      etag_ = *renewed;
      expires_ms_ = now + options_.ttl_ms;
      continue;
    }
    // Taken over (etag mismatch), or the store failed for so long that the lease ran out: either
    // way another gateway may now be writing, so we must stop.
    const bool taken = renewed.status().code() == Status::Code::kFailedPrecondition;
    if (taken || clock_->NowUnixMicros() / 1000 >= expires_ms_) {
      lost_ = true;
      const std::string why = taken ? "another gateway took the replica lease"
                                    : "the lease could not be renewed before it expired: " +
                                          renewed.status().ToString();
      lock.unlock();
      if (options_.log) options_.log("lease_lost", why);
      if (options_.on_lost) options_.on_lost(why);
      if (taken) return;
      // Lost to an unreachable store: once it answers again, take the lease back if it still
      // names us (nobody else took it), and let replication resume.
      lock.lock();
      for (;;) {
        cv_.wait_for(lock, period, [&] { return stopping_; });
        if (stopping_) return;
        lock.unlock();
        const RegainResult r = Regain();
        lock.lock();
        if (r == RegainResult::kRegained) break;
        if (r == RegainResult::kGone) return;
      }
    }
  }
}

ReplicaLease::RegainResult ReplicaLease::Regain() {
  Result<ObjectInfo> head = client_->Head(kLeaseKey);
  if (!head.ok()) return RegainResult::kRetry;  // the store is still away; try again later
  Result<std::string> text = client_->Get(kLeaseKey);
  if (!text.ok()) return RegainResult::kRetry;
  Result<LeaseState> state = ParseLease(*text);
  if (!state.ok() || state->owner != options_.owner || state->released) {
    if (options_.log) options_.log("lease_gone", "another gateway holds the replica now");
    return RegainResult::kGone;
  }
  const int64_t now = clock_->NowUnixMicros() / 1000;
  Result<std::string> taken =
      client_->PutIfMatch(kLeaseKey, Encode(now + options_.ttl_ms, false), head->etag);
  if (!taken.ok()) {
    return taken.status().code() == Status::Code::kFailedPrecondition ? RegainResult::kGone
                                                                      : RegainResult::kRetry;
  }
  {
    std::lock_guard<std::mutex> guard(mu_);
    etag_ = *taken;
    expires_ms_ = now + options_.ttl_ms;
  }
  lost_ = false;
  if (options_.log) options_.log("lease_regained", "the store answers again and the lease was still ours");
  if (options_.on_regained) options_.on_regained();
  return RegainResult::kRegained;
}

Status ReplicaLease::Release() {
  std::string etag;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_one();
    etag = etag_;
  }
  if (thread_.joinable()) thread_.join();
  if (lost_) return Status::FailedPrecondition("the lease was already lost");
  Result<std::string> done = client_->PutIfMatch(kLeaseKey, Encode(0, true), etag);
  return done.status();
}

}  // namespace replica
