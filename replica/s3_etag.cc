#include "replica/s3_etag.h"

#include <openssl/evp.h>

namespace replica {
namespace {

std::string_view Bare(std::string_view etag) {
  if (etag.starts_with("W/")) etag.remove_prefix(2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
    etag = etag.substr(1, etag.size() - 2);
  }
  return etag;
}

}  // namespace

std::string Md5Raw(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_md5(), nullptr);
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string HexBytes(const unsigned char* bytes, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(n * 2, '\0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 0xf];
  }
  return out;
}

std::string QuotedMd5(std::string_view data) {
  std::string md5 = Md5Raw(data);
  return "\"" + HexBytes(reinterpret_cast<const unsigned char*>(md5.data()), md5.size()) + "\"";
}

std::string MultipartEtag(const std::vector<std::string>& part_md5s) {
  std::string joined;
  for (const auto& m : part_md5s) joined += m;
  std::string md5 = Md5Raw(joined);
  return "\"" + HexBytes(reinterpret_cast<const unsigned char*>(md5.data()), md5.size()) + "-" +
         std::to_string(part_md5s.size()) + "\"";
}

std::string QuoteEtag(std::string_view etag) {
  if (etag.empty() || etag.starts_with("W/") ||
      (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"')) {
    return std::string(etag);
  }
  return "\"" + std::string(etag) + "\"";
}

bool EtagsEqual(std::string_view a, std::string_view b) {
  return !Bare(a).empty() && Bare(a) == Bare(b);
}

}  // namespace replica
