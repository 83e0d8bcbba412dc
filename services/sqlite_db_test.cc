#include "services/sqlite_db.h"

#include <gtest/gtest.h>

#include "services/test_util.h"

namespace services {
namespace {

TEST(SqliteDbTest, BindsStepsAndReadsColumns) {
  TempDir dir;
  auto db = SqliteDb::Open(dir.File("t.db"), SqliteDb::Mode::kReadWriteCreate);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE((*db)->Exec("CREATE TABLE t(i INTEGER, d REAL, s TEXT, b BLOB)").ok());
  auto ins = (*db)->Prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4)");
  ASSERT_TRUE(ins.ok());
  ASSERT_TRUE(ins->BindInt(1, 1ll << 40).ok());
  ASSERT_TRUE(ins->BindDouble(2, 2.5).ok());
  ASSERT_TRUE(ins->BindText(3, "héllo").ok());
  ASSERT_TRUE(ins->BindBlob(4, std::string("a\0b", 3)).ok());
  ASSERT_TRUE(ins->Run().ok());
  ins->Reset();
  ASSERT_TRUE(ins->BindBlob(4, "").ok());
  ASSERT_TRUE(ins->Run().ok());

  auto sel = (*db)->Prepare("SELECT i, d, s, b, typeof(b) FROM t ORDER BY rowid");
  ASSERT_TRUE(sel.ok());
  auto row = sel->Step();
  ASSERT_TRUE(row.ok() && *row);
  EXPECT_EQ(sel->ColumnInt(0), 1ll << 40);
  EXPECT_EQ(sel->ColumnDouble(1), 2.5);
  EXPECT_EQ(sel->ColumnText(2), "héllo");
  EXPECT_EQ(sel->ColumnBlob(3), std::string("a\0b", 3));
  row = sel->Step();
  ASSERT_TRUE(row.ok() && *row);
  EXPECT_TRUE(sel->ColumnIsNull(0));
  EXPECT_EQ(sel->ColumnText(4), "blob");  // an empty blob stays a blob, not NULL
  row = sel->Step();
  ASSERT_TRUE(row.ok());
  EXPECT_FALSE(*row);
}

TEST(SqliteDbTest, ErrorsAreStatuses) {
  TempDir dir;
  auto db = SqliteDb::Open(dir.File("t.db"), SqliteDb::Mode::kReadWriteCreate);
  ASSERT_TRUE(db.ok());
  Status st = (*db)->Exec("SELEKT 1");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("syntax error"), std::string::npos) << st.ToString();
  ASSERT_TRUE((*db)->Exec("CREATE TABLE u(x PRIMARY KEY); INSERT INTO u VALUES (1)").ok());
  st = (*db)->Exec("INSERT INTO u VALUES (1)");
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument) << st.ToString();

  auto missing = SqliteDb::Open(dir.File("nope/t.db"), SqliteDb::Mode::kReadWrite);
  EXPECT_EQ(missing.status().code(), Status::Code::kIoError) << missing.status().ToString();
}

TEST(WriteTransactionTest, RollsBackUnlessCommitted) {
  TempDir dir;
  auto db = SqliteDb::Open(dir.File("t.db"), SqliteDb::Mode::kReadWriteCreate);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Exec("CREATE TABLE t(x)").ok());
  {
    auto txn = WriteTransaction::Begin(db->get());
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO t VALUES (1)").ok());
  }
  EXPECT_EQ(*(*db)->QueryInt("SELECT count(*) FROM t"), 0);
  {
    auto txn = WriteTransaction::Begin(db->get());
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO t VALUES (1)").ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  EXPECT_EQ(*(*db)->QueryInt("SELECT count(*) FROM t"), 1);
}

TEST(WriteTransactionTest, SecondWriterGetsBusyAfterTimeout) {
  TempDir dir;
  auto a = SqliteDb::Open(dir.File("t.db"), SqliteDb::Mode::kReadWriteCreate);
  auto b = SqliteDb::Open(dir.File("t.db"), SqliteDb::Mode::kReadWriteCreate);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Exec("PRAGMA journal_mode=WAL; CREATE TABLE t(x)").ok());
  ASSERT_TRUE((*b)->Exec("PRAGMA busy_timeout = 10").ok());
  auto held = WriteTransaction::Begin(a->get());
  ASSERT_TRUE(held.ok());
  auto blocked = WriteTransaction::Begin(b->get());
  EXPECT_EQ(blocked.status().code(), Status::Code::kBusy) << blocked.status().ToString();
}

}  // namespace
}  // namespace services
