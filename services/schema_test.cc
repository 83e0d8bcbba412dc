#include "services/schema.h"

#include <gtest/gtest.h>

#include "services/test_util.h"

namespace services {
namespace {

constexpr Migration kTwoSteps[] = {
    {1, "CREATE TABLE gateway_meta(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)"},
    {2, "CREATE TABLE items(id INTEGER PRIMARY KEY)"},
};

std::unique_ptr<SqliteDb> OpenDb(const std::string& path) {
  auto db = SqliteDb::Open(path, SqliteDb::Mode::kReadWriteCreate);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  return std::move(*db);
}

TEST(MigrateTest, NewDatabaseGetsEveryMigrationAndItsRole) {
  TempDir dir;
  auto db = OpenDb(dir.File("c.db"));
  ASSERT_TRUE(Migrate(db.get(), "cache", kTwoSteps).ok());
  EXPECT_EQ(*db->QueryInt("PRAGMA user_version"), 2);
  EXPECT_EQ(*db->QueryText("SELECT value FROM gateway_meta WHERE key='role'"), "cache");
  EXPECT_EQ(*db->QueryInt("SELECT count(*) FROM items"), 0);
  // Running again is a no-op.
  ASSERT_TRUE(Migrate(db.get(), "cache", kTwoSteps).ok());
  EXPECT_EQ(*db->QueryInt("PRAGMA user_version"), 2);
}

TEST(MigrateTest, OlderDatabaseMovesForward) {
  TempDir dir;
  auto db = OpenDb(dir.File("c.db"));
  ASSERT_TRUE(Migrate(db.get(), "cache", std::span(kTwoSteps).first(1)).ok());
  EXPECT_EQ(*db->QueryInt("PRAGMA user_version"), 1);
  ASSERT_TRUE(Migrate(db.get(), "cache", kTwoSteps).ok());
  EXPECT_EQ(*db->QueryInt("PRAGMA user_version"), 2);
}

TEST(MigrateTest, RefusesNewerWrongRoleAndForeignDatabases) {
  TempDir dir;
  auto db = OpenDb(dir.File("c.db"));
  ASSERT_TRUE(Migrate(db.get(), "cache", kTwoSteps).ok());
  Status newer = Migrate(db.get(), "cache", std::span(kTwoSteps).first(1));
  EXPECT_EQ(newer.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(newer.message().find("newer gateway"), std::string::npos) << newer.ToString();

  Status role = Migrate(db.get(), "queue", kTwoSteps);
  EXPECT_EQ(role.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(role.message().find("'cache' database"), std::string::npos) << role.ToString();

  auto django = OpenDb(dir.File("django.db"));
  ASSERT_TRUE(django->Exec("CREATE TABLE auth_user(id INTEGER PRIMARY KEY)").ok());
  Status foreign = Migrate(django.get(), "cache", kTwoSteps);
  EXPECT_EQ(foreign.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(foreign.message().find("did not create"), std::string::npos) << foreign.ToString();
}

TEST(MigrateTest, FailedMigrationLeavesTheOldSchema) {
  TempDir dir;
  auto db = OpenDb(dir.File("c.db"));
  constexpr Migration kBroken[] = {
      {1, "CREATE TABLE gateway_meta(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)"},
      {2, "CREATE TABLE a(x); CREATE TABLE a(x)"},
  };
  EXPECT_FALSE(Migrate(db.get(), "cache", kBroken).ok());
  EXPECT_EQ(*db->QueryInt("PRAGMA user_version"), 0);
  EXPECT_EQ(*db->QueryInt("SELECT count(*) FROM sqlite_schema"), 0);
}

}  // namespace
}  // namespace services
