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

TEST(MigrateTest, CacheVersion2EntriesKeepEverythingWithTheValueLast) {
  TempDir dir;
  auto db = OpenDb(dir.File("c.db"));
  ASSERT_TRUE(Migrate(db.get(), "cache", CacheMigrations().first(2)).ok());
  ASSERT_TRUE(db->Exec("INSERT INTO cache_entries(id, key, long_key, value, expires_at, "
                       "accessed_at, size) VALUES (5, x'61', NULL, zeroblob(100000), 123, 4, "
                       "100050), (9, x'00ff', x'6c6f6e67', 'text', NULL, NULL, 60)")
                  .ok());
  ASSERT_TRUE(Migrate(db.get(), "cache", CacheMigrations()).ok());
  EXPECT_EQ(*db->QueryInt("PRAGMA user_version"), 3);
  EXPECT_EQ(
      *db->QueryText("SELECT group_concat(name, ',') FROM pragma_table_info('cache_entries')"),
      "id,key,long_key,expires_at,accessed_at,size,value");
  EXPECT_EQ(*db->QueryText("SELECT group_concat(id || ':' || hex(key) || ':' || "
                           "hex(long_key) || ':' || length(value) || ':' || "
                           "typeof(value) || ':' || coalesce(expires_at, '-') || ':' || "
                           "coalesce(accessed_at, '-') || ':' || size, ' ') FROM "
                           "(SELECT * FROM cache_entries ORDER BY id)"),
            "5:61::100000:blob:123:4:100050 9:00FF:6C6F6E67:4:text:-:-:60");
  // The expiry index and the key's uniqueness came along; the old table is gone.
  EXPECT_EQ(*db->QueryInt("SELECT count(*) FROM sqlite_schema WHERE name = "
                          "'cache_entries_expiry' AND tbl_name = 'cache_entries'"),
            1);
  EXPECT_EQ(*db->QueryInt("SELECT count(*) FROM sqlite_schema WHERE tbl_name LIKE '%v2%'"), 0);
  EXPECT_FALSE(db->Exec("INSERT INTO cache_entries(key, value, size) VALUES (x'61', 1, 1)").ok());
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
