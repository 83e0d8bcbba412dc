// The values, keys and timeouts of cache entries, shared by CacheReader and CacheWriter.
//
// See gateway/PROTOCOL.md "Reading the cache file directly" for the table these map onto.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace services::cache {

// Keys longer than this are stored by hash (x'00' || sha256(key)) with the whole key beside it.
inline constexpr size_t kMaxDirectKeyBytes = 250;
inline constexpr size_t kMaxKeyBytes = 64 * 1024;

// A key as stored: `key` is the indexed column; `long_key` holds the whole key when it is long.
struct StoredKey {
  std::string key;
  std::optional<std::string> long_key;

  static StoredKey From(std::string_view user_key);
  // The user's key again.
  const std::string& user_key() const { return long_key ? *long_key : key; }
};

struct CacheValue {
  enum class Kind { kBytes, kText, kInt };
  Kind kind = Kind::kBytes;
  std::string bytes;  // kBytes and kText
  int64_t integer = 0;

  static CacheValue Bytes(std::string b) { return {Kind::kBytes, std::move(b), 0}; }
  static CacheValue Text(std::string t) { return {Kind::kText, std::move(t), 0}; }
  static CacheValue Int(int64_t i) { return {Kind::kInt, std::string(), i}; }
  // Bytes charged to the size budget for this value under `key`.
  int64_t ChargedSize(const StoredKey& key) const;
};

// When an entry expires, in Unix milliseconds; nullopt = never. Django's rules: no timeout means
// forever, a timeout of 0 or less means already expired.
struct Expiry {
  std::optional<int64_t> at_ms;

  static Expiry Never() { return {}; }
  // `timeout_seconds` may be fractional; `now_ms` is the current Unix time in milliseconds.
  static Expiry After(double timeout_seconds, int64_t now_ms);
  bool expired(int64_t now_ms) const { return at_ms && *at_ms <= now_ms; }
};

}  // namespace services::cache
