#include "replica/replicator.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>

#include "replica/file_client.h"
#include "replica/replica_format.h"
#include "replica/wal_reader.h"
#include "services/sqlite_db.h"

namespace replica {

using services::Result;
using services::SqliteDb;
using services::Status;

namespace {

constexpr size_t kMaxSegmentBytes = 64 << 20;  // page data per segment
constexpr int kMaxSegmentsPerSync = 16;
constexpr size_t kRecentBytes = 16 << 20;  // uploaded level-0 objects kept for the next merge
constexpr int kMaxLevel = 9;
constexpr int64_t kRetentionCheckMs = 3'600'000;
constexpr int64_t kRestartWalBytes = 16 << 20;

struct FileStamp {
  int64_t size = -1;
  int64_t mtime_ns = -1;
  bool operator==(const FileStamp&) const = default;
};

FileStamp StampOf(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return {};
  return {st.st_size, static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

// Flushes a file's data to the disk.
Status SyncFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IoError("cannot open " + path + " to sync it: " + std::strerror(errno));
  const int rc = fdatasync(fd);
  const int err = errno;
  close(fd);
  if (rc != 0) return Status::IoError("cannot sync " + path + ": " + std::strerror(err));
  return Status::Ok();
}

}  // namespace

// Replication of one database. Replication thread only.
class Replicator::DbShipper {
 public:
  DbShipper(ReplicaClient* client, ReplicatedDb db, const ReplicatorOptions& options,
            const services::Clock* clock)
      : client_(client), db_(std::move(db)), wal_path_(db_.path + "-wal"), options_(options),
        clock_(clock) {
    status_.name = db_.name;
    RemoveAbandonedStateFiles();
  }

  Status Init();
  // Temporary files of state notes whose writer was killed before it renamed them into place.
  // Only this gateway writes this database's note (the socket lock keeps out a second one).
  void RemoveAbandonedStateFiles() {
    const std::filesystem::path path(db_.path);
    const std::string prefix = path.filename().string() + "-replica-state.tmp-";
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(path.parent_path(), ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      if (it->path().filename().string().starts_with(prefix)) std::filesystem::remove(it->path(), ec);
    }
  }
  // One round: ship what is new, checkpoint, and do the periodic work. Errors leave the state
  // where it was, so the next round retries.
  Status Sync();
  const DbReplicaStatus& status() const { return status_; }
  // True after a round that left committed frames unshipped (writers outpace the shipping).
  bool behind() const { return behind_; }
  void Remember(const std::string& key, const std::string& object) {
    if (object.size() > kRecentBytes) return;
    recent_.emplace_back(key, object);
    recent_bytes_ += object.size();
    while (recent_bytes_ > kRecentBytes) {
      recent_bytes_ -= recent_.front().second.size();
      recent_.pop_front();
    }
  }
  // An object Remember() still holds. (A copy: an input a merge reads but stops before stays
  // remembered for the next merge; Forget() drops the merged ones.)
  Result<std::string> Recalled(const std::string& key) const {
    for (const auto& [k, object] : recent_) {
      if (k == key) return object;
    }
    return Status::NotFound(key);
  }
  void Forget(const std::string& key) {
    for (auto it = recent_.begin(); it != recent_.end(); ++it) {
      if (it->first != key) continue;
      recent_bytes_ -= it->second.size();
      recent_.erase(it);
      return;
    }
  }

 private:
  struct Pending {
    std::string key;
    uint64_t first_txid;
    uint64_t last_txid;
    uint64_t body_bytes = 0;  // 0: unknown (listed at start, not uploaded by this run)
  };

  int64_t NowMs() const { return clock_->NowUnixMicros() / 1000; }
  Status Pin();
  Status Resume();
  // Ships committed frames, at most kMaxSegmentsPerSync full segments; true once a read reached
  // the end of the WAL (false: writers are ahead).
  Result<bool> ShipWal();
  // Uploads `read` as the next level-0 segment and advances the shipped position. Does not
  // compact: a failed merge must not look like a failed upload to callers that keep frames to
  // upload again (RestartWal's unshipped_), or those would be shipped twice under new txids.
  Status ShipSegment(const WalRead& read);
  void Checkpoint();
  // When the WAL has grown past kRestartWalBytes: under the write lock, read its tail, checkpoint
  // everything so the next writer starts the WAL over, then ship the tail. Keeps the WAL bounded
  // under writes that never pause (a plain PASSIVE checkpoint never catches up with those).
  Status RestartWal();
  Status Snapshot(bool new_generation, const std::string& why);
  Status Compact(int level);
  Status EnforceRetention();
  ObjectHeader BaseHeader() const;
  // The local note of where shipping stands (db path + "-replica-state"), so a restart after a
  // checkpoint-and-WAL-restart can still prove continuity. Losing it only costs a new generation.
  void SaveState();
  bool ResumeFromState(const std::string& generation, const ObjectHeader& newest,
                       const std::optional<WalHeader>& wal);
  std::string saved_state_;

  ReplicaClient* client_;
  ReplicatedDb db_;
  std::string wal_path_;
  const ReplicatorOptions& options_;
  const services::Clock* clock_;

