#include "services/cache/cache_reader.h"

#include <sqlite3.h>

namespace services::cache {
namespace {

// Fills `value` from column `col` of `stmt`, by its SQLite storage class.
CacheValue ReadValue(const Statement& stmt, int col) {
  switch (stmt.ColumnType(col)) {
    case SQLITE_INTEGER: return CacheValue::Int(stmt.ColumnInt(col));
    case SQLITE_TEXT: return CacheValue::Text(stmt.ColumnText(col));
    default: return CacheValue::Bytes(stmt.ColumnBlob(col));
  }
}

}  // namespace

std::optional<std::string> PrefixUpperBound(std::string_view prefix) {
  std::string upper(prefix);
  while (!upper.empty()) {
    unsigned char last = static_cast<unsigned char>(upper.back());
    if (last != 0xff) {
      upper.back() = static_cast<char>(last + 1);
      return upper;
    }
    upper.pop_back();
  }
  return std::nullopt;
}

Result<std::unique_ptr<CacheReader>> CacheReader::Open(const std::string& path,
                                                       const SqliteTuning& tuning) {
  Result<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path, SqliteDb::Mode::kReadWrite);
  if (!db.ok()) return db.status().WithContext("cache reader");
  GW_RETURN_IF_ERROR(ApplyTuning(db->get(), tuning));
  // This connection only reads; query_only turns a stray write into an error.
  GW_RETURN_IF_ERROR((*db)->Exec("PRAGMA query_only = 1"));
  std::unique_ptr<CacheReader> r(new CacheReader());
  r->db_ = std::move(*db);
  Result<Statement> lookup = r->db_->Prepare(
      "SELECT long_key, value, expires_at FROM cache_entries WHERE key = ?1");
  if (!lookup.ok()) return lookup.status();
  r->lookup_ = std::move(*lookup);
  Result<Statement> keys = r->db_->Prepare(
      "SELECT key, long_key, expires_at FROM cache_entries WHERE key > ?1 AND "
      "((key >= ?2 AND (?3 IS NULL OR key < ?3)) OR (key < x'01' AND long_key IS NOT NULL)) "
      "ORDER BY key LIMIT ?4");
  if (!keys.ok()) return keys.status();
  r->keys_ = std::move(*keys);
  return r;
}

Result<bool> CacheReader::Find(const StoredKey& key, int64_t now_ms) {
  lookup_.Reset();
  GW_RETURN_IF_ERROR(lookup_.BindBlob(1, key.key));
  Result<bool> row = lookup_.Step();
  if (!row.ok() || !*row) return row;
  const bool long_matches = key.long_key ? !lookup_.ColumnIsNull(0) &&
                                               lookup_.ColumnBlob(0) == *key.long_key
                                         : lookup_.ColumnIsNull(0);
  if (!long_matches) return false;
  return lookup_.ColumnIsNull(2) || lookup_.ColumnInt(2) > now_ms;
}

Result<std::optional<CacheValue>> CacheReader::Get(const StoredKey& key, int64_t now_ms) {
  Result<bool> live = Find(key, now_ms);
  if (!live.ok()) return live.status();
  std::optional<CacheValue> out;
  if (*live) out = ReadValue(lookup_, 1);
  lookup_.Reset();
  return out;
}

Result<bool> CacheReader::Has(const StoredKey& key, int64_t now_ms) {
  Result<bool> live = Find(key, now_ms);
  lookup_.Reset();
  return live;
}

Result<TtlResult> CacheReader::Ttl(const StoredKey& key, int64_t now_ms) {
  Result<bool> live = Find(key, now_ms);
  if (!live.ok()) return live.status();
  TtlResult t;
  t.exists = *live;
  if (t.exists && !lookup_.ColumnIsNull(2)) t.expires_at_ms = lookup_.ColumnInt(2);
  lookup_.Reset();
  return t;
}

Result<KeysPage> CacheReader::Keys(std::string_view prefix, const std::optional<std::string>& after,
                                   size_t limit, int64_t now_ms) {
  // Short keys sort by their own bytes, so a prefix is one key range; long keys are stored under
  // x'00' || sha256 and are found in the range below x'01' and filtered by their whole key. The
  // cursor is the last stored key scanned, so paging works across both. A page scans a bounded
  // number of rows, so it may hold fewer than `limit` keys while `next` is set.
  KeysPage page;
  const std::optional<std::string> upper = PrefixUpperBound(prefix);
  const size_t scan_limit = limit * 4 + 64;
  keys_.Reset();
  GW_RETURN_IF_ERROR(keys_.BindBlob(1, after.value_or(std::string())));
  GW_RETURN_IF_ERROR(keys_.BindBlob(2, prefix));
  GW_RETURN_IF_ERROR(upper ? keys_.BindBlob(3, *upper) : keys_.BindNull(3));
  GW_RETURN_IF_ERROR(keys_.BindInt(4, static_cast<int64_t>(scan_limit)));
  size_t scanned = 0;
  std::string cursor;
  for (;;) {
    Result<bool> row = keys_.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    ++scanned;
    cursor = keys_.ColumnBlob(0);
    std::string user_key = keys_.ColumnIsNull(1) ? cursor : keys_.ColumnBlob(1);
    const bool live = keys_.ColumnIsNull(2) || keys_.ColumnInt(2) > now_ms;
    if (live && user_key.compare(0, prefix.size(), prefix) == 0) {
      page.keys.push_back(std::move(user_key));
      if (page.keys.size() == limit) break;
    }
  }
  keys_.Reset();
  if (page.keys.size() == limit || scanned == scan_limit) page.next = cursor;
  return page;
}

}  // namespace services::cache
