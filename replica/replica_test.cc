#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <atomic>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "replica/encrypting_client.h"
#include "replica/file_client.h"
#include "replica/replica_format.h"
#include "replica/replicator.h"
#include "replica/restore.h"
#include "replica/wal_reader.h"
#include "services/sqlite_db.h"
#include "services/test_util.h"

namespace replica {
namespace {

using services::SqliteDb;

std::unique_ptr<SqliteDb> OpenWriter(const std::string& path) {
  auto db = SqliteDb::Open(path, SqliteDb::Mode::kReadWriteCreate);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  // Like a Django process: WAL, no automatic checkpoints, and no checkpoint when it closes.
  EXPECT_TRUE((*db)->Exec("PRAGMA busy_timeout=5000; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;").ok());
  sqlite3_db_config((*db)->raw(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  return std::move(*db);
}

int64_t Count(const std::string& path, const std::string& table = "t") {
  auto db = SqliteDb::Open(path, SqliteDb::Mode::kReadOnly);
  EXPECT_TRUE(db.ok());
  auto n = (*db)->QueryInt("SELECT count(*) FROM " + table);
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  return n.ok() ? *n : -1;
}

TEST(ReplicaFormatTest, KeysRoundTrip) {
  const std::string seg = SegmentKey("main", "00000190a0b0c0d0-1234abcd", 2, 17, 99, 1700000000000);
  auto k = ParseKey(seg);
  ASSERT_TRUE(k.has_value()) << seg;
  EXPECT_EQ(k->db, "main");
  EXPECT_EQ(k->kind, ObjectKind::kSegment);
  EXPECT_EQ(k->level, 2);
  EXPECT_EQ(k->first_txid, 17u);
  EXPECT_EQ(k->last_txid, 99u);
  EXPECT_EQ(k->time_ms, 1700000000000);
  auto s = ParseKey(SnapshotKey("cache", "g", 5, 42));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->kind, ObjectKind::kSnapshot);
  EXPECT_EQ(s->first_txid, 5u);
  EXPECT_FALSE(ParseKey("main/generations/g/segments/0/garbage.seg").has_value());
}

TEST(ReplicaFormatTest, SegmentsRoundTripAndDetectDamage) {
  ObjectHeader h;
  h.page_size = 4096;
  h.first_txid = 1;
  h.last_txid = 2;
  std::vector<SegmentTransaction> txns = {
      {1, 1000, 3, {{1, std::string(4096, 'a')}, {3, std::string(4096, 'c')}}},
      {2, 2000, 2, {{2, std::string(4096, 'b')}}},
  };
  const std::string object = EncodeSegment(h, txns);
  ObjectHeader back;
  auto decoded = DecodeSegment(object, &back);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  ASSERT_EQ(decoded->size(), 2u);
  EXPECT_EQ((*decoded)[0].pages[1].pgno, 3u);
  EXPECT_EQ((*decoded)[1].pages[0].data, std::string(4096, 'b'));
  EXPECT_EQ(back.last_txid, 2u);
  std::string damaged = object;
  damaged[damaged.size() - 5] ^= 0x40;
  EXPECT_FALSE(DecodeSegment(damaged, &back).ok());
  EXPECT_FALSE(DecodeSegment(object.substr(0, 100), &back).ok());
}

TEST(ReplicaFormatTest, BuilderStreamsBodiesAndMergesEncodedTransactions) {
  ObjectHeader h;
  h.page_size = 512;
  h.first_txid = 1;
  h.last_txid = 3;
  std::vector<SegmentTransaction> txns = {
      {1, 1000, 3, {{1, std::string(512, 'a')}, {3, std::string(512, 'c')}}},
      {2, 2000, 2, {{2, std::string(512, 'b')}}},
      {3, 3000, 2, {}},
  };
  // A fast level and the default read back alike; two builders in a row reuse one stream.
  for (int level : {kFastZstdLevel, kDefaultZstdLevel}) {
    SegmentBuilder builder(level);
    for (const SegmentTransaction& t : txns)
      builder.AddTransaction(t.txid, t.time_ms, t.db_pages, t.pages);
    EXPECT_EQ(builder.body_bytes(), 3 * 24u + 3 * (4 + 512u));
    const std::string object = builder.Finish(h);
    ObjectHeader back;
    auto decoded = DecodeSegment(object, &back);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    ASSERT_EQ(decoded->size(), 3u);
    EXPECT_EQ((*decoded)[0].pages[1].data, std::string(512, 'c'));
    EXPECT_TRUE((*decoded)[2].pages.empty());
    EXPECT_EQ(back.body_bytes, builder.body_bytes());
  }
  // A body's index finds each transaction; a run cut from it merges as it is.
  ObjectHeader back;
  auto body = DecodeSegmentBody(EncodeSegment(h, txns), &back);
  ASSERT_TRUE(body.ok());
  auto index = IndexSegmentBody(*body, 512);
  ASSERT_TRUE(index.ok());
  ASSERT_EQ(index->size(), 3u);
  EXPECT_EQ((*index)[1].txid, 2u);
  EXPECT_EQ((*index)[1].offset, 24 + 2 * (4 + 512u));
  SegmentBuilder tail(kDefaultZstdLevel);
  tail.AddEncoded(std::string_view(*body).substr((*index)[1].offset));
  h.first_txid = 2;
  auto merged = DecodeSegment(tail.Finish(h), &back);
  ASSERT_TRUE(merged.ok());
  ASSERT_EQ(merged->size(), 2u);
  EXPECT_EQ((*merged)[0].txid, 2u);
  // A body cut inside a transaction is refused.
  EXPECT_FALSE(IndexSegmentBody(std::string_view(*body).substr(0, body->size() - 1), 512).ok());
  EXPECT_FALSE(IndexSegmentBody(std::string_view(*body).substr(0, 30), 512).ok());
}

TEST(ReplicaFormatTest, ABodySizeTheDataCannotHoldIsRejectedBeforeAllocating) {
  ObjectHeader h;
  h.page_size = 4096;
  h.first_txid = 1;
  h.last_txid = 1;
  const std::string object = EncodeSegment(h, {{1, 1000, 1, {{1, std::string(4096, 'a')}}}});
  ObjectHeader back;
  ASSERT_TRUE(DecodeSegment(object, &back).ok());
  auto with_size = [&](uint64_t size) {
    std::string o = object;
    for (int i = 0; i < 8; ++i) o[48 + i] = static_cast<char>(size >> (56 - 8 * i));
    return o;
  };
  // The fuzzer's find: 16 GiB claimed over a few hundred bytes used to be allocated up front.
  for (uint64_t size : {uint64_t{16} << 30, uint64_t{900} << 20, uint64_t{4096 + 24 + 4 + 1},
                        uint64_t{100}}) {
    auto r = DecodeSegment(with_size(size), &back);
    ASSERT_FALSE(r.ok()) << size;
    EXPECT_EQ(r.status().code(), services::Status::Code::kCorruption) << size;
  }
  // Bytes after the frame, and a frame cut short.
  EXPECT_FALSE(DecodeSegment(object + "x", &back).ok());
  EXPECT_FALSE(DecodeSegment(object.substr(0, object.size() - 3), &back).ok());
}

TEST(WalReaderTest, ReadsOnlyCommittedTransactions) {
  services::TempDir dir;
  const std::string path = dir.File("w.db");
  auto db = OpenWriter(path);
  ASSERT_TRUE(db->Exec("CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)").ok());
  auto header = ReadWalHeader(path + "-wal");
  ASSERT_TRUE(header.ok() && header->has_value());
  auto read = ReadCommitted(path + "-wal", **header, StartOf(**header), SIZE_MAX);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->transactions.size(), 3u);
  auto again = ReadCommitted(path + "-wal", **header, read->end, SIZE_MAX);
  EXPECT_TRUE(again->transactions.empty());
  EXPECT_TRUE(*WalContains(path + "-wal", **header, read->end));
  WalPosition wrong = read->end;
  wrong.checksum1 ^= 1;
  EXPECT_FALSE(*WalContains(path + "-wal", **header, wrong));
}

class ReplicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_path_ = dir_.File("app.db");
    writer_ = OpenWriter(db_path_);
    ASSERT_TRUE(writer_->Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").ok());
    auto client = FileClient::Open(dir_.File("replica"));
    ASSERT_TRUE(client.ok());
    client_ = std::shared_ptr<ReplicaClient>(std::move(*client));
    Start();
  }
  void Start() {
    ReplicatorOptions options;
    options.sync_interval_ms = 50;
    options.compaction_fanout = fanout_;
    options.snapshot_segment_min_bytes = snapshot_min_bytes_;
    auto r = Replicator::Start(client_, {{"main", db_path_}}, options,
                               services::SystemClock::Default());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    replicator_ = std::move(*r);
  }
  void Insert(int n) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(writer_->Exec("INSERT INTO t(v) VALUES (hex(randomblob(200)))").ok());
    }
  }
  void Sync() {
    std::promise<services::Status> done;
    replicator_->RequestSync([&](const services::Status& st) { done.set_value(st); });
    services::Status st = done.get_future().get();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  RestoreResult RestoreTo(const std::string& out, RestoreTarget target = {}) {
    auto r = Restore(client_.get(), "main", target, out, [](const std::string&) {});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : RestoreResult();
  }

  // Replicates `rounds` syncs of `rows` rows each without merging, one segment per sync (the
  // snapshot before the first row), then stops the replicator.
  void ShipUnmerged(int rounds, int rows) {
    replicator_.reset();
    fanout_ = 1000;
    Start();
    Sync();  // the snapshot holds no rows yet, whenever the first timed sync comes
    for (int round = 0; round < rounds; ++round) {
      Insert(rows);
      Sync();
    }
    replicator_.reset();
  }
  // Rewrites the replica's segments as the given ranges of its transactions, at the given levels:
  // {level, first index, last index} into every transaction after the snapshot, in order.
  struct Piece {
    int level;
    size_t first, last;
  };
  void RewriteSegments(const std::vector<Piece>& pieces) {
    auto objects = client_->List("main/generations/");
    ASSERT_TRUE(objects.ok());
    std::vector<std::pair<ParsedKey, std::string>> segments;
    for (const ObjectInfo& o : *objects) {
      auto k = ParseKey(o.key);
      if (k && k->kind == ObjectKind::kSegment) segments.emplace_back(*k, o.key);
    }
    std::sort(segments.begin(), segments.end(),
              [](auto& a, auto& b) { return a.first.first_txid < b.first.first_txid; });
    ASSERT_FALSE(segments.empty());
    std::vector<SegmentTransaction> all;
    ObjectHeader header;
    for (auto& [key, name] : segments) {
      auto data = client_->Get(name);
      ASSERT_TRUE(data.ok());
      auto txns = DecodeSegment(*data, &header);
      ASSERT_TRUE(txns.ok()) << txns.status().ToString();
      for (auto& t : *txns) {
        ASSERT_TRUE(all.empty() || t.txid == all.back().txid + 1);
        all.push_back(std::move(t));
      }
      ASSERT_TRUE(client_->Delete(name).ok());
    }
    total_txns_ = all.size();
    first_txid_ = all.front().txid;
    for (const Piece& p : pieces) {
      ASSERT_LT(p.last, all.size());
      std::vector<SegmentTransaction> part(all.begin() + p.first, all.begin() + p.last + 1);
      ObjectHeader h = header;
      h.first_txid = part.front().txid;
      h.last_txid = part.back().txid;
      h.first_time_ms = part.front().time_ms;
      h.last_time_ms = part.back().time_ms;
      const std::string key = SegmentKey("main", segments[0].first.generation, p.level,
                                         h.first_txid, h.last_txid, h.last_time_ms);
      ASSERT_TRUE(client_->Put(key, EncodeSegment(h, part)).ok());
    }
  }

  size_t fanout_ = 4;
  int64_t snapshot_min_bytes_ = 64 << 20;
  size_t total_txns_ = 0;
  uint64_t first_txid_ = 0;
  services::TempDir dir_;
  std::string db_path_;
  std::unique_ptr<SqliteDb> writer_;
  std::shared_ptr<ReplicaClient> client_;
  std::unique_ptr<Replicator> replicator_;
};