  // Two connections take turns holding a read transaction (the pin), so there is never a moment
  // without one: no checkpoint passes it, and no other process's closing connection can find
  // itself the last one and checkpoint on close.
  std::unique_ptr<SqliteDb> pins_[2];
  int pin_ = 0;  // which of pins_ holds the current pin
  std::unique_ptr<SqliteDb> ckpt_;   // runs our checkpoints
  std::unique_ptr<SqliteDb> lock_;   // takes the write lock for consistent snapshots
  std::unique_ptr<SqliteDb> snap_;   // reads the snapshot image
  bool pinned_ = false;

  std::string generation_;  // empty: start a new one
  uint64_t txid_ = 0;       // last transaction in the replica
  int64_t last_time_ms_ = 0;
  bool have_wal_ = false;   // wal_/pos_ describe the WAL we are reading
  WalHeader wal_;
  WalPosition pos_;
  uint32_t page_size_ = 0;
  // True when our last checkpoint copied every frame we had shipped and nothing was added since:
  // then a WAL restart (by the next writer) loses nothing. FileStamp of the database file after
  // our last checkpoint: if it changes, someone else checkpointed.
  bool own_complete_ = false;
  FileStamp db_stamp_;
  int64_t last_snapshot_ms_ = 0;
  // Segment bytes uploaded since the last snapshot (since start after a restart).
  int64_t segment_bytes_since_snapshot_ = 0;
  bool behind_ = false;
  // The latest level-0 objects this gateway uploaded, newest last, at most kRecentBytes in all:
  // the next merge reads them from here instead of downloading them again.
  std::deque<std::pair<std::string, std::string>> recent_;
  size_t recent_bytes_ = 0;
  int64_t last_retention_ms_ = 0;
  std::vector<std::vector<Pending>> pending_ = std::vector<std::vector<Pending>>(kMaxLevel + 1);
  // Frames read by RestartWal whose upload failed: they exist nowhere else once the WAL restarts.
  std::optional<WalRead> unshipped_;
  DbReplicaStatus status_;
};

Status Replicator::DbShipper::Init() {
  services::SqliteTuning tuning = options_.tuning;
  tuning.wal_autocheckpoint_pages = 0;
  for (std::unique_ptr<SqliteDb>* conn : {&pins_[0], &pins_[1], &ckpt_, &lock_, &snap_}) {
    Result<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(db_.path, SqliteDb::Mode::kReadWrite);
    if (!db.ok()) return db.status().WithContext("replicating " + db_.name);
    GW_RETURN_IF_ERROR(services::ApplyTuning(db->get(), tuning));
    *conn = std::move(*db);
  }
  Result<int64_t> page_size = pins_[0]->QueryInt("PRAGMA page_size");
  if (!page_size.ok()) return page_size.status();
  page_size_ = static_cast<uint32_t>(*page_size);
  db_stamp_ = StampOf(db_.path);
  GW_RETURN_IF_ERROR(Pin());
  return Resume();
}

Status Replicator::DbShipper::Pin() {
  // The new pin is taken before the old one is let go.
  SqliteDb* next = pins_[1 - pin_].get();
  GW_RETURN_IF_ERROR(next->Exec("BEGIN"));
  // A read is what actually opens the snapshot (and takes the WAL read mark).
  Result<int64_t> n = next->QueryInt("SELECT count(*) FROM sqlite_schema");
  if (!n.ok()) {
    (void)next->Exec("ROLLBACK");
    return n.status();
  }
  if (pinned_) (void)pins_[pin_]->Exec("COMMIT");
  pin_ = 1 - pin_;
  pinned_ = true;
  return Status::Ok();
}

Status Replicator::DbShipper::Resume() {
  Result<std::vector<ObjectInfo>> objects = client_->List(db_.name + "/generations/");
  if (!objects.ok()) return objects.status().WithContext("listing the replica");
  std::map<std::string, std::vector<ParsedKey>> generations;
  std::map<std::string, std::string> key_of;
  for (const ObjectInfo& o : *objects) {
    std::optional<ParsedKey> k = ParseKey(o.key);
    if (!k || k->db != db_.name) continue;
    generations[k->generation].push_back(*k);
  }
  if (generations.empty()) return Status::Ok();  // first run: a new generation on first sync
  const auto& [gen, keys] = *generations.rbegin();
  const ParsedKey* newest = nullptr;
  int64_t snapshot_ms = 0;
  for (const ParsedKey& k : keys) {
    if (!newest || k.last_txid > newest->last_txid ||
        (k.last_txid == newest->last_txid && k.kind == ObjectKind::kSegment)) {
      newest = &k;
    }
    if (k.kind == ObjectKind::kSnapshot) snapshot_ms = std::max(snapshot_ms, k.time_ms);
  }
  const std::string key = newest->kind == ObjectKind::kSnapshot
                              ? SnapshotKey(db_.name, gen, newest->first_txid, newest->time_ms)
                              : SegmentKey(db_.name, gen, newest->level, newest->first_txid,
                                           newest->last_txid, newest->time_ms);
  Result<std::string> head = client_->GetPrefix(key, kObjectHeaderBytes);
  if (!head.ok()) return head.status();
  Result<ObjectHeader> h = DecodeHeader(*head);
  if (!h.ok()) return h.status().WithContext(key);
  txid_ = h->last_txid;
  last_time_ms_ = h->last_time_ms;
  // Continue that generation only if the WAL on disk provably still holds what was shipped.
  Result<std::optional<WalHeader>> wal = ReadWalHeader(wal_path_);
  if (!wal.ok()) return wal.status();
  bool continues = false;
  if (*wal && (*wal)->salt1 == h->wal_salt1 && (*wal)->salt2 == h->wal_salt2 &&
      (*wal)->checkpoint_seq == h->wal_checkpoint_seq && h->page_size == page_size_) {
    Result<bool> contains = WalContains(wal_path_, **wal, h->wal_end);
    if (!contains.ok()) return contains.status();
    continues = *contains;
  }
  if (continues) {
    wal_ = **wal;
    pos_ = h->wal_end;
    have_wal_ = true;
  } else if (!ResumeFromState(gen, *h, *wal)) {
    return Status::Ok();  // a new generation on first sync
  }
  generation_ = gen;
  last_snapshot_ms_ = snapshot_ms;
  status_.generation = gen;
  status_.last_txid = txid_;
  status_.last_txid_time_ms = last_time_ms_;
  // Segments not yet merged into a higher level, oldest first. A segment starting inside what a
  // higher level holds is a leftover of a merge interrupted before it deleted its inputs (the
  // merged object may since have been merged again, one level up): merging it once more would
  // make an object overlapping the higher one, so it stays as it is until retention.
  std::vector<uint64_t> covered(kMaxLevel + 2, 0);  // [level]: what levels above it hold
  for (const ParsedKey& k : keys) {
    if (k.kind != ObjectKind::kSegment) continue;
    for (int below = 0; below < k.level && below <= kMaxLevel; ++below) {
      covered[below] = std::max(covered[below], k.last_txid);
    }
  }
  for (const ParsedKey& k : keys) {
    if (k.kind != ObjectKind::kSegment || k.first_txid <= covered[k.level]) continue;
    pending_[k.level].push_back(
        {SegmentKey(db_.name, gen, k.level, k.first_txid, k.last_txid, k.time_ms), k.first_txid,
         k.last_txid});
  }
  for (auto& level : pending_) {
    std::sort(level.begin(), level.end(),
              [](const Pending& a, const Pending& b) { return a.first_txid < b.first_txid; });
  }
  return Status::Ok();
}

ObjectHeader Replicator::DbShipper::BaseHeader() const {
  ObjectHeader h;
  h.page_size = page_size_;
  h.wal_salt1 = have_wal_ ? wal_.salt1 : 0;
  h.wal_salt2 = have_wal_ ? wal_.salt2 : 0;
  h.wal_checkpoint_seq = have_wal_ ? wal_.checkpoint_seq : 0;
  h.wal_end = pos_;
  return h;
}

Status Replicator::DbShipper::Sync() {
  behind_ = false;  // until ShipWal says otherwise
  if (unshipped_) {
    // Shipped before anything else: the WAL no longer holds these frames.
    const bool complete = own_complete_;
    Status st = ShipSegment(*unshipped_);
    own_complete_ = complete;
    if (!st.ok()) return st;
    unshipped_.reset();
    SaveState();
    GW_RETURN_IF_ERROR(Compact(0));
  }
  if (generation_.empty()) return Snapshot(true, "no generation to continue");
  Result<std::optional<WalHeader>> wal = ReadWalHeader(wal_path_);
  if (!wal.ok()) return wal.status();
  if (!*wal) {
    // No WAL frames. Fine if we never saw one; if the WAL we were reading vanished, only a
    // checkpoint we did not run can have done it.
    if (have_wal_ && (!own_complete_ || StampOf(db_.path) != db_stamp_)) {
      return Snapshot(true, "the WAL was truncated or removed by another process");
    }
    return Status::Ok();
  }
  const WalHeader& hdr = **wal;
  if (!have_wal_) {
    if (StampOf(db_.path) != db_stamp_) {
      return Snapshot(true, "the database file changed outside the gateway's checkpoints");
    }
    wal_ = hdr;
    pos_ = StartOf(hdr);
    have_wal_ = true;
  } else if (hdr.salt1 != wal_.salt1 || hdr.salt2 != wal_.salt2 ||
             hdr.checkpoint_seq != wal_.checkpoint_seq) {
    // A restarted WAL continues ours only if the restart followed our own complete checkpoint.
    // A WAL restart adds one to salt-1 (from the shared header); the checkpoint sequence number
    // is the restarting connection's own counter, so it is no sign of continuity.
    if (hdr.salt1 != wal_.salt1 + 1 || !own_complete_ ||
        StampOf(db_.path) != db_stamp_) {
      return Snapshot(true, "the WAL was restarted after a checkpoint the gateway did not run");
    }
    wal_ = hdr;
    pos_ = StartOf(hdr);
    own_complete_ = false;
  }
  status_.wal_bytes = FileSize(wal_path_);
  const uint64_t shipped_from = pos_.frames;
  Result<bool> caught_up = ShipWal();
  if (!caught_up.ok()) {
    // What is committed but not yet shipped, so status shows a backlog while the store fails.
    // (Counted only then: counting walks every unshipped frame once more, which a round that
    // ships them does anyway.)
    Result<uint64_t> pending = CountCommittedFrames(wal_path_, wal_, pos_);
    if (pending.ok()) status_.pending_frames = *pending;
    return caught_up.status();
  }
  behind_ = !*caught_up;
  if (pos_.frames != shipped_from) {
    // Django commits with synchronous=NORMAL: WAL frames reach the disk only at a checkpoint,
    // and ours trails the shipping by a round. Whatever is in the replica is made durable here
    // too, so a crash or a filesystem the kernel turns read-only cannot leave the local database
    // behind its own replica. (One fdatasync per round with new frames.)
    GW_RETURN_IF_ERROR(SyncFile(wal_path_));
  }
  status_.pending_frames = 0;
  Result<uint64_t> left = CountCommittedFrames(wal_path_, wal_, pos_);
  if (left.ok()) status_.pending_frames = *left;
  // Restart when this WAL's frames (not the file, which keeps its size) pass the threshold.
  // (Not again after a complete restart checkpoint: the WAL starts over at the next write.)
  // Both the restart and a snapshot read the unshipped rest of the WAL into memory under the
  // write lock: only once shipping has caught up, so that rest is small and writers wait briefly.
  if (*caught_up &&
      static_cast<int64_t>(pos_.frames) * (page_size_ + kWalFrameHeaderBytes) >= kRestartWalBytes &&
      !own_complete_) {
    GW_RETURN_IF_ERROR(RestartWal());
  } else {
    Checkpoint();
    GW_RETURN_IF_ERROR(Pin());
  }
  const int64_t now = NowMs();
  // (Behind the writers, snapshots wait: see above.)
  if (*caught_up && now - last_snapshot_ms_ >= options_.snapshot_interval_ms) {
    GW_RETURN_IF_ERROR(Snapshot(false, "snapshot_interval"));
  } else if (*caught_up && options_.snapshot_segment_ratio > 0 &&
             segment_bytes_since_snapshot_ >=
                 std::max<int64_t>(options_.snapshot_segment_min_bytes,
                                   options_.snapshot_segment_ratio * FileSize(db_.path))) {
    // A restore replays every segment after the snapshot it starts from: a busy database gets
    // a fresh snapshot sooner, so restore time stays bounded by a few times its size.
    GW_RETURN_IF_ERROR(Snapshot(false, "segments since the last snapshot outgrew the database"));
  }
  if (now - last_retention_ms_ >= kRetentionCheckMs) {
    last_retention_ms_ = now;
    GW_RETURN_IF_ERROR(EnforceRetention());
  }
  status_.wal_bytes = FileSize(wal_path_);
  return Status::Ok();
}

Result<bool> Replicator::DbShipper::ShipWal() {
  for (int i = 0; i < kMaxSegmentsPerSync; ++i) {
    Result<WalRead> read = ReadCommitted(wal_path_, wal_, pos_, kMaxSegmentBytes);
    if (!read.ok()) return read.status();
    if (read->transactions.empty()) return true;
    size_t bytes = 0;
    for (const WalTransaction& t : read->transactions) {
      for (const WalPage& p : t.pages) bytes += p.data.size();
    }
    GW_RETURN_IF_ERROR(ShipSegment(*read));
    GW_RETURN_IF_ERROR(Compact(0));
    // A read under the budget reached the end of the WAL: what writers commit meanwhile is the
    // next round's (reading on would ship a trickle of tiny segments, and never end under
    // steady writes).
    if (bytes < kMaxSegmentBytes) return true;
  }
  return false;  // writers are ahead of us: the rest waits for the next round
}

Status Replicator::DbShipper::ShipSegment(const WalRead& read) {
  const int64_t now = NowMs();
  // Straight from the WAL read into the compressor: no copy of the pages on the way.
  SegmentBuilder builder(kFastZstdLevel);
  uint64_t txid = txid_;
  for (const WalTransaction& t : read.transactions) {
    builder.AddTransaction(++txid, now, t.db_pages, t.pages);
  }
  ObjectHeader h = BaseHeader();
  h.first_txid = txid_ + 1;
  h.last_txid = txid;
  h.first_time_ms = now;
  h.last_time_ms = now;
  h.wal_end = read.end;
  h.db_pages = read.transactions.back().db_pages;
  const std::string key = SegmentKey(db_.name, generation_, 0, h.first_txid, h.last_txid, now);
  const std::string object = builder.Finish(h);
  GW_RETURN_IF_ERROR(builder.status().WithContext("building " + key));
  Status st = client_->PutNew(key, object);
  // AlreadyExists: an earlier try of this same upload got through before its answer was lost.
  if (!st.ok() && st.code() != Status::Code::kAlreadyExists) return st.WithContext("uploading " + key);
  segment_bytes_since_snapshot_ += static_cast<int64_t>(object.size());
  Remember(key, object);
  pending_[0].push_back({key, h.first_txid, h.last_txid, builder.body_bytes()});
  txid_ = txid;
  last_time_ms_ = now;
  pos_ = read.end;
  own_complete_ = false;
  ++status_.segments_sent;
  status_.last_txid = txid_;
  status_.last_txid_time_ms = now;
  return Status::Ok();
}

void Replicator::DbShipper::Checkpoint() {
  // Bounded by our pin, which was taken no later than the frames we just shipped: a checkpoint
  // can never copy (and so let a writer overwrite) a frame that is not in the replica yet.
  int log = 0, done = 0;
  int rc = sqlite3_wal_checkpoint_v2(ckpt_->raw(), "main", SQLITE_CHECKPOINT_PASSIVE, &log, &done);
  own_complete_ = rc == SQLITE_OK && log == done && static_cast<uint64_t>(done) == pos_.frames;
  db_stamp_ = StampOf(db_.path);
  SaveState();
}

Status Replicator::DbShipper::RestartWal() {
  // The write lock is held only for local reads and the checkpoint, never for the upload.
  GW_RETURN_IF_ERROR(lock_->Exec("BEGIN IMMEDIATE").WithContext("WAL restart of " + db_.name));
  Result<WalRead> tail = ReadCommitted(wal_path_, wal_, pos_, SIZE_MAX);
  if (!tail.ok()) {
    (void)lock_->Exec("ROLLBACK");
    return tail.status();
  }
  // With no writer and no pin of ours, a checkpoint can copy every frame; the next writer then
  // starts the WAL over (and journal_size_limit trims the file).
  if (pinned_) (void)pins_[pin_]->Exec("COMMIT");
  pinned_ = false;
  int log = 0, done = 0;
  int rc = sqlite3_wal_checkpoint_v2(ckpt_->raw(), "main", SQLITE_CHECKPOINT_PASSIVE, &log, &done);
  const uint64_t end = tail->end.frames;
  const bool complete = rc == SQLITE_OK && log == done && static_cast<uint64_t>(done) == end;
  db_stamp_ = StampOf(db_.path);
  Status pinned = Pin();
  (void)lock_->Exec("ROLLBACK");
  if (!tail->transactions.empty()) {
    Status st = ShipSegment(*tail);
    if (!st.ok()) {
      own_complete_ = complete;
      unshipped_ = std::move(*tail);
      return st;
    }
  }
  // After shipping: the checkpoint covered exactly what is now in the replica.
  own_complete_ = complete;
  if (options_.log) {
    options_.log("wal_restart", db_.name,
                 complete ? "checkpointed " + std::to_string(done) + " frames; the WAL starts over"
                          : "checkpoint incomplete (" + std::to_string(done) + " of " +
                                std::to_string(log) + " frames): a reader holds the WAL");
  }
  SaveState();
  // Only now: the tail is in the replica whatever the merge does.
  const Status compacted = tail->transactions.empty() ? Status::Ok() : Compact(0);
  if (!pinned.ok()) return pinned;
  return compacted;
}

void Replicator::DbShipper::SaveState() {
  if (generation_.empty()) return;
  const std::string state = "generation=" + generation_ + "\ntxid=" + std::to_string(txid_) +
                            "\nhave_wal=" + (have_wal_ ? "1" : "0") +
                            "\nsalt1=" + std::to_string(wal_.salt1) +
                            "\nsalt2=" + std::to_string(wal_.salt2) +
                            "\ncheckpoint_seq=" + std::to_string(wal_.checkpoint_seq) +
                            "\nframes=" + std::to_string(pos_.frames) +
                            "\ncomplete=" + (own_complete_ ? "1" : "0") +
                            "\ndb_size=" + std::to_string(db_stamp_.size) +
                            "\ndb_mtime_ns=" + std::to_string(db_stamp_.mtime_ns) + "\n";
  if (state == saved_state_) return;  // idle: nothing to write
  if (WriteFileDurably(db_.path + "-replica-state", state).ok()) saved_state_ = state;
}

bool Replicator::DbShipper::ResumeFromState(const std::string& generation,
                                            const ObjectHeader& newest,
                                            const std::optional<WalHeader>& wal) {
  Result<std::string> text = FileClient::ReadLocal(db_.path + "-replica-state");
  if (!text.ok()) return false;
  std::map<std::string, std::string> kv;
  size_t start = 0;
  while (start < text->size()) {
    size_t end = text->find('\n', start);
    if (end == std::string::npos) end = text->size();
    const std::string line = text->substr(start, end - start);
    const size_t eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
    start = end + 1;
  }
  auto num = [&](const char* k) { return std::strtoull(kv[k].c_str(), nullptr, 10); };
  // The note must describe exactly the replica's newest object, our last checkpoint must have
  // copied all of it, and nobody may have written the database file since.
  const bool had_wal = kv["have_wal"] == "1";
  if (kv["generation"] != generation || num("txid") != newest.last_txid ||
      (had_wal && (kv["complete"] != "1" || num("salt1") != newest.wal_salt1 ||
                   num("salt2") != newest.wal_salt2 ||
                   num("checkpoint_seq") != newest.wal_checkpoint_seq ||
                   num("frames") != newest.wal_end.frames))) {
    return false;
  }
  const FileStamp now = StampOf(db_.path);
  if (now.size != static_cast<int64_t>(num("db_size")) ||
      now.mtime_ns != static_cast<int64_t>(num("db_mtime_ns"))) {
    return false;
  }
  // The WAL was restarted once since (salt-1 one more: by the first write after our complete
  // checkpoint), or not
  // written at all; with no WAL before, any WAL now holds only newer writes (nobody checkpointed:
  // the database file is untouched).
  if (!wal) {
    have_wal_ = false;
  } else if (!had_wal || wal->salt1 == newest.wal_salt1 + 1) {
    wal_ = *wal;
    pos_ = StartOf(*wal);
    have_wal_ = true;
  } else {
    return false;
  }
  return true;
}

Status Replicator::DbShipper::Snapshot(bool new_generation, const std::string& why) {
  const int64_t now = NowMs();
  // With the write lock held nothing commits, so the WAL's end and the snapshot's read
  // transaction describe the same state. The lock is held only for local reads, never across
  // an upload.
  GW_RETURN_IF_ERROR(lock_->Exec("BEGIN IMMEDIATE").WithContext("snapshot of " + db_.name));
  Result<std::optional<WalHeader>> wal = ReadWalHeader(wal_path_);
  WalRead tail;
  Status st = wal.status();
  if (st.ok() && *wal) {
    const bool same = have_wal_ && (*wal)->salt1 == wal_.salt1 && (*wal)->salt2 == wal_.salt2 &&
                      (*wal)->checkpoint_seq == wal_.checkpoint_seq;
    Result<WalRead> r = ReadCommitted(wal_path_, **wal, new_generation || !same ? StartOf(**wal) : pos_,
                                      SIZE_MAX);
    st = r.status();
    if (r.ok()) tail = std::move(*r);
  }
  if (st.ok()) st = snap_->Exec("BEGIN");
  if (st.ok()) st = snap_->QueryInt("SELECT count(*) FROM sqlite_schema").status();
  (void)lock_->Exec("ROLLBACK");
  if (!st.ok()) {
    (void)snap_->Exec("ROLLBACK");
    return st;
  }
  if (!new_generation && !tail.transactions.empty()) {
    st = ShipSegment(tail);
    if (!st.ok()) {
      (void)snap_->Exec("ROLLBACK");
      return st;
    }
  }
  // Copy the image the read transaction sees, page for page (same page numbers as the WAL).
  const std::string image = db_.path + ".gateway-snapshot";
  const std::string object = image + ".object";
  std::error_code ec;
  std::filesystem::remove(image, ec);
  sqlite3* dest = nullptr;
  int rc = sqlite3_open_v2(image.c_str(), &dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  int64_t pages = 0;
  if (rc == SQLITE_OK) {
    sqlite3_backup* backup = sqlite3_backup_init(dest, "main", snap_->raw(), "main");
    if (backup != nullptr) {
      rc = sqlite3_backup_step(backup, -1);
      rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
      sqlite3_backup_finish(backup);
    } else {
      rc = sqlite3_errcode(dest);
    }
  }
  if (rc == SQLITE_OK) {
    // Fold the copy's own WAL into its file, so the file alone is the image.
    sqlite3_exec(dest, "PRAGMA journal_mode = DELETE", nullptr, nullptr, nullptr);
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(dest, "PRAGMA page_count", -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      pages = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
  }
  st = rc == SQLITE_OK ? Status::Ok() : services::SqliteStatus(rc, dest, "snapshot copy of " + db_.path);
  sqlite3_close_v2(dest);
  (void)snap_->Exec("COMMIT");

  const std::string generation = new_generation ? NewGenerationId(now) : generation_;
  const uint64_t txid = new_generation ? txid_ + 1 : txid_;
  ObjectHeader h = BaseHeader();
  if (new_generation) {
    h.wal_salt1 = *wal ? (*wal)->salt1 : 0;
    h.wal_salt2 = *wal ? (*wal)->salt2 : 0;
    h.wal_checkpoint_seq = *wal ? (*wal)->checkpoint_seq : 0;
    h.wal_end = *wal ? tail.end : WalPosition{};
  }
  h.first_txid = h.last_txid = txid;
  h.first_time_ms = h.last_time_ms = now;
  h.db_pages = static_cast<uint32_t>(pages);
  if (st.ok()) st = WriteSnapshotFile(image, h, object);
  const std::string key = SnapshotKey(db_.name, generation, txid, now);
  if (st.ok()) st = client_->PutFileNew(key, object);
  std::filesystem::remove(image, ec);
  std::filesystem::remove(object, ec);
  if (!st.ok() && st.code() != Status::Code::kAlreadyExists) return st.WithContext("snapshot " + key);

  last_snapshot_ms_ = now;
  segment_bytes_since_snapshot_ = 0;
  ++status_.snapshots_sent;
  if (new_generation) {
    generation_ = generation;
    txid_ = txid;
    last_time_ms_ = now;
    have_wal_ = wal->has_value();
    if (have_wal_) {
      wal_ = **wal;
      pos_ = tail.end;
    }
    own_complete_ = false;
    db_stamp_ = StampOf(db_.path);
    for (auto& level : pending_) level.clear();
    recent_.clear();
    recent_bytes_ = 0;
    ++status_.generations_started;
    status_.generation = generation_;
    status_.last_txid = txid_;
    status_.last_txid_time_ms = now;
    if (options_.log) options_.log("new_generation", db_.name, generation_ + ": " + why);
    SaveState();
    return Pin();
  }
  return Status::Ok();
}

Status Replicator::DbShipper::Compact(int level) {
  if (level >= kMaxLevel ||
      pending_[level].size() < std::max<size_t>(2, options_.compaction_fanout)) {
    return Status::Ok();
  }
  // Merge up to `fanout` segments, but no more than 32 MiB of transactions: a merge
  // is built in memory, and the levels grow by the fanout each.
  constexpr size_t kMaxCompactionBytes = 32 << 20;
  {
    // What the keys and our own uploads tell: a first segment that cannot merge with the next
    // (a hole parts them, or together they pass the cap) never will. It is left as it is, for
    // restores to read, without downloading either.
    const Pending& a = pending_[level][0];
    const Pending& b = pending_[level][1];
    if (b.first_txid > a.last_txid + 1 || (a.body_bytes != 0 && b.body_bytes != 0 &&
                                           a.body_bytes + b.body_bytes > kMaxCompactionBytes)) {
      Forget(a.key);
      pending_[level].erase(pending_[level].begin());
      return Status::Ok();
    }
  }
  // Merged from the inputs' raw bodies: whole transactions are copied as they are, never split
  // into pages and put together again.
  std::vector<std::string> bodies;
  bodies.reserve(options_.compaction_fanout);  // never reallocated: `runs` point into them
  std::vector<std::string_view> runs;
  size_t bytes = 0;
  ObjectHeader first, last;
  size_t merged = 0;
  for (; merged < options_.compaction_fanout && merged < pending_[level].size(); ++merged) {
    const Pending& p = pending_[level][merged];
    Result<std::string> object = Recalled(p.key);
    // What this thread encoded itself and kept in memory needs no second checksum pass.
    const bool trusted = object.ok();
    if (!trusted) object = client_->Get(p.key);
    if (!object.ok() && object.status().code() == Status::Code::kNotFound) {
      // Gone (an earlier merge uploaded its result but failed to delete): forget it.
      pending_[level].erase(pending_[level].begin() + static_cast<long>(merged));
      return Status::Ok();
    }
    if (!object.ok()) return object.status().WithContext("compacting " + p.key);
    ObjectHeader h;
    Result<std::string> body = DecodeSegmentBody(*object, &h, /*verify_checksum=*/!trusted);
    if (!body.ok()) return body.status().WithContext("compacting " + p.key);
    Result<std::vector<EncodedTransaction>> index = IndexSegmentBody(*body, h.page_size);
    if (!index.ok()) return index.status().WithContext("compacting " + p.key);
    if (merged > 0 && bytes + h.body_bytes > kMaxCompactionBytes) break;
    // Merged objects must hold consecutive transactions. Overlaps (a transaction sent twice by a
    // restarted gateway) keep the first copy; a segment wholly inside the merge adds nothing and
    // is deleted with the others; a gap ends the merge before this segment.
    if (merged > 0 && h.first_txid > last.last_txid + 1) break;
    if (merged > 0 && h.last_txid <= last.last_txid) continue;
    bytes += h.body_bytes;
    if (merged == 0) first = h;
    // Transactions are in txid order: what this input adds is a suffix of its body.
    size_t from = body->size();
    for (const EncodedTransaction& t : *index) {
      if (merged == 0 || t.txid > last.last_txid) {
        from = t.offset;
        break;
      }
    }
    bodies.push_back(std::move(*body));
    runs.push_back(std::string_view(bodies.back()).substr(from));
    last = h;
  }
  if (merged < 2) {
    // The first segment cannot merge with the next (together they pass the size cap, or a hole
    // parts them), now or later: restores read it as it is. Forgotten here, so the next merges
    // start after it instead of reading it again each time.
    Forget(pending_[level].front().key);
    pending_[level].erase(pending_[level].begin());
    return Status::Ok();
  }
  ObjectHeader h = last;
  h.first_txid = first.first_txid;
  h.first_time_ms = first.first_time_ms;
  const std::string key =
      SegmentKey(db_.name, generation_, level + 1, h.first_txid, h.last_txid, h.last_time_ms);
  SegmentBuilder builder(kDefaultZstdLevel);
  for (std::string_view run : runs) builder.AddEncoded(run);
  runs.clear();
  bodies.clear();
  const uint64_t builder_body_bytes = builder.body_bytes();
  std::string object = builder.Finish(h);
  GW_RETURN_IF_ERROR(builder.status().WithContext("building " + key));
  Status st = client_->PutNew(key, std::move(object));
  if (!st.ok() && st.code() != Status::Code::kAlreadyExists) return st.WithContext("uploading " + key);
  std::vector<Pending> done(pending_[level].begin(),
                            pending_[level].begin() + static_cast<long>(merged));
  pending_[level].erase(pending_[level].begin(), pending_[level].begin() + static_cast<long>(merged));
  pending_[level + 1].push_back({key, h.first_txid, h.last_txid, builder_body_bytes});
  for (const Pending& p : done) Forget(p.key);
  // The merged object holds every transaction of the smaller ones. Deleting them is best effort:
  // one left behind is only a duplicate a restore does not need (and retention removes later).
  // One request for all of them where the store has a batch delete.
  std::vector<std::string> inputs;
  for (const Pending& p : done) inputs.push_back(p.key);
  Status deleted = client_->DeleteMany(inputs);
  if (!deleted.ok() && options_.log)
    options_.log("compaction_delete_failed", db_.name, deleted.ToString());
  return Compact(level + 1);
}

Status Replicator::DbShipper::EnforceRetention() {
  Result<std::vector<ObjectInfo>> objects = client_->List(db_.name + "/generations/");
  if (!objects.ok()) return objects.status();
  const int64_t cutoff = NowMs() - options_.retention_ms;
  std::map<std::string, std::vector<std::pair<ParsedKey, std::string>>> generations;
  for (const ObjectInfo& o : *objects) {
    if (std::optional<ParsedKey> k = ParseKey(o.key)) generations[k->generation].push_back({*k, o.key});
  }
  std::vector<std::string> expired;
  for (auto& [gen, keys] : generations) {
    int64_t newest = 0;
    for (const auto& [k, key] : keys) newest = std::max(newest, k.time_ms);
    if (gen != generation_ && newest < cutoff) {
      for (const auto& [k, key] : keys) expired.push_back(key);
      continue;
    }
    if (gen != generation_) continue;
    // In the current generation keep the newest snapshot older than the cutoff (the point
    // restores inside the window start from) and everything after it.
    uint64_t keep_from = 0;
    for (const auto& [k, key] : keys) {
      if (k.kind == ObjectKind::kSnapshot && k.time_ms < cutoff) keep_from = std::max(keep_from, k.first_txid);
    }
    for (const auto& [k, key] : keys) {
      const bool old_snapshot = k.kind == ObjectKind::kSnapshot && k.first_txid < keep_from;
      const bool old_segment = k.kind == ObjectKind::kSegment && k.last_txid <= keep_from;
      if (old_snapshot || old_segment) expired.push_back(key);
    }
  }
  return client_->DeleteMany(expired);
}

// --- Replicator -----------------------------------------------------------------------------------

Replicator::Replicator(std::shared_ptr<ReplicaClient> client, ReplicatorOptions options,
                       const services::Clock* clock)
    : client_(std::move(client)), options_(std::move(options)), clock_(clock) {}

Result<std::unique_ptr<Replicator>> Replicator::Start(std::shared_ptr<ReplicaClient> client,
                                                      std::vector<ReplicatedDb> dbs,
                                                      ReplicatorOptions options,
                                                      const services::Clock* clock) {
  std::unique_ptr<Replicator> r(new Replicator(std::move(client), std::move(options), clock));
  for (ReplicatedDb& db : dbs) {
    auto shipper = std::make_unique<DbShipper>(r->client_.get(), std::move(db), r->options_, clock);
    GW_RETURN_IF_ERROR(shipper->Init());
    r->statuses_.push_back(shipper->status());
    r->shippers_.push_back(std::move(shipper));
  }
  r->thread_ = std::thread([raw = r.get()] { raw->Run(); });
  return r;
}

Replicator::~Replicator() { Stop(); }

void Replicator::RequestSync(std::function<void(const Status&)> done) {
  std::lock_guard<std::mutex> lock(mu_);
  waiters_.push_back(std::move(done));
  cv_.notify_one();
}

std::vector<DbReplicaStatus> Replicator::Statuses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return statuses_;
}

void Replicator::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void Replicator::Fence(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  fenced_ = why;
  for (DbReplicaStatus& s : statuses_) s.last_error = "replication stopped: " + why;
  cv_.notify_one();
}

void Replicator::Unfence() {
  std::lock_guard<std::mutex> lock(mu_);
  fenced_.clear();
  cv_.notify_one();
}

void Replicator::Run() {
  int64_t next = clock_->MonotonicMicros();
  for (;;) {
    std::vector<std::function<void(const Status&)>> waiters;
    bool stop = false;
    std::string fenced;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::microseconds(std::max<int64_t>(0, next - clock_->MonotonicMicros())),
                   [&] { return stopping_ || !waiters_.empty(); });
      // Everything committed before these requests is read by the round that starts now.
      waiters.swap(waiters_);
      stop = stopping_;
      fenced = fenced_;
    }
    if (!fenced.empty()) {
      // Fenced: never write to the replica again; say why to everyone who asks.
      const Status st = Status::FailedPrecondition("replication stopped: " + fenced);
      for (auto& done : waiters) done(st);
      if (stop) return;
      next = clock_->MonotonicMicros() + options_.sync_interval_ms * 1000;
      continue;
    }
    Status round;
    bool behind = false;
    for (auto& shipper : shippers_) {
      Status st = shipper->Sync();
      // A waiter was promised everything committed before it asked: keep shipping.
      while (st.ok() && !waiters.empty() && shipper->behind()) st = shipper->Sync();
      behind = behind || (st.ok() && shipper->behind());
      DbReplicaStatus s = shipper->status();
      s.last_error = st.ok() ? "" : st.ToString();
      if (st.ok()) s.last_sync_ms = clock_->NowUnixMicros() / 1000;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (DbReplicaStatus& old : statuses_) {
          if (old.name != s.name) continue;
          if (!st.ok()) s.last_sync_ms = old.last_sync_ms;
          old = s;
        }
      }
      if (!st.ok()) {
        if (options_.log) options_.log("sync_failed", s.name, st.ToString());
        if (round.ok()) round = st;
      }
    }
    for (auto& done : waiters) done(round);
    if (stop) return;
    // Behind the writers: the next round starts at once instead of after the interval.
    next = clock_->MonotonicMicros() + (behind ? 0 : options_.sync_interval_ms * 1000);
  }
}

}  // namespace replica
