// Replication glue: turns [replica] and [restore] into a ReplicaClient, restores on boot, and
// starts the Replicator. Used by main (server start-up and the restore/generations/snapshots
// commands).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gateway/config.h"
#include "replica/replica_client.h"
#include "replica/replicator.h"
#include "services/clock.h"
#include "services/status.h"

namespace gateway {

// The client for [replica] url; nullptr when no replica is configured. `read_only` is for commands
// that only read the replica: a missing file:// folder is then an empty replica, not created.
services::Result<std::shared_ptr<replica::ReplicaClient>> OpenReplicaClient(const Config& config,
                                                                            bool read_only = false);

// The databases replicated, by their replica names ("main", "cache", "queue").
std::vector<replica::ReplicatedDb> ReplicatedDbs(const Config& config);

// Restores every configured database whose file is missing from the replica (when it holds
// one), before anything opens them. Logs what it did.
services::Status RestoreMissing(const Config& config, replica::ReplicaClient* client);

services::Result<std::unique_ptr<replica::Replicator>> StartReplicator(
    const Config& config, std::shared_ptr<replica::ReplicaClient> client,
    const services::Clock* clock);

// "2026-11-21T12:00:00Z", "2026-11-21T12:00:00.250Z" or Unix seconds ("1795261200.5") -> ms.
services::Result<int64_t> ParseTimestampMs(const std::string& text);
std::string FormatTimestampMs(int64_t ms);

}  // namespace gateway