TEST_F(ReplicatorTest, RestoresTheLatestStateAndCompacts) {
  for (int round = 0; round < 10; ++round) {
    Insert(20);
    Sync();
  }
  RestoreTo(dir_.File("restored.db"));
  EXPECT_EQ(Count(dir_.File("restored.db")), 200);
  auto gens = ListGenerations(client_.get(), "main");
  ASSERT_TRUE(gens.ok());
  EXPECT_EQ(gens->size(), 1u);  // one continuous generation
  // Compaction merged level-0 segments (fanout 4): fewer objects than syncs.
  EXPECT_LT(gens->at(0).segments, 10);
  EXPECT_EQ(replicator_->Statuses().at(0).pending_frames, 0u);
}

TEST_F(ReplicatorTest, SegmentsTooBigToMergeAreNotDownloadedToFindOut) {
  replicator_.reset();
  fanout_ = 2;
  Start();
  Sync();
  const int64_t received = client_->Stats().bytes_received;
  for (int round = 0; round < 4; ++round) {
    // 20 MiB that does not compress: too big to keep in memory after the upload, and any two
    // such segments pass the 32 MiB a merge may hold.
    ASSERT_TRUE(writer_
                    ->Exec("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c "
                           "WHERE n < 20) INSERT INTO t(v) SELECT randomblob(1 << 20) FROM c")
                    .ok());
    Sync();
  }
  // Known from the uploads: nothing was read back to learn that no pair can merge.
  EXPECT_EQ(client_->Stats().bytes_received, received);
  RestoreTo(dir_.File("restored.db"));
  EXPECT_EQ(Count(dir_.File("restored.db")), 80);
}

