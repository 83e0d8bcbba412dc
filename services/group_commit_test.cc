#include "services/group_commit.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include "services/test_util.h"

namespace services {
namespace {

class GroupCommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = SqliteDb::Open(dir_.File("q.db"), SqliteDb::Mode::kReadWriteCreate);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(ApplyTuning(db->get(), SqliteTuning()).ok());
    ASSERT_TRUE((*db)->Exec("CREATE TABLE t(k TEXT PRIMARY KEY, v INTEGER)").ok());
    auto writer = GroupCommitWriter::Start(dir_.File("q.db"), SqliteTuning());
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    writer_ = std::move(*writer);
    auto reader = SqliteDb::Open(dir_.File("q.db"), SqliteDb::Mode::kReadOnly);
    ASSERT_TRUE(reader.ok());
    reader_ = std::move(*reader);
  }

  static GroupCommitWriter::Apply Put(std::string k, int64_t v) {
    return [k, v](SqliteDb* db) {
      return db->Exec("INSERT OR REPLACE INTO t VALUES ('" + k + "', " + std::to_string(v) + ")");
    };
  }
  int64_t Value(const std::string& k) {
    Result<int64_t> v =
        reader_->QueryInt("SELECT coalesce((SELECT v FROM t WHERE k = '" + k + "'), -1)");
    return v.ok() ? *v : -2;
  }
  // TryApplyNow once the writer thread lets go of the connection (it holds it briefly after
  // each batch, and TryApplyNow declines rather than wait).
  std::optional<Status> ApplyNow(const std::vector<GroupCommitWriter::Apply>& applies) {
    for (int i = 0; i < 2000; ++i) {
      std::optional<Status> st = writer_->TryApplyNow(applies);
      if (st) return st;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return std::nullopt;
  }

  TempDir dir_;
  std::unique_ptr<GroupCommitWriter> writer_;
  std::unique_ptr<SqliteDb> reader_;
};

TEST_F(GroupCommitTest, TryApplyNowCommitsEverythingInOneTransaction) {
  std::optional<Status> st = ApplyNow({Put("a", 1), Put("b", 2)});
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->ok()) << st->ToString();
  EXPECT_EQ(Value("a"), 1);  // committed: another connection sees both
  EXPECT_EQ(Value("b"), 2);
}

TEST_F(GroupCommitTest, TryApplyNowRollsBackEverythingWhenOneChangeFails) {
  std::optional<Status> st = ApplyNow(
      {Put("a", 1), [](SqliteDb* db) { return db->Exec("INSERT INTO missing VALUES (1)"); }});
  ASSERT_TRUE(st.has_value());
  EXPECT_FALSE(st->ok());
  EXPECT_EQ(Value("a"), -1);
  st = ApplyNow({Put("a", 3)});  // the connection is usable again: no transaction left open
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->ok());
  EXPECT_EQ(Value("a"), 3);
}

TEST_F(GroupCommitTest, TryApplyNowNeverWaitsAndNeverOvertakesSubmittedChanges) {
  auto other = SqliteDb::Open(dir_.File("q.db"), SqliteDb::Mode::kReadWrite);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->Exec("BEGIN IMMEDIATE").ok());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(writer_->TryApplyNow({Put("k", 1)}).has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));  // not 5 s
  std::promise<Status> first;
  writer_->Submit(Put("k", 1), [&](const Status& st) { first.set_value(st); });
  EXPECT_FALSE(writer_->TryApplyNow({Put("k", 2)}).has_value());  // would overtake "k" = 1
  std::promise<Status> second;
  writer_->Submit(Put("k", 2), [&](const Status& st) { second.set_value(st); });
  ASSERT_TRUE((*other)->Exec("COMMIT").ok());
  EXPECT_TRUE(first.get_future().get().ok());
  EXPECT_TRUE(second.get_future().get().ok());
  EXPECT_EQ(Value("k"), 2);
  std::optional<Status> st = ApplyNow({Put("k", 3)});
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(Value("k"), 3);
}

TEST_F(GroupCommitTest, AfterStopTryApplyNowDeclines) {
  writer_->Stop();
  EXPECT_FALSE(writer_->TryApplyNow({Put("k", 1)}).has_value());
}

TEST_F(GroupCommitTest, RewindsTheWalWhileTryApplyNowGoesOn) {
  writer_->Stop();
  auto writer = GroupCommitWriter::Start(dir_.File("q.db"), SqliteTuning(), 512, 256 << 10);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  writer_ = std::move(*writer);
  const std::string wal = dir_.File("q.db") + "-wal";
  int64_t largest_wal = 0;
  for (int i = 0; i < 600; ++i) {
    const std::string k = "w" + std::to_string(i % 40);
    std::optional<Status> st = ApplyNow({[k](SqliteDb* db) {
      return db->Exec("INSERT OR REPLACE INTO t VALUES ('" + k + "', randomblob(10000))");
    }});
    ASSERT_TRUE(st.has_value() && st->ok()) << i;
    std::this_thread::sleep_for(std::chrono::microseconds(500));  // the loop's other work
    std::error_code ec;
    largest_wal = std::max<int64_t>(largest_wal, std::filesystem::file_size(wal, ec));
  }
  // 600 changes of 4 pages each are 9.6 MB of frames: without rewinds the WAL would hold them all.
  EXPECT_LT(largest_wal, 4 << 20);
  Result<int64_t> rows = reader_->QueryInt("SELECT count(*) FROM t WHERE length(v) = 10000");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(*rows, 40);
}

}  // namespace
}  // namespace services
