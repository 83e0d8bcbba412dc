#include "services/wal_batching_vfs.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <random>
#include <string>

#include "services/test_util.h"

namespace services {
namespace {

// A VFS under test: SQLite's default one, with WAL writes counted and, on demand, failed.
std::atomic<int> wal_writes{0};
std::atomic<bool> fail_wal_writes{false};
std::atomic<int> frame_writes{0};
std::atomic<int> fail_frame_write_number{-1};  // fail the write that makes frame_writes this
sqlite3_vfs counting_vfs;
const sqlite3_io_methods* real_wal_methods = nullptr;
sqlite3_io_methods counting_wal_methods;

int CountingWrite(sqlite3_file* f, const void* data, int amount, sqlite3_int64 offset) {
  ++wal_writes;
  // Writes of frames, not counting the WAL header (32 bytes at offset 0, written and synced on
  // its own when the WAL restarts).
  const bool frames = offset != 0;
  if (frames && ++frame_writes == fail_frame_write_number) return SQLITE_IOERR_WRITE;
  if (fail_wal_writes) return SQLITE_IOERR_WRITE;
  return real_wal_methods->xWrite(f, data, amount, offset);
}

int CountingOpen(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* file, int flags, int* out) {
  sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
  int rc = real->xOpen(real, name, file, flags, out);
  if (rc == SQLITE_OK && (flags & SQLITE_OPEN_WAL) != 0) {
    if (real_wal_methods == nullptr) {
      real_wal_methods = file->pMethods;
      counting_wal_methods = *file->pMethods;
      counting_wal_methods.xWrite = CountingWrite;
    }
    EXPECT_EQ(file->pMethods, real_wal_methods);
    file->pMethods = &counting_wal_methods;
  }
  return rc;
}

class WalBatchingVfsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    counting_vfs = *sqlite3_vfs_find(nullptr);
    counting_vfs.zName = "counting";
    counting_vfs.xOpen = CountingOpen;
    counting_vfs.pNext = nullptr;
    ASSERT_EQ(sqlite3_vfs_register(&counting_vfs, 0), SQLITE_OK);
    ASSERT_TRUE(RegisterWalBatchingVfs("batching-over-counting", "counting").ok());
  }
  void TearDown() override {
    EXPECT_EQ(WalBatchingLateFlushes(), 0) << "a commit's frames were still buffered when SQLite "
                                              "published it";
  }
  void SetUp() override {
    fail_wal_writes = false;
    fail_frame_write_number = -1;
  }

  sqlite3* Open(const std::string& path, const char* vfs) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
              SQLITE_OK);
    Exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000");
    return db;
  }
  static void Exec(sqlite3* db, const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    ASSERT_EQ(rc, SQLITE_OK) << sql << ": " << (err ? err : "");
  }
  static int ExecRc(sqlite3* db, const std::string& sql) {
    return sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
  }
  static void Put(sqlite3* db, int key, const std::string& value) {
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(
        sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO t(k, v) VALUES (?1, ?2)", -1, &st, nullptr),
        SQLITE_OK);
    sqlite3_bind_int(st, 1, key);
    sqlite3_bind_blob(st, 2, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
    EXPECT_EQ(sqlite3_step(st), SQLITE_DONE) << sqlite3_errmsg(db);
    sqlite3_finalize(st);
  }
  static std::map<int, std::string> ReadAll(sqlite3* db) {
    std::map<int, std::string> rows;
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, "SELECT k, v FROM t", -1, &st, nullptr), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
      const char* v = static_cast<const char*>(sqlite3_column_blob(st, 1));
      rows[sqlite3_column_int(st, 0)] = std::string(v ? v : "", sqlite3_column_bytes(st, 1));
    }
    sqlite3_finalize(st);
    return rows;
  }
  // A batching writer and a plain reader on dir/t.db, which has table t(k, v).
  void OpenWriterAndReader(const TempDir& dir, sqlite3** writer, sqlite3** reader) {
    *writer = Open(dir.File("t.db"), "batching-over-counting");
    *reader = Open(dir.File("t.db"), nullptr);
    Exec(*writer, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
  }
  static std::string IntegrityCheck(sqlite3* db) {
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr);
    std::string out = sqlite3_step(st) == SQLITE_ROW
                          ? reinterpret_cast<const char*>(sqlite3_column_text(st, 0))
                          : "no answer";
    sqlite3_finalize(st);
    return out;
  }
  // What a process killed now would leave: the database and WAL files as they are (not the
  // wal-index, which dies with the processes), opened fresh so SQLite recovers from the WAL.
  static std::map<int, std::string> ReadAsIfKilled(const TempDir& dir, const std::string& name) {
    std::filesystem::create_directories(dir.path() + "/copy");
    for (const char* suffix : {"", "-wal"}) {
      std::filesystem::copy_file(dir.File(name + suffix), dir.File("copy/" + name + suffix),
                                 std::filesystem::copy_options::overwrite_existing);
    }
    std::filesystem::remove(dir.File("copy/" + name + "-shm"));
    sqlite3* db = nullptr;
    EXPECT_EQ(
        sqlite3_open_v2(dir.File("copy/" + name).c_str(), &db, SQLITE_OPEN_READWRITE, nullptr),
        SQLITE_OK);
    std::map<int, std::string> rows = ReadAll(db);
    EXPECT_EQ(IntegrityCheck(db), "ok");
    sqlite3_close(db);
    std::filesystem::remove_all(dir.path() + "/copy");
    return rows;
  }
};