TEST_F(ReplicatorTest, SegmentsOutgrowingTheDatabaseTriggerASnapshot) {
  replicator_.reset();
  snapshot_min_bytes_ = 1;  // only the ratio (4x the file) counts
  Start();
  Insert(20);
  Sync();
  const int64_t first = replicator_->Statuses().at(0).snapshots_sent;
  // The same few rows rewritten many times: segments grow, the database does not.
  for (int round = 0; round < 40; ++round) {
    ASSERT_TRUE(writer_->Exec("UPDATE t SET v = hex(randomblob(200))").ok());
    Sync();
  }
  EXPECT_GT(replicator_->Statuses().at(0).snapshots_sent, first);
  auto snaps = ListSnapshots(client_.get(), "main");
  ASSERT_TRUE(snaps.ok());
  EXPECT_GE(snaps->size(), 2u);
  RestoreTo(dir_.File("restored.db"));
  EXPECT_EQ(Count(dir_.File("restored.db")), 20);
}

TEST_F(ReplicatorTest, PointInTimeByTransaction) {
  Insert(5);
  Sync();
  const uint64_t at_five = replicator_->Statuses().at(0).last_txid;
  Insert(7);
  Sync();
  RestoreTo(dir_.File("five.db"), {at_five, std::nullopt});
  EXPECT_EQ(Count(dir_.File("five.db")), 5);
  RestoreTo(dir_.File("all.db"));
  EXPECT_EQ(Count(dir_.File("all.db")), 12);
}

TEST_F(ReplicatorTest, ContinuesAcrossCheckpointsAndRestarts) {
  for (int round = 0; round < 5; ++round) {
    Insert(50);
    Sync();  // ships, then checkpoints; the next writes restart the WAL
  }
  replicator_.reset();
  Insert(10);  // written while the gateway is down
  Start();
  Insert(10);
  Sync();
  RestoreTo(dir_.File("restored.db"));
  EXPECT_EQ(Count(dir_.File("restored.db")), 270);
  EXPECT_EQ(ListGenerations(client_.get(), "main")->size(), 1u);
}

TEST_F(ReplicatorTest, AForeignCheckpointStartsANewGenerationAndLosesNothing) {
  Insert(30);
  Sync();
  // Another process checkpoints and truncates the WAL while the gateway is not looking.
  replicator_.reset();
  Insert(30);
  ASSERT_TRUE(writer_->Exec("PRAGMA wal_checkpoint(TRUNCATE)").ok());
  Insert(5);
  Start();
  Sync();
  Insert(5);
  Sync();
  EXPECT_EQ(ListGenerations(client_.get(), "main")->size(), 2u);
  RestoreTo(dir_.File("restored.db"));
  EXPECT_EQ(Count(dir_.File("restored.db")), 70);
}

TEST_F(ReplicatorTest, RestoreRefusesToOverwriteAndReportsAnEmptyReplica) {
  Insert(1);
  Sync();
  std::ofstream(dir_.File("exists.db")) << "x";
  auto r = Restore(client_.get(), "main", {}, dir_.File("exists.db"), [](const std::string&) {});
  EXPECT_EQ(r.status().code(), services::Status::Code::kAlreadyExists);
  auto none = Restore(client_.get(), "cache", {}, dir_.File("c.db"), [](const std::string&) {});
  EXPECT_EQ(none.status().code(), services::Status::Code::kNotFound);
}

