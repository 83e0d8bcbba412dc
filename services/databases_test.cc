#include "services/databases.h"

#include <gtest/gtest.h>

#include "services/test_util.h"

namespace services {
namespace {

DatabasePaths PathsIn(const TempDir& dir) {
  return {dir.File("db/app.sqlite3"), dir.File("db/cache.sqlite3"), dir.File("db/queue.sqlite3")};
}

TEST(DatabasesTest, CreatesTunedWalDatabases) {
  TempDir dir;
  SqliteTuning tuning;
  tuning.busy_timeout_ms = 1234;
  tuning.synchronous = Synchronous::kFull;
  tuning.mmap_size = 1 << 20;
  tuning.journal_size_limit = 2 << 20;
  tuning.cache_size_kib = 4096;
  auto set = Databases::Open(PathsIn(dir), tuning);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  for (DatabaseRole role : kAllRoles) {
    const DatabaseInfo& info = (*set)->Info(role);
    SCOPED_TRACE(std::string(RoleName(role)));
    EXPECT_EQ(info.pragmas.journal_mode, "wal");
    EXPECT_EQ(info.pragmas.synchronous, 2);
    EXPECT_EQ(info.pragmas.busy_timeout, 1234);
    EXPECT_EQ(info.pragmas.mmap_size, 1 << 20);
    EXPECT_EQ(info.pragmas.journal_size_limit, 2 << 20);
    EXPECT_EQ(info.pragmas.cache_size, -4096);
    EXPECT_EQ(info.pragmas.foreign_keys, 1);
    EXPECT_EQ(info.pragmas.temp_store, 2);
    EXPECT_GT((*set)->CurrentInfo(role).size_bytes, 0);
  }
  for (DatabaseRole role : kAllRoles) EXPECT_EQ((*set)->Info(role).pragmas.wal_autocheckpoint, 0);
  EXPECT_EQ((*set)->Info(DatabaseRole::kMain).user_version, 0);
  EXPECT_GE((*set)->Info(DatabaseRole::kCache).user_version, 1);
  EXPECT_GE((*set)->Info(DatabaseRole::kQueue).user_version, 1);
}

TEST(DatabasesTest, ReopensAndRefusesSharedOrSwappedFiles) {
  TempDir dir;
  DatabasePaths paths = PathsIn(dir);
  { ASSERT_TRUE(Databases::Open(paths, SqliteTuning()).ok()); }
  { ASSERT_TRUE(Databases::Open(paths, SqliteTuning()).ok()); }

  DatabasePaths shared = paths;
  shared.queue = shared.cache;
  auto same = Databases::Open(shared, SqliteTuning());
  EXPECT_EQ(same.status().code(), Status::Code::kInvalidArgument) << same.status().ToString();

  DatabasePaths swapped = paths;
  std::swap(swapped.cache, swapped.queue);
  auto wrong = Databases::Open(swapped, SqliteTuning());
  EXPECT_EQ(wrong.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(wrong.status().message().find("own file"), std::string::npos);
}

TEST(DatabasesTest, CheckpointMainCopiesForeignWrites) {
  TempDir dir;
  auto set = Databases::Open(PathsIn(dir), SqliteTuning());
  ASSERT_TRUE(set.ok());
  // Another process (Django) writes main with autocheckpoint off.
  auto django = SqliteDb::Open(dir.File("db/app.sqlite3"), SqliteDb::Mode::kReadWrite);
  ASSERT_TRUE(django.ok());
  ASSERT_TRUE((*django)
                  ->Exec("PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);"
                         "INSERT INTO t VALUES (randomblob(100000))")
                  .ok());
  auto r = (*set)->Checkpoint(DatabaseRole::kMain);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->busy);
  EXPECT_GT(r->wal_frames, 0);
  EXPECT_EQ(r->checkpointed_frames, r->wal_frames);
}

}  // namespace
}  // namespace services
