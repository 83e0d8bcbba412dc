#include "gateway/ops_replica.h"

#include <sys/stat.h>

#include <memory>

namespace gateway {
namespace {


void PackTimeOrNil(Packer& p, int64_t ms) {
  if (ms != 0) {
    PackFloat64(p, static_cast<double>(ms) / 1000.0);
  } else {
    p.pack_nil();
  }
}

void Status(replica::Replicator* r, const services::Clock* clock, Reply reply) {
  const std::vector<replica::DbReplicaStatus> dbs = r->Statuses();
  const replica::ClientStats stats = r->Stats();
  const std::string store = r->client().Describe();
  const int64_t now = clock->NowUnixMicros() / 1000;
  reply.Ok([&](Packer& p) {
    p.pack_map(3);
    PackStr(p, "store");
    PackStr(p, store);
    PackStr(p, "requests");
    p.pack_map(4);
    PackStr(p, "count");
    p.pack_int64(stats.requests);
    PackStr(p, "bytes_sent");
    p.pack_int64(stats.bytes_sent);
    PackStr(p, "bytes_received");
    p.pack_int64(stats.bytes_received);
    PackStr(p, "retries");
    p.pack_int64(stats.retries);
    PackStr(p, "databases");
    p.pack_map(static_cast<uint32_t>(dbs.size()));
    for (const replica::DbReplicaStatus& d : dbs) {
      PackStr(p, d.name);
      p.pack_map(11);
      PackStr(p, "generation");
      PackStr(p, d.generation);
      PackStr(p, "last_txid");
      p.pack_uint64(d.last_txid);
      PackStr(p, "last_txid_at");
      PackTimeOrNil(p, d.last_txid_time_ms);
      PackStr(p, "last_sync_at");
      PackTimeOrNil(p, d.last_sync_ms);
      PackStr(p, "lag_seconds");
      // Nothing pending: no lag. Otherwise, how long since a sync last completed.
      PackFloat64(p, d.pending_frames == 0 || d.last_sync_ms == 0
                         ? 0.0
                         : static_cast<double>(now - d.last_sync_ms) / 1000.0);
      PackStr(p, "pending_frames");
      p.pack_uint64(d.pending_frames);
      PackStr(p, "wal_bytes");
      p.pack_int64(d.wal_bytes);
      PackStr(p, "segments_sent");
      p.pack_int64(d.segments_sent);
      PackStr(p, "snapshots_sent");
      p.pack_int64(d.snapshots_sent);
      PackStr(p, "generations_started");
      p.pack_int64(d.generations_started);
      PackStr(p, "last_error");
      if (d.last_error.empty()) {
        p.pack_nil();
      } else {
        PackStr(p, d.last_error);
      }
    }
  });
}

}  // namespace

void AddReplicaOps(OpTable* table, replica::Replicator* replicator, LoopTasks* tasks,
                   const services::Clock* clock) {
  table->Add({"replica.status", {}, [replicator, clock](const Args&, Reply reply) {
                Status(replicator, clock, std::move(reply));
              }});
  table->Add({"replica.sync", {}, [replicator, tasks](const Args&, Reply reply) {
                auto shared = std::make_shared<Reply>(std::move(reply));
                replicator->RequestSync([tasks, shared](const services::Status& st) {
                  tasks->Post([shared, st] {
                    if (st.ok()) {
                      shared->Ok([](Packer& p) { p.pack_true(); });
                    } else {
                      shared->Error(ErrorCode::kReplicaError,
                                    "replication failed: " + st.ToString());
                    }
                  });
                });
              }});
}

}  // namespace gateway