TEST_F(ReplicatorTest, ACorruptObjectFailsTheRestoreAndLeavesNoFile) {
  Insert(20);
  Sync();
  Insert(20);
  Sync();
  auto objects = client_->List("main/generations/");
  ASSERT_TRUE(objects.ok());
  for (const ObjectInfo& o : *objects) {
    if (o.key.find("/segments/") == std::string::npos) continue;
    auto data = client_->Get(o.key);
    std::string bad = *data;
    bad[bad.size() / 2] ^= 0x10;
    ASSERT_TRUE(client_->Put(o.key, bad).ok());
    break;
  }
  auto r = Restore(client_.get(), "main", {}, dir_.File("out.db"), [](const std::string&) {});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(access(dir_.File("out.db").c_str(), F_OK), 0);
}

TEST_F(ReplicatorTest, OverlappingSegmentsRestoreEveryTransaction) {
  // What a merge interrupted before it deleted its inputs, or a gateway that sent transactions
  // again after a restart, leaves behind: segments starting inside other segments.
  ShipUnmerged(12, 5);
  RewriteSegments({{2, 0, 29}, {1, 20, 49}, {0, 25, 26}, {0, 45, 59}});
  ASSERT_EQ(total_txns_, 60u);
  RestoreTo(dir_.File("all.db"));
  EXPECT_EQ(Count(dir_.File("all.db")), 60);
  // A target inside the overlap is honoured.
  const RestoreResult at = RestoreTo(dir_.File("at.db"), {first_txid_ + 24, std::nullopt});
  EXPECT_EQ(at.txid, first_txid_ + 24);
  EXPECT_EQ(Count(dir_.File("at.db")), 25);
}

TEST_F(ReplicatorTest, MergeLeftoversAreNotMergedAgainIntoOverlappingObjects) {
  ShipUnmerged(6, 5);
  // A level-2 object and two level-0 inputs of it that an interrupted merge did not delete.
  RewriteSegments({{2, 0, 29}, {0, 20, 24}, {0, 25, 29}});
  fanout_ = 2;
  Start();
  for (int round = 0; round < 8; ++round) {
    Insert(3);
    Sync();
  }
  auto objects = client_->List("main/generations/");
  ASSERT_TRUE(objects.ok());
  for (const ObjectInfo& o : *objects) {
    auto k = ParseKey(o.key);
    if (!k || k->kind != ObjectKind::kSegment || k->level == 0) continue;
    // The original, or a merge of it with later segments (it is pending at its level).
    if (k->first_txid == first_txid_) continue;
    EXPECT_GT(k->first_txid, first_txid_ + 29) << o.key << " merges leftovers again";
  }
  RestoreTo(dir_.File("all.db"));
  EXPECT_EQ(Count(dir_.File("all.db")), 30 + 24);
}

TEST_F(ReplicatorTest, AHoleInTheReplicaFailsTheRestoreInsteadOfReturningAnOldState) {
  ShipUnmerged(6, 5);
  RewriteSegments({{0, 0, 9}, {0, 15, 29}});  // transactions 10 to 14 are lost
  auto r = Restore(client_.get(), "main", {}, dir_.File("out.db"), [](const std::string&) {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), services::Status::Code::kCorruption);
  EXPECT_NE(r.status().message().find("--txid " + std::to_string(first_txid_ + 9)),
            std::string::npos)
      << r.status().ToString();
  EXPECT_NE(access(dir_.File("out.db").c_str(), F_OK), 0);
  // The state before the hole, asked for explicitly.
  const RestoreResult before = RestoreTo(dir_.File("before.db"), {first_txid_ + 9, std::nullopt});
  EXPECT_EQ(before.txid, first_txid_ + 9);
  EXPECT_EQ(Count(dir_.File("before.db")), 10);
  // A target past the end is refused, not quietly answered with the end.
  auto past = Restore(client_.get(), "main", {first_txid_ + 100, std::nullopt},
                      dir_.File("past.db"), [](const std::string&) {});
  EXPECT_FALSE(past.ok());
}

}  // namespace
}  // namespace replica

namespace replica {
namespace {

constexpr char kKeyA[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
constexpr char kKeyB[] = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

std::shared_ptr<ReplicaClient> Sealed(const std::shared_ptr<ReplicaClient>& inner, const char* key) {
  auto c = EncryptingClient::Wrap(inner, key);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return std::shared_ptr<ReplicaClient>(std::move(*c));
}

TEST(FileClientTest, ReadersCreateNothingAndTheWriterSweepsAbandonedTemporaryFiles) {
  services::TempDir dir;
  const std::string root = dir.File("replica");
  auto reader = FileClient::Open(root, FileClient::Access::kRead);
  ASSERT_TRUE(reader.ok());
  EXPECT_TRUE((*reader)->List("main/")->empty());  // a missing folder is an empty replica
  EXPECT_NE(access(root.c_str(), F_OK), 0) << "a read-only open created " << root;

  auto writer = FileClient::Open(root);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->PutNew("main/a.seg", "x").ok());
  const std::string fresh = root + "/main/b.seg.tmp-1";
  const std::string old = root + "/main/c.seg.tmp-2";
  std::ofstream(fresh) << "partial";
  std::ofstream(old) << "partial";
  const struct timespec two_hours_ago[2] = {{time(nullptr) - 7200, 0}, {time(nullptr) - 7200, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, old.c_str(), two_hours_ago, 0), 0);
  auto listed = (*reader)->List("main/");
  ASSERT_EQ(listed->size(), 1u);  // temporary files are never objects
  EXPECT_EQ(access(old.c_str(), F_OK), 0) << "a reader deleted a file";
  listed = (*writer)->List("main/");
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_NE(access(old.c_str(), F_OK), 0) << "an abandoned temporary file was kept";
  EXPECT_EQ(access(fresh.c_str(), F_OK), 0) << "an upload in progress lost its file";
}

TEST(EncryptingClientTest, SealsOpensAndRefusesWrongKeysAndTampering) {
  services::TempDir dir;
  auto files = FileClient::Open(dir.File("r"));
  std::shared_ptr<ReplicaClient> plain(std::move(*files));
  auto a = Sealed(plain, kKeyA);
  ASSERT_TRUE(a->PutNew("x/obj", "secret payload").ok());
  EXPECT_EQ(*a->Get("x/obj"), "secret payload");
  EXPECT_EQ(plain->Get("x/obj")->find("secret"), std::string::npos);  // the store sees no plaintext

  auto b = Sealed(plain, kKeyB);
  auto wrong = b->Get("x/obj");
  EXPECT_EQ(wrong.status().code(), services::Status::Code::kCorruption);
  EXPECT_NE(wrong.status().message().find("key id"), std::string::npos) << wrong.status().message();

  std::string bytes = *plain->Get("x/obj");
  bytes[bytes.size() - 20] ^= 1;
  ASSERT_TRUE(plain->Put("x/tampered", bytes).ok());
  auto tampered = a->Get("x/tampered");
  EXPECT_NE(tampered.status().message().find("failed authentication"), std::string::npos);
  // The name is authenticated too: an object moved to another key does not open.
  ASSERT_TRUE(plain->Put("x/moved", *plain->Get("x/obj")).ok());
  EXPECT_FALSE(a->Get("x/moved").ok());

  ASSERT_TRUE(plain->PutNew("x/plain", "not sealed").ok());
  EXPECT_NE(a->Get("x/plain").status().message().find("not encrypted"), std::string::npos);

  // Files go through in streams, and a damaged one leaves no output behind.
  const std::string big(3 << 20, 'z');
  { std::ofstream(dir.File("big.in")) << big; }
  ASSERT_TRUE(a->PutFileNew("x/big", dir.File("big.in")).ok());
  ASSERT_TRUE(a->GetToFile("x/big", dir.File("big.out")).ok());
  std::ifstream in(dir.File("big.out"));
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), big);
  std::string sealed_big = *plain->Get("x/big");
  sealed_big[1000] ^= 1;
  ASSERT_TRUE(plain->Put("x/big2", sealed_big).ok());
  EXPECT_FALSE(a->GetToFile("x/big2", dir.File("big2.out")).ok());
  EXPECT_NE(access(dir.File("big2.out").c_str(), F_OK), 0);

