// Parsing of the names an S3 replica is configured with: the "s3://bucket/prefix" URL, the
// endpoint, and the keys the replication code asks for. Pure functions, safe from any thread.
#pragma once

#include <string>
#include <string_view>

#include "services/status.h"

namespace replica {

struct S3Url {
  std::string bucket;
  std::string prefix;  // without leading or trailing "/"; may be empty
};

// "s3://bucket/some/prefix/" -> {"bucket", "some/prefix"}. kInvalidArgument, naming the problem,
// for another scheme, an empty or malformed bucket name, or an empty/"."/".." prefix segment.
services::Result<S3Url> ParseS3Url(std::string_view url);

struct S3Endpoint {
  std::string scheme;  // "http" or "https"
  std::string host;    // "host" or "host:port", as the Host header carries it
};

// "http://127.0.0.1:9000" or "https://s3.example.com/" (no path, query or user info).
services::Result<S3Endpoint> ParseEndpoint(std::string_view endpoint);

// OK when `key` (relative to `root`, which ends in "/" or is empty) may be stored: non-empty,
// at most 1024 bytes with the root, no control characters, and no empty, "." or ".." segments.
services::Status ValidateKey(std::string_view key, std::string_view root);

}  // namespace replica
