#include "services/databases.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <filesystem>
#include <system_error>

#include "services/schema.h"

namespace services {
namespace {

int64_t FileSize(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return 0;
  return st.st_size;
}

Status EnsureParentDir(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return Status::Ok();
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) {
    return Status::IoError("cannot create folder " + parent.string() + " for " + path + ": " +
                           ec.message() + "; create it or fix its permissions");
  }
  return Status::Ok();
}

}  // namespace

std::string_view RoleName(DatabaseRole role) {
  switch (role) {
    case DatabaseRole::kMain:
      return "main";
    case DatabaseRole::kCache:
      return "cache";
    case DatabaseRole::kQueue:
      return "queue";
  }
  return "unknown";
}

Result<std::unique_ptr<Databases>> Databases::Open(const DatabasePaths& paths,
                                                   const SqliteTuning& tuning) {
  const std::array<const std::string*, 3> path_of = {&paths.main, &paths.cache, &paths.queue};
  for (size_t i = 0; i < path_of.size(); ++i) {
    for (size_t j = i + 1; j < path_of.size(); ++j) {
      if (*path_of[i] == *path_of[j]) {
        return Status::InvalidArgument("[databases." + std::string(RoleName(kAllRoles[i])) +
                                       "] and [databases." + std::string(RoleName(kAllRoles[j])) +
                                       "] both use " + *path_of[i] + "; give each its own file");
      }
    }
  }

  std::unique_ptr<Databases> set(new Databases());
  for (DatabaseRole role : kAllRoles) {
    const std::string& path = *path_of[Index(role)];
    const std::string name(RoleName(role));
    GW_RETURN_IF_ERROR(EnsureParentDir(path));
    Result<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path, SqliteDb::Mode::kReadWriteCreate);
    if (!db.ok()) return db.status().WithContext(name + " database");

    SqliteTuning t = tuning;
    GW_RETURN_IF_ERROR(ApplyTuning(db->get(), t).WithContext(name + " database"));
    if (role == DatabaseRole::kCache) {
      GW_RETURN_IF_ERROR(Migrate(db->get(), name, CacheMigrations()));
    } else if (role == DatabaseRole::kQueue) {
      GW_RETURN_IF_ERROR(Migrate(db->get(), name, QueueMigrations()));
    }

    DatabaseInfo& info = set->info_[Index(role)];
    info.path = path;
    Result<AppliedPragmas> pragmas = ReadPragmas(db->get());
    if (!pragmas.ok()) return pragmas.status().WithContext(name + " database");
    info.pragmas = *pragmas;
    Result<int64_t> version = (*db)->QueryInt("PRAGMA user_version");
    if (!version.ok()) return version.status().WithContext(name + " database");
    info.user_version = *version;
    set->dbs_[Index(role)] = std::move(*db);
  }
  return set;
}

Databases::~Databases() = default;

DatabaseInfo Databases::CurrentInfo(DatabaseRole role) const {
  DatabaseInfo info = info_[Index(role)];
  info.size_bytes = FileSize(info.path);
  info.wal_bytes = FileSize(info.path + "-wal");
  return info;
}

Result<CheckpointResult> Databases::Checkpoint(DatabaseRole role, bool truncate) {
  SqliteDb* db = dbs_[Index(role)].get();
  int log_frames = 0;
  int done_frames = 0;
  int rc = sqlite3_wal_checkpoint_v2(
      db->raw(), nullptr, truncate ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE,
      &log_frames, &done_frames);
  CheckpointResult r;
  if (rc == SQLITE_BUSY) {
    r.busy = true;
    return r;
  }
  if (rc != SQLITE_OK) return SqliteStatus(rc, db->raw(), "checkpoint " + std::string(RoleName(role)));
  r.wal_frames = log_frames;
  r.checkpointed_frames = done_frames;
  return r;
}

}  // namespace services