// Where two tables differ, in a line (values are random bytes, too long to print).
std::string Difference(const std::map<int, std::string>& got,
                       const std::map<int, std::string>& want) {
  for (const auto& [k, v] : want) {
    auto it = got.find(k);
    if (it == got.end()) return "row " + std::to_string(k) + " missing";
    if (it->second != v) {
      return "row " + std::to_string(k) + " has " + std::to_string(it->second.size()) +
             " bytes, want " + std::to_string(v.size());
    }
  }
  for (const auto& [k, v] : got) {
    if (want.count(k) == 0) return "row " + std::to_string(k) + " should not be there";
  }
  return "";
}

std::string Bytes(std::mt19937* rng, size_t size) {
  std::string s(size, '\0');
  for (char& c : s) c = static_cast<char>((*rng)() & 0xff);
  return s;
}

TEST_F(WalBatchingVfsTest, WritesACommitsFramesWithOneWrite) {
  TempDir dir;
  std::mt19937 rng(1);
  for (const char* vfs : {"counting", "batching-over-counting"}) {
    std::string path = dir.File(std::string(vfs) + ".db");
    sqlite3* db = Open(path, vfs);
    Exec(db, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    Put(db, 1, Bytes(&rng, 100));
    wal_writes = 0;
    Put(db, 2, Bytes(&rng, 100 * 1024));  // about 25 overflow pages: 26 frames
    int big = wal_writes.exchange(0);
    Put(db, 1, Bytes(&rng, 100));
    int small = wal_writes.exchange(0);
    if (std::string(vfs) == "counting") {
      EXPECT_GE(big, 50);  // a header and a page per frame
      EXPECT_GE(small, 2);
    } else {
      EXPECT_EQ(big, 1);
      EXPECT_EQ(small, 1);
    }
    sqlite3_close(db);
  }
}

TEST_F(WalBatchingVfsTest, EveryCommitIsInTheFileWhenItReturns) {
  // Two batching writers and a plain reader on one database, with transactions that spill to the
  // WAL and roll back, that overwrite their own spilled frames (checksum rewrite), and WAL
  // restarts. After each commit, the reader and a crash copy see exactly what was committed.
  TempDir dir;
  std::string path = dir.File("t.db");
  sqlite3* a = Open(path, "batching-over-counting");
  sqlite3* b = Open(path, "batching-over-counting");
  sqlite3* reader = Open(path, nullptr);
  Exec(a, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
  Exec(a, "PRAGMA cache_size=8");  // tiny: a transaction of more than 8 pages spills
  Exec(b, "PRAGMA cache_size=8");
  std::map<int, std::string> committed;
  std::mt19937 rng(7);
  int spilled_rollbacks = 0;
  for (int round = 0; round < 300; ++round) {
    sqlite3* writer = (rng() % 2) ? a : b;
    std::map<int, std::string> next = committed;
    Exec(writer, "BEGIN IMMEDIATE");
    wal_writes = 0;
    int rows = (rng() % 4 == 0) ? 40 : 1 + rng() % 4;
    for (int i = 0; i < rows; ++i) {
      int key = rng() % 60;
      if (rng() % 8 == 0) {
        Exec(writer, "DELETE FROM t WHERE k=" + std::to_string(key));
        next.erase(key);
        continue;
      }
      size_t size = (rng() % 5 == 0) ? 20000 + rng() % 40000 : 10 + rng() % 3000;
      std::string value = Bytes(&rng, size);
      Put(writer, key, value);
      next[key] = value;
    }
    if (rng() % 4 == 0) {
      if (wal_writes > 0) ++spilled_rollbacks;
      Exec(writer, "ROLLBACK");
    } else {
      Exec(writer, "COMMIT");
      committed = next;
    }
    ASSERT_EQ(Difference(ReadAll(reader), committed), "") << "round " << round;
    if (round % 25 == 0) {
      ASSERT_EQ(Difference(ReadAsIfKilled(dir, "t.db"), committed), "") << "round " << round;
    }
    if (round % 40 == 39) Exec(reader, "PRAGMA wal_checkpoint(RESTART)");
  }
  EXPECT_GT(spilled_rollbacks, 0) << "no transaction spilled before rolling back; the test "
                                     "does not cover the write-lock flush";
  EXPECT_EQ(IntegrityCheck(reader), "ok");
  EXPECT_EQ(Difference(ReadAsIfKilled(dir, "t.db"), committed), "");
  sqlite3_close(a);
  sqlite3_close(b);
  sqlite3_close(reader);
}

TEST_F(WalBatchingVfsTest, ATransactionRewritingItsSpilledFramesKeepsValidChecksums) {
  TempDir dir;
  std::string path = dir.File("t.db");
  sqlite3* db = Open(path, "batching-over-counting");
  Exec(db, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB); PRAGMA cache_size=4");
  std::mt19937 rng(3);
  std::map<int, std::string> committed;
  Exec(db, "BEGIN IMMEDIATE");
  for (int pass = 0; pass < 3; ++pass) {
    for (int k = 0; k < 50; ++k) {
      committed[k] = Bytes(&rng, 1500);
      Put(db, k, committed[k]);
    }
  }
  Exec(db, "COMMIT");
  // Recovery walks the WAL's checksum chain: a rewritten header left unwritten would cut it.
  EXPECT_EQ(Difference(ReadAsIfKilled(dir, "t.db"), committed), "");
  sqlite3_close(db);
}

TEST_F(WalBatchingVfsTest, AFailedWriteFailsTheCommitAndNothingOfItIsVisible) {
  TempDir dir;
  sqlite3 *db, *reader;
  OpenWriterAndReader(dir, &db, &reader);
  Put(db, 1, "one");
  Exec(db, "BEGIN IMMEDIATE");
  Put(db, 2, std::string(50000, 'x'));
  fail_wal_writes = true;
  int rc = ExecRc(db, "COMMIT");
  fail_wal_writes = false;
  EXPECT_EQ(rc & 0xff, SQLITE_IOERR) << sqlite3_errstr(rc);
  if (!sqlite3_get_autocommit(db)) Exec(db, "ROLLBACK");
  std::map<int, std::string> want = {{1, "one"}};
  EXPECT_EQ(ReadAll(reader), want);
  // The connection goes on working once the disk does.
  Put(db, 3, "three");
  want[3] = "three";
  EXPECT_EQ(ReadAll(reader), want);
  EXPECT_EQ(ReadAsIfKilled(dir, "t.db"), want);
  sqlite3_close(db);
  sqlite3_close(reader);
}

TEST_F(WalBatchingVfsTest, ACommitLargerThanOneWriteFailsIfItsLastWriteFails) {
  // Transactions of 25 to 40 pages: the frames take two writes, and for one of these sizes the
  // buffer fills between the commit frame's header and its page. The second write (the one with
  // the commit frame) fails: COMMIT must fail too, or a crash copy must hold the row.
  TempDir dir;
  sqlite3 *db, *reader;
  OpenWriterAndReader(dir, &db, &reader);
  std::mt19937 rng(5);
  std::map<int, std::string> committed;
  int split = 0;
  for (int key = 0; key < 64; ++key) {
    const size_t size = 100000 + static_cast<size_t>(key) * 1000;
    std::string value = Bytes(&rng, size);
    Exec(db, "BEGIN IMMEDIATE");
    Put(db, key, value);
    frame_writes = 0;
    fail_frame_write_number = 2;
    int rc = ExecRc(db, "COMMIT");
    fail_frame_write_number = -1;
    if (frame_writes >= 2) ++split;
    if (rc == SQLITE_OK) {
      committed[key] = value;
    } else if (!sqlite3_get_autocommit(db)) {
      Exec(db, "ROLLBACK");
    }
    ASSERT_EQ(Difference(ReadAll(reader), committed), "") << "value of " << size << " bytes";
    ASSERT_EQ(Difference(ReadAsIfKilled(dir, "t.db"), committed), "")
        << "value of " << size << " bytes";
    Exec(reader, "PRAGMA wal_checkpoint(RESTART)");
  }
  EXPECT_GT(split, 10);
  EXPECT_GT(committed.size(), 0u);  // transactions of one write do commit
  sqlite3_close(db);
  sqlite3_close(reader);
}

TEST_F(WalBatchingVfsTest, RegisteringOverAMissingVfsSaysSo) {
  Status st = RegisterWalBatchingVfs("batching-over-nothing", "no-such-vfs");
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(st.message().find("no-such-vfs"), std::string::npos);
  EXPECT_NE(WalBatchingVfsName(), nullptr);
  EXPECT_NE(sqlite3_vfs_find(WalBatchingVfsName()), nullptr);
}

}  // namespace
}  // namespace services