  EXPECT_FALSE(EncryptingClient::Wrap(plain, "too short").ok());
}

TEST(EncryptingClientTest, EncryptedReplicaRestoresOnlyWithItsKey) {
  services::TempDir dir;
  const std::string db_path = dir.File("app.db");
  auto writer = OpenWriter(db_path);
  ASSERT_TRUE(writer->Exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)").ok());
  auto files = FileClient::Open(dir.File("replica"));
  std::shared_ptr<ReplicaClient> plain(std::move(*files));
  auto sealed = Sealed(plain, kKeyA);
  {
    ReplicatorOptions options;
    options.sync_interval_ms = 50;
    auto r = Replicator::Start(sealed, {{"main", db_path}}, options, services::SystemClock::Default());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    std::promise<services::Status> done;
    (*r)->RequestSync([&](const services::Status& st) { done.set_value(st); });
    ASSERT_TRUE(done.get_future().get().ok());
  }
  auto noop = [](const std::string&) {};
  auto ok = Restore(sealed.get(), "main", {}, dir.File("ok.db"), noop);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(Count(dir.File("ok.db")), 3);
  auto without = Restore(plain.get(), "main", {}, dir.File("nokey.db"), noop);
  EXPECT_NE(without.status().message().find("encryption_key"), std::string::npos)
      << without.status().message();
  auto wrong = Restore(Sealed(plain, kKeyB).get(), "main", {}, dir.File("wrong.db"), noop);
  EXPECT_FALSE(wrong.ok());
  EXPECT_NE(access(dir.File("nokey.db").c_str(), F_OK), 0);
  EXPECT_NE(access(dir.File("wrong.db").c_str(), F_OK), 0);
}

}  // namespace
}  // namespace replica

// --- Review tests: WAL reads in batches, streamed segment bodies, merged runs ------------------

