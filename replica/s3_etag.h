// S3 ETags: how a store computes them for what we upload, and how two of them compare.
//
// For a plain PUT without server-side KMS encryption, the ETag is the quoted hex MD5 of the body;
// for a multipart upload it is the MD5 of the concatenated binary MD5s of the parts, then "-" and
// the part count. The client uses these only to recognise its own earlier write after a retry
// whose first answer was lost; a store that computes ETags otherwise just never matches, which
// makes that retry report the conflict instead of success (the safe side).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace replica {

// Raw 16-byte MD5 of `data`.
std::string Md5Raw(std::string_view data);
// "\"<hex md5>\"".
std::string QuotedMd5(std::string_view data);
// The ETag of a multipart upload whose parts had these raw MD5s.
std::string MultipartEtag(const std::vector<std::string>& part_md5s);
// Lower-case hex of `n` bytes.
std::string HexBytes(const unsigned char* bytes, size_t n);
// `etag` in its quoted form ("\"abc\""), whichever form the store used: some servers quote ETags in
// headers but not in listings. Every ETag the client hands out is quoted, so callers may compare
// them with ==.
std::string QuoteEtag(std::string_view etag);
// Equal ignoring surrounding quotes and a weak "W/" marker.
bool EtagsEqual(std::string_view a, std::string_view b);

}  // namespace replica
