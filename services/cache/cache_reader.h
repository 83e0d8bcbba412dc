// CacheReader: answers cache reads from the committed state of the cache database.
//
// Each call is one autocommit read, so it sees every transaction committed before it started and
// never blocks the writer (WAL). Reads never write; with eviction = "lru" they return the keys they
// touched so the caller can hand them to the writer in batches (CacheWriter::RecordAccess).
// Threads: one thread at a time (the event loop); owns its own connection.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "services/cache/cache_entry.h"
#include "services/sqlite_db.h"
#include "services/sqlite_tuning.h"
#include "services/status.h"

namespace services::cache {

struct TtlResult {
  bool exists = false;
  std::optional<int64_t> expires_at_ms;  // nullopt = never expires
};

struct KeysPage {
  std::vector<std::string> keys;    // user keys, in stored-key byte order
  std::optional<std::string> next;  // cursor for the next page (a stored key); nullopt = done
};

class CacheReader {
 public:
  static Result<std::unique_ptr<CacheReader>> Open(const std::string& path,
                                                   const SqliteTuning& tuning);

  // nullopt when there is no live entry at `now_ms`.
  Result<std::optional<CacheValue>> Get(const StoredKey& key, int64_t now_ms);
  Result<bool> Has(const StoredKey& key, int64_t now_ms);
  Result<TtlResult> Ttl(const StoredKey& key, int64_t now_ms);
  // Live keys starting with `prefix` whose stored key is after `after`, at most `limit` of them.
  Result<KeysPage> Keys(std::string_view prefix, const std::optional<std::string>& after,
                        size_t limit, int64_t now_ms);

 private:
  CacheReader() = default;
  // Positions `lookup_` on `key`'s row; true when it exists and is live.
  Result<bool> Find(const StoredKey& key, int64_t now_ms);

  std::unique_ptr<SqliteDb> db_;
  Statement lookup_;
  Statement keys_;
};

// The smallest byte string greater than every string starting with `prefix`, or nullopt when
// there is none (an empty prefix or all 0xff bytes).
std::optional<std::string> PrefixUpperBound(std::string_view prefix);

}  // namespace services::cache
