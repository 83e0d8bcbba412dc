// Schema versions for the databases whose schema the gateway owns (cache, queue).
//
// Each database records its role ("cache", "queue") in a gateway_meta table and its schema version
// in PRAGMA user_version. Migrations only go forward: opening a database written by a newer
// gateway, or a file that belongs to another role, is refused rather than guessed at.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "services/sqlite_db.h"
#include "services/status.h"

namespace services {

struct Migration {
  int64_t version;  // the user_version after this migration; 1, 2, 3, ... without gaps
  const char* sql;  // one or more statements
};

// Brings `db` to the newest version in `migrations` inside one BEGIN IMMEDIATE transaction, so a
// crash leaves either the old or the new schema. On a new (empty) database it also records `role`.
// Errors: kFailedPrecondition when the file belongs to another role, is a non-gateway database
// with tables of its own, or has a user_version newer than the last migration.
Status Migrate(SqliteDb* db, std::string_view role, std::span<const Migration> migrations);

// The migrations of the cache and queue databases.
std::span<const Migration> CacheMigrations();
std::span<const Migration> QueueMigrations();

}  // namespace services
