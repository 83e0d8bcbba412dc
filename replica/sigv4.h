// AWS Signature Version 4 for S3 requests (the "Authorization" header form), computed with
// OpenSSL's SHA-256 and HMAC-SHA256.
//
// The signer is pure: it reads the request description and the credentials and returns the
// headers to add; it does no I/O and keeps no state, so it is safe from any thread. Time is an
// argument (an ISO 8601 basic timestamp, "20130524T000000Z"), which keeps it testable against
// AWS's published examples and botocore.
//
// What it follows (facts from AWS's SigV4 documentation, matched against botocore's S3 signer):
//   - the canonical URI is the request path URI-encoded once (S3 does not double-encode and does
//     not normalise "." or ".." segments); "/" separators stay as they are;
//   - the canonical query string has every name and value URI-encoded (unreserved characters
//     A-Z a-z 0-9 - _ . ~ kept, everything else %XX in upper case, a space is %20), sorted by
//     encoded name and then encoded value; a parameter without a value is "name=";
//   - header names are lower-cased, values trimmed with inner runs of spaces collapsed to one,
//     repeated headers joined with ","; headers are sorted by name;
//   - x-amz-date and x-amz-content-sha256 are always signed, and x-amz-security-token when a
//     session token is given.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace replica {

struct SigV4Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // empty: none (long-lived keys)
};

// One request as the signer sees it. Names and values are raw (not yet URI-encoded).
struct SigV4Request {
  std::string method;  // "GET", "PUT", ...
  std::string host;    // the Host header: "bucket.s3.eu-west-1.amazonaws.com" or "127.0.0.1:9000"
  std::string path;    // raw path, e.g. "/bucket/dir/odd key+=.txt"; encoded by the signer
  std::vector<std::pair<std::string, std::string>> query;  // raw names and values
  // Other headers to sign and send (e.g. if-none-match, content-type). Not host, x-amz-date,
  // x-amz-content-sha256 or x-amz-security-token: the signer adds those.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload_sha256;  // lower-case hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"
};

// The headers to send: every header of the request plus these.
struct SigV4Headers {
  std::string authorization;
  std::string amz_date;           // x-amz-date
  std::string content_sha256;     // x-amz-content-sha256
  std::string security_token;     // x-amz-security-token; empty when there is none
  std::string canonical_request;  // for tests and debugging; holds no secret
  std::string string_to_sign;     // likewise
};

// Signs `request` for `region` and `service` ("s3") at `amz_date` ("YYYYMMDDTHHMMSSZ").
SigV4Headers SignV4(const SigV4Request& request, const SigV4Credentials& credentials,
                    std::string_view region, std::string_view service, std::string_view amz_date);

// URI-encodes `text` as SigV4 wants it: unreserved characters kept, every other byte %XX in upper
// case; "/" is kept when `keep_slash` (paths) and encoded otherwise (query names and values).
std::string UriEncode(std::string_view text, bool keep_slash);

// Lower-case hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);

// "20130524T000000Z" for a Unix time in seconds (UTC).
std::string AmzDate(int64_t unix_seconds);

// The SHA-256 of an empty body, which GET, HEAD and DELETE requests carry.
inline constexpr std::string_view kEmptySha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

}  // namespace replica
