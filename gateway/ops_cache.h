// CacheOps: the cache.* rows of the op table (PROTOCOL.md "Cache operations").
//
// Op glue only: handlers decode and check arguments and read through CacheReader on the loop
// thread (reads are answered at once from the committed state). Writes are gathered over one
// turn of the loop; at its end (a uv_check handle, after every readable connection was read) they
// are offered to CacheWriter::TryApplyNow as one transaction and answered at once. Those it
// declines go to the writer's thread and are answered when LoopTasks brings the committed result
// back to the loop.
// Threads: construct, register, handle and close on the loop thread.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gateway/loop_tasks.h"
#include "gateway/op_table.h"
#include "services/cache/cache_reader.h"
#include "services/cache/cache_writer.h"
#include "services/clock.h"

namespace gateway {

struct CacheOpsConfig {
  int64_t max_value_size = 16ll << 20;
  int64_t max_size = 0;
  int64_t max_entries = 0;
  bool lru = false;
  std::string path;  // for stats' file_bytes
};

class CacheOps {
 public:
  // Pointers must outlive the op table's use of these handlers.
  CacheOps(uv_loop_t* loop, services::cache::CacheReader* reader,
           services::cache::CacheWriter* writer, LoopTasks* tasks, const services::Clock* clock,
           CacheOpsConfig config);
  ~CacheOps();

  void Register(OpTable* table);
  // Hands any gathered writes to the writer thread and closes the loop handle (at shutdown).
  void Close();

  struct Counters {
    uint64_t hits = 0;
    uint64_t misses = 0;
    services::cache::CacheCounters store;
    int64_t file_bytes = 0;
  };
  Counters Snapshot() const;

 private:
  using CacheWrite = services::cache::CacheWrite;
  using CacheWriteResult = services::cache::CacheWriteResult;
  using PackResult = void (*)(Packer&, const CacheWriteResult&);

  void Get(const Args& args, Reply reply);
  void GetMany(const Args& args, Reply reply);
  void HasKey(const Args& args, Reply reply);
  void Ttl(const Args& args, Reply reply);
  void Keys(const Args& args, Reply reply);
  void Stats(Reply reply);
  // Decodes the arguments of a write op into `w`; false after answering `reply` with the problem.
  bool DecodeWrite(services::cache::CacheOp op, const Args& args, Reply& reply, CacheWrite* w);
  // Gathers a write for the end of this turn of the loop.
  void Submit(CacheWrite write, Reply reply, PackResult pack);
  // Hands a write to the writer thread.
  void SubmitToThread(CacheWrite write, Reply reply, PackResult pack);
  static void OnCheck(uv_check_t* handle);
  void Flush();
  // Counts a read and, with lru, remembers the key for the writer.
  void NoteRead(const std::string& stored_key, bool hit);
  int64_t NowMs() const { return clock_->NowUnixMicros() / 1000; }

  struct Gathered {
    Reply reply;
    PackResult pack;
  };

  // Owned by the loop until their close callbacks free them. The check handle flushes; the idle
  // handle only keeps the loop from blocking in poll when a write was gathered outside the poll
  // phase (a timer, or input resumed by a finished write): check handles alone do not.
  uv_check_t* check_;
  uv_idle_t* idle_;
  bool closed_ = false;
  std::vector<CacheWrite> gathered_writes_;
  std::vector<Gathered> gathered_;  // the replies of gathered_writes_, in the same order
  services::cache::CacheReader* reader_;
  services::cache::CacheWriter* writer_;
  LoopTasks* tasks_;
  const services::Clock* clock_;
  CacheOpsConfig config_;

  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
  std::vector<std::string> accessed_;  // lru: keys read since the last hand-over
  int64_t accessed_since_ms_ = 0;
};

}  // namespace gateway
