#include "replica/s3_url.h"

namespace replica {
namespace {

using services::Status;

// S3 caps keys at 1024 bytes of UTF-8.
constexpr size_t kMaxKeyBytes = 1024;

// Segments that stores keeping objects as files would alias ("a//b" and "a/b") or refuse.
bool BadSegments(std::string_view path) {
  size_t start = 0;
  for (;;) {
    size_t slash = path.find('/', start);
    std::string_view seg =
        path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (seg.empty() || seg == "." || seg == "..") return true;
    if (slash == std::string_view::npos) return false;
    start = slash + 1;
  }
}

bool ValidBucketChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

}  // namespace

services::Result<S3Url> ParseS3Url(std::string_view url) {
  constexpr std::string_view kScheme = "s3://";
  if (!url.starts_with(kScheme)) {
    return Status::InvalidArgument("replica URL \"" + std::string(url) +
                                   "\" is not an s3:// URL (expected s3://bucket/prefix)");
  }
  std::string_view rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  S3Url out;
  out.bucket = std::string(rest.substr(0, slash));
  if (out.bucket.size() < 3 || out.bucket.size() > 63) {
    return Status::InvalidArgument("replica URL \"" + std::string(url) +
                                   "\": a bucket name has 3 to 63 characters");
  }
  for (char c : out.bucket) {
    if (!ValidBucketChar(c)) {
      return Status::InvalidArgument("replica URL \"" + std::string(url) +
                                     "\": the bucket name may hold only letters, digits, '-', "
                                     "'.' and '_'");
    }
  }
  std::string_view prefix = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
  if (!prefix.empty() && BadSegments(prefix)) {
    return Status::InvalidArgument("replica URL \"" + std::string(url) +
                                   "\": the prefix has an empty, '.' or '..' segment");
  }
  out.prefix = std::string(prefix);
  return out;
}

services::Result<S3Endpoint> ParseEndpoint(std::string_view endpoint) {
  S3Endpoint out;
  std::string_view rest;
  if (endpoint.starts_with("http://")) {
    out.scheme = "http";
    rest = endpoint.substr(7);
  } else if (endpoint.starts_with("https://")) {
    out.scheme = "https";
    rest = endpoint.substr(8);
  } else {
    return Status::InvalidArgument("S3 endpoint \"" + std::string(endpoint) +
                                   "\" must start with http:// or https://");
  }
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.empty() || rest.find_first_of("/?#@ ") != std::string_view::npos) {
    return Status::InvalidArgument("S3 endpoint \"" + std::string(endpoint) +
                                   "\" must be scheme://host[:port] with no path (the bucket "
                                   "and prefix go in the s3:// URL)");
  }
  out.host = std::string(rest);
  return out;
}

Status ValidateKey(std::string_view key, std::string_view root) {
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument("bad replica key \"" + std::string(key) +
                                   "\": " + std::string(why));
  };
  if (key.empty()) return bad("empty");
  if (key.size() + root.size() > kMaxKeyBytes) return bad("longer than 1024 bytes with the prefix");
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f) return bad("control characters are not allowed");
  }
  if (BadSegments(key)) return bad("empty, '.' or '..' path segment");
  return Status::Ok();
}

}  // namespace replica