namespace replica {
namespace {

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
void WriteWhole(const std::string& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// A WAL of many transactions of mixed sizes, so transactions straddle the reader's 256 KiB batches
// at every page size; the reader must return the same transactions however it is cut.
class WalBatchTest : public ::testing::TestWithParam<int> {};

TEST_P(WalBatchTest, TransactionsAcrossReadBatchesTruncationsAndDamage) {
  services::TempDir dir;
  const std::string path = dir.File("w.db");
  {
    auto db = SqliteDb::Open(path, SqliteDb::Mode::kReadWriteCreate);
    ASSERT_TRUE(db.ok());
    // The page size takes effect when the file is created, before WAL mode.
    ASSERT_TRUE((*db)->Exec("PRAGMA page_size=" + std::to_string(GetParam()) +
                            "; CREATE TABLE t(v BLOB)")
                    .ok());
  }
  auto db = OpenWriter(path);
  const int blob = GetParam() * 3 / 2;  // overflow pages: several frames per transaction
  const int count = GetParam() > 8192 ? 40 : 150;  // (64 KiB pages: fewer, the WAL is large)
  for (int i = 0; i < count; ++i) {
    const int rows = 1 + (i * 7) % 11;
    ASSERT_TRUE(db->Exec("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < " +
                         std::to_string(rows) + ") INSERT INTO t(v) SELECT randomblob(" +
                         std::to_string(blob) + ") FROM c")
                    .ok());
  }
  const std::string wal = path + "-wal";
  auto header = ReadWalHeader(wal);
  ASSERT_TRUE(header.ok() && header->has_value());
  const WalHeader h = **header;
  ASSERT_EQ(h.page_size, static_cast<uint32_t>(GetParam()));
  const size_t frame_bytes = kWalFrameHeaderBytes + h.page_size;
  auto all = ReadCommitted(wal, h, StartOf(h), SIZE_MAX);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->transactions.size(), static_cast<size_t>(count));
  // Frame index just after each transaction's commit frame.
  std::vector<uint64_t> ends;
  uint64_t frames = 0;
  for (const WalTransaction& t : all->transactions) ends.push_back(frames += t.pages.size());
  ASSERT_EQ(all->end.frames, frames);
  ASSERT_GT(frames * frame_bytes, 3u * (256 << 10));  // several batches
  auto counted = CountCommittedFrames(wal, h, StartOf(h));
  ASSERT_TRUE(counted.ok());
  EXPECT_EQ(*counted, frames);

  // One transaction at a time from every commit boundary (reads starting mid-batch).
  WalPosition pos = StartOf(h);
  for (size_t i = 0; i < all->transactions.size(); ++i) {
    auto one = ReadCommitted(wal, h, pos, 1);
    ASSERT_TRUE(one.ok());
    ASSERT_EQ(one->transactions.size(), 1u) << i;
    const WalTransaction& want = all->transactions[i];
    ASSERT_EQ(one->transactions[0].db_pages, want.db_pages);
    ASSERT_EQ(one->transactions[0].pages.size(), want.pages.size());
    for (size_t p = 0; p < want.pages.size(); ++p) {
      ASSERT_EQ(one->transactions[0].pages[p].pgno, want.pages[p].pgno);
      ASSERT_EQ(one->transactions[0].pages[p].data, want.pages[p].data);
    }
    ASSERT_EQ(one->end.frames, ends[i]);
    if (i % 16 == 0) {  // (walks from the start each time)
      auto contains = WalContains(wal, h, one->end);
      ASSERT_TRUE(contains.ok() && *contains) << i;
    }
    pos = one->end;
  }
  EXPECT_EQ(pos.checksum1, all->end.checksum1);
  EXPECT_EQ(pos.checksum2, all->end.checksum2);

  // Cut short anywhere (inside a frame, on a frame boundary, around batch boundaries): only the
  // transactions whose commit frame is whole come back.
  const std::string bytes = ReadWhole(wal);
  const std::string cut = dir.File("cut-wal");
  const size_t batch = std::max<size_t>(1, (256 << 10) / frame_bytes);
  std::vector<size_t> sizes;
  for (uint64_t f : {batch - 1, batch, batch + 1, 2 * batch, 2 * batch + 1, frames / 2, frames - 1,
                     frames}) {
    const size_t at = kWalHeaderBytes + f * frame_bytes;
    for (size_t delta : {size_t{0}, size_t{1}, size_t{24}, frame_bytes - 1}) {
      if (at + delta <= bytes.size()) sizes.push_back(at + delta);
    }
  }
  for (size_t size : sizes) {
    WriteWhole(cut, std::string_view(bytes).substr(0, size));
    const uint64_t whole = (size - kWalHeaderBytes) / frame_bytes;
    size_t want = 0;
    while (want < ends.size() && ends[want] <= whole) ++want;
    auto read = ReadCommitted(cut, h, StartOf(h), SIZE_MAX);
    ASSERT_TRUE(read.ok());
    EXPECT_EQ(read->transactions.size(), want) << "cut at " << size;
    EXPECT_EQ(read->end.frames, want == 0 ? 0 : ends[want - 1]) << "cut at " << size;
  }

  // A damaged frame past the first batch ends the read before the transaction holding it, and a
  // read resumed after the damage's transaction does not skip over it either.
  for (uint64_t bad : {batch - 1, batch, batch + 1, 2 * batch}) {
    std::string damaged = bytes;
    damaged[kWalHeaderBytes + bad * frame_bytes + kWalFrameHeaderBytes + 100] ^= 1;
    WriteWhole(cut, damaged);
    size_t want = 0;
    while (want < ends.size() && ends[want] <= bad) ++want;
    auto read = ReadCommitted(cut, h, StartOf(h), SIZE_MAX);
    ASSERT_TRUE(read.ok());
    EXPECT_EQ(read->transactions.size(), want) << "damage in frame " << bad;
    auto count = CountCommittedFrames(cut, h, StartOf(h));
    ASSERT_TRUE(count.ok());
    EXPECT_EQ(*count, want == 0 ? 0 : ends[want - 1]);
  }
}

INSTANTIATE_TEST_SUITE_P(PageSizes, WalBatchTest, ::testing::Values(512, 4096, 65536));

}  // namespace
}  // namespace replica

#include <openssl/evp.h>
#include <zstd.h>

namespace replica {
namespace {

// The body FORMAT.md specifies, written out by hand.
std::string SpecBody(const std::vector<SegmentTransaction>& txns) {
  std::string body;
  auto put = [&](uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) body.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  for (const SegmentTransaction& t : txns) {
    put(t.txid, 8);
    put(static_cast<uint64_t>(t.time_ms), 8);
    put(t.db_pages, 4);
    put(t.pages.size(), 4);
    for (const WalPage& p : t.pages) {
      put(p.pgno, 4);
      body += p.data;
    }
  }
  return body;
}

std::string Sha256Of(std::string_view data) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), d, &n, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(d), n);
}

// Checks an object against the spec: header fields, one zstd frame with a content checksum,
// the body byte for byte.
void ExpectSpecSegment(const std::string& object, const ObjectHeader& want,
                       const std::vector<SegmentTransaction>& txns) {
  const std::string body = SpecBody(txns);
  auto h = DecodeHeader(object);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(object.substr(0, 8), std::string("GWSEG\0\0\x01", 8));
  EXPECT_EQ(h->kind, ObjectKind::kSegment);
  EXPECT_EQ(h->page_size, want.page_size);
  EXPECT_EQ(h->first_txid, want.first_txid);
  EXPECT_EQ(h->last_txid, want.last_txid);
  EXPECT_EQ(h->first_time_ms, want.first_time_ms);
  EXPECT_EQ(h->last_time_ms, want.last_time_ms);
  EXPECT_EQ(h->db_pages, want.db_pages);
  EXPECT_EQ(h->wal_salt1, want.wal_salt1);
  EXPECT_EQ(h->wal_end.frames, want.wal_end.frames);
  EXPECT_EQ(h->body_bytes, body.size());
  EXPECT_EQ(h->body_sha256, Sha256Of(body));
  EXPECT_EQ(object.substr(120, 8), std::string(8, '\0'));  // reserved
  const std::string_view frame = std::string_view(object).substr(kObjectHeaderBytes);
  EXPECT_EQ(ZSTD_findFrameCompressedSize(frame.data(), frame.size()), frame.size());  // one frame
  // The frame header descriptor (after the 4-byte magic): bit 2 is Content_Checksum_flag.
  ASSERT_GT(frame.size(), 5u);
  EXPECT_TRUE((static_cast<unsigned char>(frame[4]) & 0x04) != 0) << "no zstd content checksum";
  std::string back(body.size() + 1, '\0');
  const size_t n = ZSTD_decompress(back.data(), back.size(), frame.data(), frame.size());
  ASSERT_FALSE(ZSTD_isError(n)) << ZSTD_getErrorName(n);
  back.resize(n);
  EXPECT_TRUE(back == body) << "the body differs from the spec's";
}

