// Big-endian integer reading and writing, as the WAL and the replica format store them.
#pragma once

#include <cstdint>
#include <string>

namespace replica {

inline uint32_t GetBe32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
inline uint64_t GetBe64(const unsigned char* p) {
  return (uint64_t{GetBe32(p)} << 32) | GetBe32(p + 4);
}
inline void PutBe32(std::string* out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void PutBe64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace replica
