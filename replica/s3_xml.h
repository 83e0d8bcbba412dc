// The few S3 XML documents the S3 client reads and writes: ListObjectsV2 results, error bodies,
// InitiateMultipartUpload results, the CompleteMultipartUpload request, and DeleteObjects requests
// and results.
//
// The reader is a small, strict parser for the subset S3 servers send: elements, attributes
// (skipped), text with the five predefined entities and numeric character references, an XML
// declaration, comments and CDATA. No DTDs, no namespaces beyond ignoring xmlns attributes. It
// bounds nesting depth, and never throws. Pure functions: safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "services/status.h"

namespace replica {

struct S3ListEntry {
  std::string key;  // full key in the bucket, decoded
  int64_t size = 0;
  int64_t mtime_ms = 0;
  std::string etag;  // as the store wrote it, quotes included
};

struct S3ListPage {
  std::vector<S3ListEntry> entries;
  bool truncated = false;
  std::string next_continuation_token;
};

// Parses a ListBucketResult. Keys are decoded (percent escapes, "+" as space) when the result
// says <EncodingType>url</EncodingType>, i.e. when encoding-type=url was asked for and honoured.
services::Result<S3ListPage> ParseListObjectsV2(std::string_view xml);

struct S3ErrorBody {
  std::string code;     // "NoSuchKey", "SignatureDoesNotMatch", ...; empty when none was sent
  std::string message;  // the store's text
  std::string region;   // <Region>, sent by AWS with wrong-region errors
};

// Reads an <Error> document; anything else (an empty body, HTML from a proxy) gives empty fields.
S3ErrorBody ParseErrorBody(std::string_view xml);

// True when the document's root element is <Error> (CompleteMultipartUpload can answer 200 OK
// with an error inside).
bool IsErrorDocument(std::string_view xml);

// The UploadId of an InitiateMultipartUploadResult.
services::Result<std::string> ParseUploadId(std::string_view xml);

// The body of a CompleteMultipartUpload request; `parts` are (part number, ETag) in order.
std::string CompleteMultipartXml(const std::vector<std::pair<int, std::string>>& parts);

// The body of a DeleteObjects request for these full keys, in quiet mode: the store answers only
// the keys it failed to delete.
std::string DeleteObjectsXml(const std::vector<std::string>& full_keys);

// One key a DeleteObjects request did not delete.
struct S3DeleteError {
  std::string key;  // full key in the bucket
  std::string code;
  std::string message;
};

// The <Error> entries of a DeleteResult (quiet mode lists nothing else). kCorruption when the
// document is not a DeleteResult.
services::Result<std::vector<S3DeleteError>> ParseDeleteResult(std::string_view xml);

// "2026-11-21T12:24:00.000Z" (fractional seconds optional) -> Unix ms; -1 when malformed.
int64_t ParseIso8601Ms(std::string_view text);

}  // namespace replica
