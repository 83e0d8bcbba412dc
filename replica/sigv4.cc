#include "replica/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <ctime>
#include <map>

namespace replica {
namespace {

constexpr char kHex[] = "0123456789abcdef";
constexpr char kHexUpper[] = "0123456789ABCDEF";

std::string ToHex(const unsigned char* bytes, size_t n) {
  std::string out(n * 2, '\0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 0xf];
  }
  return out;
}

std::string HmacSha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

// ASCII only, whatever the process locale says.
bool IsUnreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

// Trimall from the SigV4 documentation: no leading or trailing blanks, inner runs of blanks
// collapsed to one space. botocore splits on all whitespace, so tabs and newlines count too.
std::string TrimAll(std::string_view value) {
  std::string out;
  bool pending_space = false;
  for (unsigned char c : value) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(static_cast<char>(c));
  }
  return out;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string CanonicalQuery(const std::vector<std::pair<std::string, std::string>>& query) {
  std::vector<std::pair<std::string, std::string>> encoded;
  encoded.reserve(query.size());
  for (const auto& [name, value] : query) {
    encoded.emplace_back(UriEncode(name, false), UriEncode(value, false));
  }
  // Sorting the encoded forms (not the raw ones) is what the documentation asks for; the two
  // orders differ for names with bytes that encode to "%".
  std::sort(encoded.begin(), encoded.end());
  std::string out;
  for (const auto& [name, value] : encoded) {
    if (!out.empty()) out.push_back('&');
    out += name;
    out.push_back('=');
    out += value;
  }
  return out;
}

}  // namespace

std::string UriEncode(std::string_view text, bool keep_slash) {
  std::string out;
  out.reserve(text.size() * 3);
  for (unsigned char c : text) {
    if (IsUnreserved(c) || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHexUpper[c >> 4]);
      out.push_back(kHexUpper[c & 0xf]);
    }
  }
  return out;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr);
  return ToHex(out, len);
}

std::string AmzDate(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

SigV4Headers SignV4(const SigV4Request& request, const SigV4Credentials& credentials,
                    std::string_view region, std::string_view service, std::string_view amz_date) {
  SigV4Headers out;
  out.amz_date = std::string(amz_date);
  out.content_sha256 = request.payload_sha256;
  out.security_token = credentials.session_token;

  // A multimap keeps repeated headers, in the order given, for the "," join.
  std::multimap<std::string, std::string> headers;
  headers.emplace("host", TrimAll(request.host));
  headers.emplace("x-amz-date", out.amz_date);
  headers.emplace("x-amz-content-sha256", out.content_sha256);
  if (!credentials.session_token.empty()) {
    headers.emplace("x-amz-security-token", TrimAll(credentials.session_token));
  }
  for (const auto& [name, value] : request.headers) headers.emplace(Lower(name), TrimAll(value));

  std::string canonical_headers;
  std::string signed_headers;
  for (auto it = headers.begin(); it != headers.end();) {
    auto [first, last] = headers.equal_range(it->first);
    std::string joined;
    for (auto v = first; v != last; ++v) {
      if (v != first) joined.push_back(',');
      joined += v->second;
    }
    canonical_headers += it->first + ":" + joined + "\n";
    if (!signed_headers.empty()) signed_headers.push_back(';');
    signed_headers += it->first;
    it = last;
  }

  std::string path = request.path.empty() ? "/" : request.path;
  out.canonical_request = request.method + "\n" + UriEncode(path, true) + "\n" +
                          CanonicalQuery(request.query) + "\n" + canonical_headers + "\n" +
                          signed_headers + "\n" + request.payload_sha256;

  std::string date(amz_date.substr(0, 8));
  std::string scope =
      date + "/" + std::string(region) + "/" + std::string(service) + "/aws4_request";
  out.string_to_sign =
      "AWS4-HMAC-SHA256\n" + out.amz_date + "\n" + scope + "\n" + Sha256Hex(out.canonical_request);

  std::string key = HmacSha256("AWS4" + credentials.secret_access_key, date);
  key = HmacSha256(key, region);
  key = HmacSha256(key, service);
  key = HmacSha256(key, "aws4_request");
  std::string signature = HmacSha256(key, out.string_to_sign);

  out.authorization =
      "AWS4-HMAC-SHA256 Credential=" + credentials.access_key_id + "/" + scope +
      ", SignedHeaders=" + signed_headers + ", Signature=" +
      ToHex(reinterpret_cast<const unsigned char*>(signature.data()), signature.size());
  return out;
}

}  // namespace replica