TEST(SegmentBuilderReviewTest, StreamedObjectsAreWhatTheSpecSays) {
  std::mt19937 rng(7);
  auto random_page = [&](size_t size) {
    std::string s(size, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    return s;
  };
  ObjectHeader h;
  h.page_size = 65536;
  h.first_txid = 41;
  h.last_txid = 44;
  h.first_time_ms = 1700000000000;
  h.last_time_ms = 1700000000999;
  h.db_pages = 77;
  h.wal_salt1 = 0x01020304;
  h.wal_end.frames = 12345;
  // Several MiB that do not compress: many trips through the output buffer.
  std::vector<SegmentTransaction> txns;
  for (uint64_t t = 41; t <= 44; ++t) {
    SegmentTransaction txn{t, 1700000000000 + static_cast<int64_t>(t), static_cast<uint32_t>(t), {}};
    for (uint32_t p = 0; p < (t == 43 ? 0u : 20u); ++p) txn.pages.push_back({p + 1, random_page(65536)});
    txns.push_back(std::move(txn));
  }
  // An abandoned builder leaves the thread's stream mid-frame; the next must not carry it over.
  {
    SegmentBuilder abandoned(kFastZstdLevel);
    abandoned.AddTransaction(1, 1, 1, txns[0].pages);
  }
  for (int level : {kFastZstdLevel, kDefaultZstdLevel, kFastZstdLevel}) {
    SegmentBuilder builder(level);
    for (const SegmentTransaction& t : txns) builder.AddTransaction(t.txid, t.time_ms, t.db_pages, t.pages);
    {
      // A second builder alive on the same thread at once (a merge started from a ship).
      SegmentBuilder nested(kDefaultZstdLevel);
      nested.AddTransaction(txns[3].txid, txns[3].time_ms, txns[3].db_pages, txns[3].pages);
      ObjectHeader one = h;
      one.first_txid = one.last_txid = 44;
      ExpectSpecSegment(nested.Finish(one), one, {txns[3]});
    }
    ExpectSpecSegment(builder.Finish(h), h, txns);
  }
  // Encoded runs concatenate into the same object as the transactions they hold.
  const std::string body = SpecBody(txns);
  SegmentBuilder runs(kDefaultZstdLevel);
  runs.AddEncoded(std::string_view(body).substr(0, 100));
  runs.AddEncoded(std::string_view(body).substr(100));
  ExpectSpecSegment(runs.Finish(h), h, txns);
}

}  // namespace
}  // namespace replica

namespace replica {
namespace {

// Forwards to a FileClient and keeps a copy of every object created, so a test can compare what
// merges made with the level-0 objects they came from (which compaction deletes).
class RecordingClient final : public ReplicaClient {
 public:
  explicit RecordingClient(std::shared_ptr<ReplicaClient> inner) : inner_(std::move(inner)) {}
  std::string Describe() const override { return inner_->Describe(); }
  services::Status PutNew(const std::string& key, std::string_view data) override {
    if (before_put) {
      services::Status st = before_put(key);
      if (!st.ok()) return st;
    }
    std::lock_guard<std::mutex> lock(mu_);
    created_[key] = std::string(data);
    return inner_->PutNew(key, data);
  }
  // Runs (on the replication thread) before each PutNew; an error fails that PutNew.
  std::function<services::Status(const std::string& key)> before_put;
  services::Status Put(const std::string& key, std::string_view data) override {
    return inner_->Put(key, data);
  }
  services::Result<std::string> PutIfMatch(const std::string& key, std::string_view data,
                                           const std::string& etag) override {
    return inner_->PutIfMatch(key, data, etag);
  }
  services::Status PutFileNew(const std::string& key, const std::string& path) override {
    return inner_->PutFileNew(key, path);
  }
  services::Result<std::string> Get(const std::string& key) override { return inner_->Get(key); }
  services::Status GetToFile(const std::string& key, const std::string& path) override {
    return inner_->GetToFile(key, path);
  }
  services::Result<ObjectInfo> Head(const std::string& key) override { return inner_->Head(key); }
  services::Result<std::vector<ObjectInfo>> List(const std::string& prefix) override {
    return inner_->List(prefix);
  }
  services::Status Delete(const std::string& key) override { return inner_->Delete(key); }
  ClientStats Stats() const override { return inner_->Stats(); }
  std::map<std::string, std::string> Created() {
    std::lock_guard<std::mutex> lock(mu_);
    return created_;
  }

