// ReplicaOps: replica.status and replica.sync (PROTOCOL.md "Replication operations").
// Threads: loop thread; sync completions come back through LoopTasks.
#pragma once

#include "gateway/loop_tasks.h"
#include "gateway/op_table.h"
#include "replica/replicator.h"
#include "services/clock.h"

namespace gateway {

void AddReplicaOps(OpTable* table, replica::Replicator* replicator, LoopTasks* tasks,
                   const services::Clock* clock);

}  // namespace gateway
