#include "services/cache/cache_writer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <thread>

#include "services/cache/cache_reader.h"
#include "services/databases.h"
#include "services/test_util.h"

namespace services::cache {
namespace {

class CacheTest : public ::testing::Test {
 protected:
  void Open(CacheWriter::Options options = {}) {
    auto dbs = Databases::Open({dir_.File("app.db"), dir_.File("cache.db"), dir_.File("queue.db")},
                               SqliteTuning());
    ASSERT_TRUE(dbs.ok()) << dbs.status().ToString();
    dbs_ = std::move(*dbs);
    options.sweep_interval_ms = 5;
    auto writer = CacheWriter::Start(dir_.File("cache.db"), SqliteTuning(), options, &clock_);
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    writer_ = std::move(*writer);
    auto reader = CacheReader::Open(dir_.File("cache.db"), SqliteTuning());
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    reader_ = std::move(*reader);
  }

  // Submits and waits for the committed result.
  CacheWriteResult Write(CacheWrite w) {
    std::promise<CacheWriteResult> done;
    writer_->Submit(std::move(w), [&](CacheWriteResult r) { done.set_value(std::move(r)); });
    return done.get_future().get();
  }
  CacheWriteResult Set(std::string_view key, CacheValue value, std::optional<double> timeout = {}) {
    CacheWrite w;
    w.op = CacheOp::kSet;
    w.key = StoredKey::From(key);
    w.value = std::move(value);
    if (timeout) w.expiry = Expiry::After(*timeout, NowMs());
    return Write(std::move(w));
  }
  std::optional<CacheValue> Get(std::string_view key) {
    auto v = reader_->Get(StoredKey::From(key), NowMs());
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? *v : std::nullopt;
  }
  int64_t NowMs() const { return clock_.NowUnixMicros() / 1000; }
  // TryApplyNow once the writer thread is idle: it also holds the connection briefly after
  // starting and after each batch, and TryApplyNow declines rather than wait for it.
  std::optional<std::vector<CacheWriteResult>> ApplyNow(const std::vector<CacheWrite>& writes) {
    for (int i = 0; i < 2000; ++i) {
      std::optional<std::vector<CacheWriteResult>> r = writer_->TryApplyNow(writes);
      if (r) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return std::nullopt;
  }

  TempDir dir_;
  ManualClock clock_;
  std::unique_ptr<Databases> dbs_;
  std::unique_ptr<CacheWriter> writer_;
  std::unique_ptr<CacheReader> reader_;
};

TEST_F(CacheTest, SetGetOverwriteAndTypes) {
  Open();
  EXPECT_FALSE(Get("k").has_value());
  Set("k", CacheValue::Bytes(std::string("\0v", 2)));
  EXPECT_EQ(Get("k")->bytes, std::string("\0v", 2));
  Set("k", CacheValue::Int(-7));
  EXPECT_EQ(Get("k")->kind, CacheValue::Kind::kInt);
  EXPECT_EQ(Get("k")->integer, -7);
  Set("t", CacheValue::Text("123"));
  EXPECT_EQ(Get("t")->kind, CacheValue::Kind::kText);  // stays text, no numeric affinity
  EXPECT_EQ(writer_->Counters().entries, 2);
}

TEST_F(CacheTest, DjangoTimeoutRules) {
  Open();
  Set("forever", CacheValue::Text("x"));
  Set("zero", CacheValue::Text("x"), 0);
  Set("negative", CacheValue::Text("x"), -5);
  Set("short", CacheValue::Text("x"), 1.5);
  Set("month", CacheValue::Text("x"), 31 * 86400.0);
  EXPECT_TRUE(Get("forever"));
  EXPECT_FALSE(Get("zero"));
  EXPECT_FALSE(Get("negative"));
  EXPECT_TRUE(Get("short"));
  clock_.Advance(1'400'000);
  EXPECT_TRUE(Get("short"));
  clock_.Advance(200'000);
  EXPECT_FALSE(Get("short"));  // expired entries are never returned, swept or not
  EXPECT_TRUE(Get("month"));
  auto ttl = reader_->Ttl(StoredKey::From("month"), NowMs());
  EXPECT_NEAR(static_cast<double>(*ttl->expires_at_ms - NowMs()) / 1000, 31 * 86400.0 - 1.6, 0.01);

  // Setting with timeout 0 removes an existing entry; add with 0 says true and stores nothing.
  Set("forever", CacheValue::Text("x"), 0);
  EXPECT_FALSE(Get("forever"));
  CacheWrite add;
  add.op = CacheOp::kAdd;
  add.key = StoredKey::From("added");
  add.value = CacheValue::Text("v");
  add.expiry = Expiry::After(0, NowMs());
  EXPECT_TRUE(Write(add).flag);
  EXPECT_FALSE(Get("added"));
}

TEST_F(CacheTest, SweepRemovesExpiredEntriesInTheBackground) {
  Open();
  for (int i = 0; i < 1200; ++i) Set("e" + std::to_string(i), CacheValue::Int(i), 1);
  Set("keep", CacheValue::Int(1));
  EXPECT_EQ(writer_->Counters().entries, 1201);
  clock_.Advance(2'000'000);
  for (int i = 0; i < 500 && writer_->Counters().entries > 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(writer_->Counters().entries, 1);
  EXPECT_EQ(writer_->Counters().expirations, 1200);
  EXPECT_TRUE(Get("keep"));
}

TEST_F(CacheTest, IncrIsAtomicAndTyped) {
  Open();
  Set("n", CacheValue::Int(0));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 250; ++i) {
        CacheWrite w;
        w.op = CacheOp::kIncr;
        w.key = StoredKey::From("n");
        w.delta = 1;
        if (Write(w).error == CacheError::kNone) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 1000);
  EXPECT_EQ(Get("n")->integer, 1000);

  CacheWrite w;
  w.op = CacheOp::kIncr;
  w.key = StoredKey::From("missing");
  w.delta = 1;
  EXPECT_EQ(Write(w).error, CacheError::kKeyNotFound);
  Set("s", CacheValue::Bytes("abc"));
  w.key = StoredKey::From("s");
  EXPECT_EQ(Write(w).error, CacheError::kNotInteger);
  Set("max", CacheValue::Int(INT64_MAX));
  w.key = StoredKey::From("max");
  EXPECT_EQ(Write(w).error, CacheError::kOutOfRange);
  EXPECT_EQ(Get("max")->integer, INT64_MAX);
}

TEST_F(CacheTest, LongKeysAreHashedButNeverConfused) {
  Open();
  const std::string a(300, 'a');
  const std::string b = a + "b";
  Set(a, CacheValue::Text("A"));
  Set(b, CacheValue::Text("B"));
  EXPECT_EQ(Get(a)->bytes, "A");
  EXPECT_EQ(Get(b)->bytes, "B");
  // A short key equal to a long key's stored (hashed) form names a different entry.
  const std::string hashed = StoredKey::From(a).key;
  ASSERT_EQ(hashed.size(), 33u);
  EXPECT_FALSE(Get(hashed));
  auto page = reader_->Keys("aaa", std::nullopt, 10, NowMs());
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->keys.size(), 2u);
}

TEST_F(CacheTest, KeysPagesThroughAPrefix) {
  Open();
  for (int i = 0; i < 25; ++i) Set("p:" + std::to_string(100 + i), CacheValue::Int(i));
  Set("q:1", CacheValue::Int(1));
  Set("p:exp", CacheValue::Int(1), 1);
  clock_.Advance(2'000'000);
  std::vector<std::string> all;
  std::optional<std::string> cursor;
  for (int pages = 0; pages < 20; ++pages) {
    auto page = reader_->Keys("p:", cursor, 10, NowMs());
    ASSERT_TRUE(page.ok());
    all.insert(all.end(), page->keys.begin(), page->keys.end());
    if (!page->next) break;
    cursor = page->next;
  }
  ASSERT_EQ(all.size(), 25u);
  EXPECT_EQ(all.front(), "p:100");
  EXPECT_EQ(all.back(), "p:124");
}

TEST_F(CacheTest, ClearPrefixLocksAndCull) {
  Open();
  Set("a:1", CacheValue::Int(1));
  Set("a:2", CacheValue::Int(1));
  Set(std::string("a:") + std::string(300, 'x'), CacheValue::Int(1));
  Set("b:1", CacheValue::Int(1));
  CacheWrite clear;
  clear.op = CacheOp::kClearPrefix;
  clear.prefix = "a:";
  EXPECT_EQ(Write(clear).number, 3);
  EXPECT_TRUE(Get("b:1"));

  CacheWrite lock;
  lock.op = CacheOp::kLock;
  lock.key = StoredKey::From("lock");
  lock.value = CacheValue::Bytes("me");
  lock.expiry = Expiry::After(10, NowMs());
  EXPECT_TRUE(Write(lock).flag);
  EXPECT_TRUE(Write(lock).flag);  // same holder renews
  CacheWrite other = lock;
  other.value = CacheValue::Bytes("you");
  EXPECT_FALSE(Write(other).flag);
  other.op = CacheOp::kUnlock;
  EXPECT_FALSE(Write(other).flag);  // not the holder
  clock_.Advance(11'000'000);
  other.op = CacheOp::kLock;
  other.expiry = Expiry::After(10, NowMs());
  EXPECT_TRUE(Write(other).flag);  // the old lock expired

  for (int i = 0; i < 20; ++i) {
    CacheWrite w;
    w.op = CacheOp::kSet;
    w.key = StoredKey::From("c" + std::to_string(i));
    w.value = CacheValue::Int(i);
    w.cull = std::make_pair(int64_t{10}, int64_t{3});
    Write(w);
  }
  EXPECT_LE(writer_->Counters().entries, 11);
  EXPECT_TRUE(Get("c19"));  // the newest survive
}

TEST_F(CacheTest, SizeBudgetKeepsTheFileSmall) {
  CacheWriter::Options options;
  options.max_size = 2 << 20;
  Open(options);
  const std::string value(10'000, 'v');
  for (int i = 0; i < 2000; ++i) {  // 20 MB of distinct values, ten times the budget
    CacheWrite w;
    w.op = CacheOp::kSet;
    w.key = StoredKey::From("k" + std::to_string(i));
    w.value = CacheValue::Bytes(value);
    ASSERT_EQ(Write(std::move(w)).error, CacheError::kNone);
  }
  auto db = SqliteDb::Open(dir_.File("cache.db"), SqliteDb::Mode::kReadOnly);
  ASSERT_TRUE(db.ok());
  const int64_t bytes =
      *(*db)->QueryInt("PRAGMA page_count") * *(*db)->QueryInt("PRAGMA page_size");
  EXPECT_LE(bytes, (2 << 20) * 11 / 10);
  EXPECT_GT(writer_->Counters().evictions, 1500);
  EXPECT_TRUE(Get("k1999"));  // the most recent writes are kept
  EXPECT_FALSE(Get("k0"));
}

TEST_F(CacheTest, MaxEntries) {
  CacheWriter::Options options;
  options.max_entries = 100;
  Open(options);
  for (int i = 0; i < 300; ++i) Set("k" + std::to_string(i), CacheValue::Int(i));
  EXPECT_EQ(writer_->Counters().entries, 100);
  EXPECT_TRUE(Get("k299"));
  EXPECT_FALSE(Get("k199"));
}

TEST_F(CacheTest, TheDefaultEvictsWhatExpiresSoonestThenWhatNeverExpiresOldestFirst) {
  CacheWriter::Options options;
  options.max_entries = 3;
  Open(options);
  Set("a", CacheValue::Int(1), 100);
  Set("b", CacheValue::Int(2), 10);
  Set("never", CacheValue::Int(3));
  Set("a", CacheValue::Int(4), 100);  // updated where it is
  Set("d", CacheValue::Int(5), 50);   // 4 entries: b expires soonest
  EXPECT_FALSE(Get("b"));
  Set("e", CacheValue::Int(6), 1000);  // d (50) before a (100) and e (1000)
  EXPECT_FALSE(Get("d"));
  EXPECT_TRUE(Get("a") && Get("e") && Get("never"));
  Set("never2", CacheValue::Int(7));
  Set("never3", CacheValue::Int(8));  // a and e go before anything that never expires
  EXPECT_FALSE(Get("a"));
  EXPECT_FALSE(Get("e"));
  EXPECT_TRUE(Get("never") && Get("never2") && Get("never3"));
  Set("never4", CacheValue::Int(9));  // only never-expiring entries left: the oldest goes
  EXPECT_FALSE(Get("never"));
  EXPECT_EQ(writer_->Counters().entries, 3);
}

TEST_F(CacheTest, LeastRecentlyStoredEvictsInStoreOrder) {
  CacheWriter::Options options;
  options.max_entries = 3;
  options.eviction = Eviction::kLeastRecentlyStored;
  Open(options);
  Set("a", CacheValue::Int(1), 10);
  Set("b", CacheValue::Int(2), 1000);
  Set("c", CacheValue::Int(3));
  Set("a", CacheValue::Int(4), 10);  // stored again: now the newest
  Set("d", CacheValue::Int(5), 10);
  EXPECT_FALSE(Get("b"));
  EXPECT_TRUE(Get("a") && Get("c") && Get("d"));
}

TEST_F(CacheTest, GroupCommitAnswersEveryConcurrentWriter) {
  Open();
  std::atomic<int> done{0};
  std::promise<void> all;
  constexpr int kWrites = 5000;
  for (int i = 0; i < kWrites; ++i) {
    CacheWrite w;
    w.op = CacheOp::kSet;
    w.key = StoredKey::From("g" + std::to_string(i));
    w.value = CacheValue::Int(i);
    writer_->Submit(std::move(w), [&](CacheWriteResult r) {
      EXPECT_EQ(r.error, CacheError::kNone);
      if (++done == kWrites) all.set_value();
    });
  }
  all.get_future().wait();
  EXPECT_EQ(writer_->Counters().entries, kWrites);
  EXPECT_EQ(Get("g4999")->integer, 4999);
}

CacheWrite SetWrite(std::string_view key, int64_t value) {
  CacheWrite w;
  w.op = CacheOp::kSet;
  w.key = StoredKey::From(key);
  w.value = CacheValue::Int(value);
  return w;
}

TEST_F(CacheTest, TryApplyNowAppliesAtOnceWhenTheWriterIsIdle) {
  Open();
  std::vector<CacheWrite> writes;
  writes.push_back(SetWrite("a", 1));
  writes.push_back(SetWrite("b", 2));
  CacheWrite del;
  del.op = CacheOp::kDelete;
  del.key = StoredKey::From("a");
  writes.push_back(std::move(del));
  std::optional<std::vector<CacheWriteResult>> results = ApplyNow(writes);
  ASSERT_TRUE(results.has_value());
  ASSERT_EQ(results->size(), 3u);
  EXPECT_TRUE((*results)[0].flag);
  EXPECT_TRUE((*results)[2].flag);  // the delete saw the set before it, in the same transaction
  EXPECT_FALSE(Get("a"));
  EXPECT_EQ(Get("b")->integer, 2);  // committed: another connection sees it
  EXPECT_EQ(writer_->Counters().entries, 1);
}

TEST_F(CacheTest, TryApplyNowNeverWaitsForTheWriteLockAndNeverOvertakesQueuedWrites) {
  Open();
  auto other = SqliteDb::Open(dir_.File("cache.db"), SqliteDb::Mode::kReadWrite);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->Exec("BEGIN IMMEDIATE").ok());  // as a checkpoint or the replicator would
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(writer_->TryApplyNow({SetWrite("k", 1)}).has_value());
  // The writer's busy_timeout is 5 s; declining must not wait for it.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  // The declined write goes to the thread, which waits for the lock.
  std::promise<CacheWriteResult> first;
  writer_->Submit(SetWrite("k", 1), [&](CacheWriteResult r) { first.set_value(std::move(r)); });
  // Lock released or not, a later write must not overtake the queued one.
  EXPECT_FALSE(writer_->TryApplyNow({SetWrite("k", 2)}).has_value());
  std::promise<CacheWriteResult> second;
  writer_->Submit(SetWrite("k", 2), [&](CacheWriteResult r) { second.set_value(std::move(r)); });
  ASSERT_TRUE((*other)->Exec("COMMIT").ok());
  EXPECT_EQ(first.get_future().get().error, CacheError::kNone);
  EXPECT_EQ(second.get_future().get().error, CacheError::kNone);
  EXPECT_EQ(Get("k")->integer, 2);
  // Everything queued is applied: the fast path is open again.
  std::optional<std::vector<CacheWriteResult>> now = ApplyNow({SetWrite("k", 3)});
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(Get("k")->integer, 3);
}

TEST_F(CacheTest, TryApplyNowLeavesUnboundedWritesToTheWriterThread) {
  Open();
  ASSERT_TRUE(ApplyNow({SetWrite("k", 1)}).has_value());  // idle, so small writes go now
  CacheWrite clear;
  clear.op = CacheOp::kClearAll;
  EXPECT_FALSE(writer_->TryApplyNow({SetWrite("a", 1), clear}).has_value());
  CacheWrite prefix;
  prefix.op = CacheOp::kClearPrefix;
  prefix.prefix = "k";
  EXPECT_FALSE(writer_->TryApplyNow({prefix}).has_value());
  CacheWrite many;
  many.op = CacheOp::kSetMany;
  for (int i = 0; i < 1000; ++i) {
    many.items.emplace_back(StoredKey::From("m" + std::to_string(i)), CacheValue::Int(i));
  }
  EXPECT_FALSE(writer_->TryApplyNow({many}).has_value());
  EXPECT_EQ(Get("k")->integer, 1);  // declined means untouched
  EXPECT_FALSE(Get("m0"));
}

TEST_F(CacheTest, TryApplyNowWakesTheSweepForAnEarlierExpiry) {
  Open();
  // The writer thread sleeps with no sweep due: nothing can expire yet.
  Set("forever", CacheValue::Int(1));
  CacheWrite w = SetWrite("soon", 1);
  w.expiry = Expiry::After(1, NowMs());
  std::vector<CacheWrite> writes;
  writes.push_back(std::move(w));
  ASSERT_TRUE(ApplyNow(writes).has_value());
  clock_.Advance(2'000'000);
  for (int i = 0; i < 500 && writer_->Counters().expirations == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(writer_->Counters().expirations, 1);
  EXPECT_EQ(writer_->Counters().entries, 1);
}

TEST_F(CacheTest, TryApplyNowLeavesLongEvictionsToTheWriterThread) {
  CacheWriter::Options options;
  options.max_size = 2 << 20;
  Open(options);
  const std::string value(10'000, 'v');
  for (int i = 0; i < 2000; ++i) {  // 20 MB, ten times the budget, all through the fast path
    CacheWrite w;
    w.op = CacheOp::kSet;
    w.key = StoredKey::From("k" + std::to_string(i));
    w.value = CacheValue::Bytes(value);
    std::vector<CacheWrite> one;
    one.push_back(std::move(w));
    std::optional<std::vector<CacheWriteResult>> r = writer_->TryApplyNow(one);
    if (!r) {
      ASSERT_EQ(Write(std::move(one[0])).error, CacheError::kNone);
    } else {
      ASSERT_EQ((*r)[0].error, CacheError::kNone);
    }
  }
  // The thread's budget pass runs after the last write; wait for it.
  auto db = SqliteDb::Open(dir_.File("cache.db"), SqliteDb::Mode::kReadOnly);
  ASSERT_TRUE(db.ok());
  int64_t bytes = 0;
  for (int i = 0; i < 500; ++i) {
    bytes = *(*db)->QueryInt("PRAGMA page_count") * *(*db)->QueryInt("PRAGMA page_size");
    if (bytes <= (2 << 20) * 11 / 10) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_LE(bytes, (2 << 20) * 11 / 10);
  EXPECT_TRUE(Get("k1999"));
  EXPECT_FALSE(Get("k0"));
}

TEST_F(CacheTest, TheWriterKeepsTheWalSmallWhileSetsGoOnFromTheLoopThread) {
  // restart_wal_bytes as without a replica, scaled down: sets from the "loop" (TryApplyNow) keep
  // committing while the writer thread copies the WAL (PASSIVE, without the lock) and restarts it.
  CacheWriter::Options options;
  options.restart_wal_bytes = 256 << 10;
  Open(options);
  const std::string wal = dir_.File("cache.db") + "-wal";
  int64_t largest_wal = 0;
  for (int i = 0; i < 600; ++i) {
    CacheWrite w;
    w.op = CacheOp::kSet;
    w.key = StoredKey::From("w" + std::to_string(i % 40));
    w.value = CacheValue::Bytes(std::string(10000, static_cast<char>('a' + i % 26)));
    std::vector<CacheWrite> writes;
    writes.push_back(std::move(w));
    ASSERT_TRUE(ApplyNow(writes).has_value()) << i;
    std::this_thread::sleep_for(std::chrono::microseconds(500));  // the loop's other work
    std::error_code ec;
    largest_wal = std::max<int64_t>(largest_wal, std::filesystem::file_size(wal, ec));
  }
  // 600 sets of 4 pages each are 9.6 MB of WAL frames. Restarts keep the file near the
  // threshold plus what the sets add while a pre-copy runs (under 1 MB here; 4 MB leaves room
  // for a slow machine).
  EXPECT_LT(largest_wal, 4 << 20);
  for (int k = 0; k < 40; ++k) {
    const int last = 560 + k;
    ASSERT_EQ(Get("w" + std::to_string(k))->bytes,
              std::string(10000, static_cast<char>('a' + last % 26)));
  }
}

}  // namespace
}  // namespace services::cache