 private:
  std::shared_ptr<ReplicaClient> inner_;
  std::mutex mu_;
  std::map<std::string, std::string> created_;
};

TEST_F(ReplicatorTest, MergedSegmentsHoldExactlyTheTransactionsOfTheirInputs) {
  replicator_.reset();
  auto recording = std::make_shared<RecordingClient>(client_);
  client_ = recording;
  fanout_ = 3;
  Start();
  for (int round = 0; round < 40; ++round) {
    Insert(1 + round % 4);
    if (round % 5 == 0) {
      ASSERT_TRUE(writer_->Exec("DELETE FROM t WHERE id % 3 = 0").ok());
    }
    Sync();
    if (round == 17) {  // a restart: merges then start from listed segments
      replicator_.reset();
      Start();
    }
  }
  replicator_.reset();
  // Every transaction as its level-0 object has it.
  std::map<uint64_t, SegmentTransaction> shipped;
  std::vector<std::pair<std::string, std::string>> merged;
  for (const auto& [key, object] : recording->Created()) {
    auto k = ParseKey(key);
    if (!k || k->kind != ObjectKind::kSegment) continue;
    if (k->level > 0) {
      merged.emplace_back(key, object);
      continue;
    }
    ObjectHeader h;
    auto txns = DecodeSegment(object, &h);
    ASSERT_TRUE(txns.ok()) << key;
    for (SegmentTransaction& t : *txns) shipped.emplace(t.txid, std::move(t));
  }
  ASSERT_GT(merged.size(), 3u);
  size_t level2 = 0;
  for (const auto& [key, object] : merged) {
    auto k = ParseKey(key);
    level2 += k->level >= 2;
    ObjectHeader h;
    auto txns = DecodeSegment(object, &h);
    ASSERT_TRUE(txns.ok()) << key << ": " << txns.status().ToString();
    ASSERT_FALSE(txns->empty());
    EXPECT_EQ(h.first_txid, k->first_txid);
    EXPECT_EQ(h.last_txid, k->last_txid);
    EXPECT_EQ(txns->front().txid, h.first_txid) << key;
    EXPECT_EQ(txns->back().txid, h.last_txid) << key;
    EXPECT_EQ(txns->front().time_ms, h.first_time_ms) << key;
    EXPECT_EQ(txns->back().time_ms, h.last_time_ms) << key;
    EXPECT_EQ(txns->back().db_pages, h.db_pages) << key;
    for (size_t i = 0; i < txns->size(); ++i) {
      const SegmentTransaction& t = (*txns)[i];
      EXPECT_EQ(t.txid, h.first_txid + i) << key << " is not consecutive";
      auto it = shipped.find(t.txid);
      ASSERT_NE(it, shipped.end()) << key << " holds transaction " << t.txid << " never shipped";
      EXPECT_EQ(t.time_ms, it->second.time_ms);
      EXPECT_EQ(t.db_pages, it->second.db_pages);
      ASSERT_EQ(t.pages.size(), it->second.pages.size()) << t.txid;
      for (size_t p = 0; p < t.pages.size(); ++p) {
        EXPECT_EQ(t.pages[p].pgno, it->second.pages[p].pgno);
        EXPECT_TRUE(t.pages[p].data == it->second.pages[p].data) << t.txid;
      }
    }
  }
  EXPECT_GT(level2, 0u);
  RestoreTo(dir_.File("restored.db"));
  EXPECT_EQ(Count(dir_.File("restored.db")), Count(db_path_));
}

}  // namespace
}  // namespace replica

namespace replica {
namespace {

// A merge that fails right after RestartWal uploaded the WAL's tail must not make the next round
// upload that tail again under new transaction numbers (the tail is in the replica already).
TEST_F(ReplicatorTest, AFailedMergeAfterAWalRestartDoesNotShipTheTailTwice) {
  replicator_.reset();
  auto recording = std::make_shared<RecordingClient>(client_);
  client_ = recording;
  fanout_ = 2;
  Start();
  Sync();  // the snapshot; nothing pending
  auto txid_after_snapshot = ListGenerations(client_.get(), "main");
  ASSERT_TRUE(txid_after_snapshot.ok() && txid_after_snapshot->size() == 1u);
  std::atomic<int> stage{0};
  recording->before_put = [&](const std::string& key) -> services::Status {
    auto k = ParseKey(key);
    if (!k || k->kind != ObjectKind::kSegment) return services::Status::Ok();
    if (k->level == 0 && stage.load() == 0) {
      // While the big segment uploads, one more commit: RestartWal reads it as the WAL's tail.
      stage = 1;
      EXPECT_TRUE(writer_->Exec("INSERT INTO t(v) VALUES ('tail')").ok());
    } else if (k->level > 0 && stage.load() == 1) {
      stage = 2;  // the merge of the big segment and the tail fails once
      return services::Status::IoError("injected: merge upload fails");
    }
    return services::Status::Ok();
  };
  // Past the 16 MiB at which the WAL is restarted.
  ASSERT_TRUE(writer_
                  ->Exec("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c "
                         "WHERE n < 20) INSERT INTO t(v) SELECT randomblob(1 << 20) FROM c")
                  .ok());
  // (The round that fails may be a timed one, so this one's answer is not checked.)
  std::promise<services::Status> round;
  replicator_->RequestSync([&](const services::Status& st) { round.set_value(st); });
  (void)round.get_future().get();
  ASSERT_EQ(stage.load(), 2) << "the scenario did not happen (no WAL restart with a tail?)";
  Sync();
  Sync();
  replicator_.reset();
  // Two commits after the snapshot: two transactions in the replica, not three.
  auto gens = ListGenerations(client_.get(), "main");
  ASSERT_TRUE(gens.ok() && gens->size() == 1u);
  const RestoreResult all = RestoreTo(dir_.File("restored.db"));
  EXPECT_EQ(Count(dir_.File("restored.db")), 21);
  std::set<uint64_t> txids;
  for (const auto& [key, object] : recording->Created()) {
    auto k = ParseKey(key);
    if (!k || k->kind != ObjectKind::kSegment) continue;
    for (uint64_t t = k->first_txid; t <= k->last_txid; ++t) txids.insert(t);
  }
  EXPECT_EQ(txids.size(), 2u) << "the WAL's tail was shipped again as new transactions";
  EXPECT_EQ(all.txid, *txids.begin() + 1);
}

}  // namespace
}  // namespace replica
