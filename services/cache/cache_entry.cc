#include "services/cache/cache_entry.h"

#include <openssl/evp.h>

#include <cmath>

namespace services::cache {

StoredKey StoredKey::From(std::string_view user_key) {
  StoredKey k;
  if (user_key.size() <= kMaxDirectKeyBytes) {
    k.key.assign(user_key);
    return k;
  }
  // The leading zero byte keeps hashed keys apart from most short keys; the long_key column
  // is compared on every lookup, so even a short key equal to a hash form, or two long keys
  // with the same digest, can never return each other's value.
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(user_key.data(), user_key.size(), digest, &len, EVP_sha256(), nullptr);
  k.key.assign(1, '\0');
  k.key.append(reinterpret_cast<const char*>(digest), len);
  k.long_key.emplace(user_key);
  return k;
}

int64_t CacheValue::ChargedSize(const StoredKey& key) const {
  // Key, value and a fixed allowance for the row's other columns and b-tree cell overhead.
  constexpr int64_t kRowOverhead = 40;
  int64_t n = static_cast<int64_t>(key.key.size()) + kRowOverhead;
  if (key.long_key) n += static_cast<int64_t>(key.long_key->size());
  n += kind == Kind::kInt ? 8 : static_cast<int64_t>(bytes.size());
  return n;
}

Expiry Expiry::After(double timeout_seconds, int64_t now_ms) {
  if (!(timeout_seconds > 0)) return {now_ms};  // 0, negative or NaN: already expired
  // Far-future timeouts saturate rather than overflow.
  const double ms = std::ceil(timeout_seconds * 1000.0);
  if (ms > 9.0e15) return {int64_t{9'000'000'000'000'000}};
  return {now_ms + static_cast<int64_t>(ms)};
}

}  // namespace services::cache
