// Fuzz target: the replica object decoders (DecodeHeader, DecodeSegment, and ReadSnapshotFile on a
// scratch file), i.e. what restore does with objects read back from the store.
//
// Input: [mode][object bytes...]. With mode bit 0 clear the bytes are the object as stored. Random
// bytes never carry a valid SHA-256 and zstd frame, so with bit 0 set the target builds the object
// instead: the first 128 bytes are the header, with the magic of a snapshot (bit 1) or a segment,
// format version 1, page size 512 << bits 2-4, and the body size and SHA-256 of the rest, which is
// the uncompressed body, compressed here. That reaches the segment body parser and the snapshot
// writer with fuzzed transaction and page counts.
//
// Checked: a header that decodes encodes back to the same bytes; a decoded segment holds whole
// pages and encodes back to an object that decodes to the same transactions; a restored snapshot
// file has the header's size; an object built in mode 1 always decodes.
#include <openssl/evp.h>
#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "replica/replica_format.h"

namespace {

using fuzz::Check;
using replica::kObjectHeaderBytes;
using replica::ObjectHeader;
using replica::ObjectKind;
using replica::SegmentTransaction;

void Put32(std::string* s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*s)[at + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
}
void Put64(std::string* s, size_t at, uint64_t v) {
  Put32(s, at, static_cast<uint32_t>(v >> 32));
  Put32(s, at + 4, static_cast<uint32_t>(v));
}

std::string Sha256(std::string_view data) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), d, &n, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(d), n);
}

// The object mode 1 builds from `in` (see the top of the file); empty when `in` is too short.
std::string Build(uint8_t mode, std::string_view in) {
  if (in.size() < kObjectHeaderBytes) return "";
  std::string header(in.substr(0, kObjectHeaderBytes));
  const std::string_view body = in.substr(kObjectHeaderBytes);
  header.replace(0, 8,
                 (mode & 2) ? std::string("GWSNAP\0\x01", 8) : std::string("GWSEG\0\0\x01", 8));
  Put32(&header, 8, 1);
  Put32(&header, 12, 512u << ((mode >> 2) & 7));
  Put64(&header, 48, body.size());
  header.replace(56, 32, Sha256(body));
  // One context for the whole run: making one per input would dominate the time per input.
  static ZSTD_CCtx* const cctx = ZSTD_createCCtx();
  std::string compressed(ZSTD_compressBound(body.size()), '\0');
  const size_t n =
      ZSTD_compressCCtx(cctx, compressed.data(), compressed.size(), body.data(), body.size(), 1);
  Check(!ZSTD_isError(n), "zstd could not compress");
  compressed.resize(n);
  return header + compressed;
}

bool SameTransactions(const std::vector<SegmentTransaction>& a,
                      const std::vector<SegmentTransaction>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].txid != b[i].txid || a[i].time_ms != b[i].time_ms || a[i].db_pages != b[i].db_pages ||
        a[i].pages.size() != b[i].pages.size()) {
      return false;
    }
    for (size_t j = 0; j < a[i].pages.size(); ++j) {
      if (a[i].pages[j].pgno != b[i].pages[j].pgno || a[i].pages[j].data != b[i].pages[j].data) {
        return false;
      }
    }
  }
  return true;
}

void CheckHeader(std::string_view object, bool built) {
  services::Result<ObjectHeader> h = replica::DecodeHeader(object);
  Check(h.ok() || !built, "DecodeHeader refused a header built to be valid");
  if (!h.ok()) return;
  // Bytes 120-127 are reserved and written as zero; everything before them round-trips.
  Check(replica::EncodeHeader(*h).substr(0, 120) == object.substr(0, 120),
        "a decoded header encodes to different bytes");
}

void CheckSegment(std::string_view object) {
  ObjectHeader h;
  services::Result<std::vector<SegmentTransaction>> txns = replica::DecodeSegment(object, &h);
  if (!txns.ok()) return;
  for (const SegmentTransaction& t : *txns) {
    for (const replica::WalPage& p : t.pages) {
      Check(p.data.size() == h.page_size, "a segment page that is not page_size bytes");
    }
  }
  const std::string again = replica::EncodeSegment(h, *txns);
  ObjectHeader h2;
  services::Result<std::vector<SegmentTransaction>> txns2 = replica::DecodeSegment(again, &h2);
  Check(txns2.ok() && SameTransactions(*txns, *txns2), "a re-encoded segment decodes differently");
  Check(h2.body_bytes == h.body_bytes && h2.body_sha256 == h.body_sha256,
        "a re-encoded segment has another body");
}

void CheckSnapshot(std::string_view object, bool built, std::string_view body) {
  const fuzz::ScratchDir& dir = fuzz::ScratchDir::Get();
  const std::string object_path = dir.Write("object.snap", object);
  const std::string db_path = dir.Path("restored.db");
  services::Result<ObjectHeader> h = replica::ReadSnapshotFile(object_path, db_path);
  if (built && h.ok() == false) {
    std::fprintf(stderr, "ReadSnapshotFile: %s\n", h.status().ToString().c_str());
  }
  Check(h.ok() || !built, "ReadSnapshotFile refused a snapshot built to be valid");
  if (!h.ok()) return;
  std::error_code ec;
  Check(std::filesystem::file_size(db_path, ec) == h->body_bytes && !ec,
        "the restored file is not the header's body size");
  if (built) Check(h->body_bytes == body.size(), "the restored snapshot lost bytes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return -1;
  const std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool built = (data[0] & 1) != 0;
  std::string object = built ? Build(data[0], in) : std::string(in);
  if (built && object.empty()) return -1;
  fuzz::ExactCopy exact(reinterpret_cast<const uint8_t*>(object.data()), object.size());
  const std::string_view view = exact.view();
  const std::string_view body = built ? in.substr(kObjectHeaderBytes) : std::string_view();

  CheckHeader(view, built);
  const bool snapshot = view.size() >= 8 && view.substr(0, 6) == "GWSNAP";
  if (!built || !snapshot) CheckSegment(view);
  if (!built || snapshot) CheckSnapshot(view, built, body);
  return 0;
}
