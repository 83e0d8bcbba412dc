#include "replica/replica_format.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>

#include "replica/big_endian.h"
#include "replica/file_client.h"

namespace replica {
namespace {

using services::Result;
using services::Status;

constexpr char kSegmentMagic[8] = {'G', 'W', 'S', 'E', 'G', 0, 0, 1};
constexpr char kSnapshotMagic[8] = {'G', 'W', 'S', 'N', 'A', 'P', 0, 1};
constexpr uint32_t kFormatVersion = 1;

constexpr auto Put32 = PutBe32;
constexpr auto Put64 = PutBe64;
constexpr auto Get32 = GetBe32;
constexpr auto Get64 = GetBe64;

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Reset() { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  void Update(std::string_view data) { EVP_DigestUpdate(ctx_, data.data(), data.size()); }
  std::string Final() {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, d, &n);
    return std::string(reinterpret_cast<char*>(d), n);
  }

 private:
  EVP_MD_CTX* ctx_;
};

// The most a segment body may hold: far above what a sync or a merge writes (64 MiB of pages and
// 32 MiB merges), far below what would exhaust memory.
constexpr uint64_t kMaxSegmentBody = uint64_t{1} << 30;

// Decompresses one zstd frame whose content the header says is `expected` bytes. The output grows
// with what the frame really produces, so a header claiming gigabytes over a few bytes of input
// costs nothing before it is caught.
Result<std::string> Decompress(std::string_view compressed, uint64_t expected) {
  if (expected > kMaxSegmentBody) {
    return Status::Corruption("segment body size " + std::to_string(expected) +
                              " is implausible (more than 1 GiB)");
  }
  const unsigned long long framed = ZSTD_getFrameContentSize(compressed.data(), compressed.size());
  if (framed == ZSTD_CONTENTSIZE_ERROR) return Status::Corruption("segment body is not a zstd frame");
  if (framed != ZSTD_CONTENTSIZE_UNKNOWN && framed != expected) {
    return Status::Corruption("decompressed size differs from the header's");
  }
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!dctx) return Status::Internal("cannot allocate a zstd decoder");
  // Page data compresses a few times at most, so the usual body is allocated once, whole; a size
  // far beyond what the input could plausibly hold grows with the output instead.
  const uint64_t plausible = 16 * static_cast<uint64_t>(compressed.size()) + (1 << 20);
  std::string out;
  out.resize(static_cast<size_t>(std::min<uint64_t>(expected, plausible)));
  ZSTD_inBuffer in{compressed.data(), compressed.size(), 0};
  size_t produced = 0;
  for (;;) {
    if (produced == out.size()) {
      if (out.size() >= expected) {
        // Full: the frame must end here. One more byte of room tells "done" from "longer".
        char probe;
        ZSTD_outBuffer extra{&probe, 1, 0};
        const size_t left = ZSTD_decompressStream(dctx.get(), &extra, &in);
        if (ZSTD_isError(left)) {
          return Status::Corruption(std::string("cannot decompress: ") + ZSTD_getErrorName(left));
        }
        if (extra.pos != 0) return Status::Corruption("segment body is longer than its header says");
        if (left != 0) return Status::Corruption("segment body is truncated");
        break;
      }
      out.resize(static_cast<size_t>(std::min<uint64_t>(expected, out.size() * 2)));
    }
    ZSTD_outBuffer o{out.data(), out.size(), produced};
    const size_t left = ZSTD_decompressStream(dctx.get(), &o, &in);
    if (ZSTD_isError(left)) {
      return Status::Corruption(std::string("cannot decompress: ") + ZSTD_getErrorName(left));
    }
    const bool progressed = o.pos != produced;
    produced = o.pos;
    if (left == 0) break;  // the frame ended
    if (!progressed && in.pos == in.size && produced < out.size()) {
      return Status::Corruption("segment body is truncated");
    }
  }
  if (produced != expected) return Status::Corruption("decompressed size differs from the header's");
  if (in.pos != in.size) return Status::Corruption("segment body has bytes after its zstd frame");
  out.resize(produced);
  return out;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError("cannot write " + path + ": " + std::strerror(errno));
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

}  // namespace

std::string Hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string EncodeHeader(const ObjectHeader& h) {
  std::string out;
  out.reserve(kObjectHeaderBytes);
  out.append(h.kind == ObjectKind::kSnapshot ? kSnapshotMagic : kSegmentMagic, 8);
  Put32(&out, kFormatVersion);
  Put32(&out, h.page_size);
  Put64(&out, h.first_txid);
  Put64(&out, h.last_txid);
  Put64(&out, static_cast<uint64_t>(h.first_time_ms));
  Put64(&out, static_cast<uint64_t>(h.last_time_ms));
  Put64(&out, h.body_bytes);
  std::string sha = h.body_sha256;
  sha.resize(32, '\0');
  out += sha;
  Put32(&out, h.wal_salt1);
  Put32(&out, h.wal_salt2);
  Put32(&out, h.wal_checkpoint_seq);
  Put64(&out, h.wal_end.frames);
  Put32(&out, h.wal_end.checksum1);
  Put32(&out, h.wal_end.checksum2);
  Put32(&out, h.db_pages);
  out.resize(kObjectHeaderBytes, '\0');
  return out;
}

Result<ObjectHeader> DecodeHeader(std::string_view bytes) {
  if (bytes.size() < kObjectHeaderBytes) return Status::Corruption("object shorter than its header");
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  ObjectHeader h;
  if (std::memcmp(p, kSnapshotMagic, 8) == 0) {
    h.kind = ObjectKind::kSnapshot;
  } else if (std::memcmp(p, "GWENC", 5) == 0) {
    return Status::Corruption("the replica object is encrypted; set [replica] encryption_key to "
                              "the key it was written with");
  } else if (std::memcmp(p, kSegmentMagic, 8) != 0) {
    return Status::Corruption("not a gateway replica object (bad magic)");
  }
  if (Get32(p + 8) != kFormatVersion) {
    return Status::Corruption("replica object format " + std::to_string(Get32(p + 8)) +
                              " is not one this gateway reads; use a newer gateway");
  }
  h.page_size = Get32(p + 12);
  h.first_txid = Get64(p + 16);
  h.last_txid = Get64(p + 24);
  h.first_time_ms = static_cast<int64_t>(Get64(p + 32));
  h.last_time_ms = static_cast<int64_t>(Get64(p + 40));
  h.body_bytes = Get64(p + 48);
  h.body_sha256.assign(bytes.data() + 56, 32);
  h.wal_salt1 = Get32(p + 88);
  h.wal_salt2 = Get32(p + 92);
  h.wal_checkpoint_seq = Get32(p + 96);
  h.wal_end.frames = Get64(p + 100);
  h.wal_end.checksum1 = Get32(p + 108);
  h.wal_end.checksum2 = Get32(p + 112);
  h.db_pages = Get32(p + 116);
  if (h.page_size < 512 || h.page_size > 65536 || (h.page_size & (h.page_size - 1)) != 0) {
    return Status::Corruption("replica object has an impossible page size");
  }
  return h;
}

// A zstd stream and its output buffer. Each thread keeps the last one a builder released:
// creating a context allocates and clears megabytes of tables, which cost more than compressing
// one small segment, and a fresh output buffer costs page faults every round.
struct SegmentBuilder::Stream {
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx{ZSTD_createCCtx(), ZSTD_freeCCtx};
  std::string out = std::string(ZSTD_CStreamOutSize(), '\0');
  Sha256 sha;
};

thread_local std::unique_ptr<SegmentBuilder::Stream> SegmentBuilder::spare_;

SegmentBuilder::SegmentBuilder(int zstd_level) : stream_(std::move(spare_)) {
  if (!stream_) stream_ = std::make_unique<Stream>();
  ZSTD_CCtx_reset(stream_->cctx.get(), ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(stream_->cctx.get(), ZSTD_c_compressionLevel, zstd_level);
  // zstd's own frame checksum catches damage before the body is even parsed.
  ZSTD_CCtx_setParameter(stream_->cctx.get(), ZSTD_c_checksumFlag, 1);
  stream_->sha.Reset();
  object_.assign(kObjectHeaderBytes, '\0');
}

SegmentBuilder::~SegmentBuilder() { spare_ = std::move(stream_); }

void SegmentBuilder::Add(std::string_view piece) {
  if (!status_.ok()) return;
  stream_->sha.Update(piece);
  body_bytes_ += piece.size();
  ZSTD_inBuffer in{piece.data(), piece.size(), 0};
  while (in.pos < in.size) {
    ZSTD_outBuffer out{stream_->out.data(), stream_->out.size(), 0};
    // Fails only on misuse or when zstd cannot allocate; the object is then unusable.
    const size_t rc = ZSTD_compressStream2(stream_->cctx.get(), &out, &in, ZSTD_e_continue);
    if (ZSTD_isError(rc)) {
      status_ = Status::Internal(std::string("zstd could not compress a segment: ") +
                                 ZSTD_getErrorName(rc));
      return;
    }
    object_.append(stream_->out.data(), out.pos);
  }
}

void SegmentBuilder::AddTransaction(uint64_t txid, int64_t time_ms, uint32_t db_pages,
                                    const std::vector<WalPage>& pages) {
  std::string head;
  head.reserve(24);
  Put64(&head, txid);
  Put64(&head, static_cast<uint64_t>(time_ms));
  Put32(&head, db_pages);
  Put32(&head, static_cast<uint32_t>(pages.size()));
  Add(head);
  for (const WalPage& p : pages) {
    unsigned char pgno[4];
    for (int i = 0; i < 4; ++i) pgno[i] = static_cast<unsigned char>(p.pgno >> (8 * (3 - i)));
    Add(std::string_view(reinterpret_cast<const char*>(pgno), 4));
    Add(p.data);
  }
}

void SegmentBuilder::AddEncoded(std::string_view transactions) { Add(transactions); }

std::string SegmentBuilder::Finish(ObjectHeader header) {
  ZSTD_inBuffer in{nullptr, 0, 0};
  for (;;) {
    ZSTD_outBuffer out{stream_->out.data(), stream_->out.size(), 0};
    const size_t left =
        status_.ok() ? ZSTD_compressStream2(stream_->cctx.get(), &out, &in, ZSTD_e_end) : 0;
    if (ZSTD_isError(left)) {
      status_ =
          Status::Internal(std::string("zstd could not end a segment: ") + ZSTD_getErrorName(left));
      break;
    }
    object_.append(stream_->out.data(), out.pos);
    if (left == 0) break;
  }
  header.kind = ObjectKind::kSegment;
  header.body_bytes = body_bytes_;
  header.body_sha256 = stream_->sha.Final();
  const std::string encoded = EncodeHeader(header);
  object_.replace(0, kObjectHeaderBytes, encoded);
  return std::move(object_);
}

std::string EncodeSegment(ObjectHeader header, const std::vector<SegmentTransaction>& txns) {
  SegmentBuilder builder(kDefaultZstdLevel);
  for (const SegmentTransaction& t : txns) {
    builder.AddTransaction(t.txid, t.time_ms, t.db_pages, t.pages);
  }
  return builder.Finish(header);
}

Result<std::string> DecodeSegmentBody(std::string_view object, ObjectHeader* header,
                                      bool verify_checksum) {
  Result<ObjectHeader> h = DecodeHeader(object);
  if (!h.ok()) return h.status();
  if (h->kind != ObjectKind::kSegment) return Status::Corruption("object is not a segment");
  Result<std::string> body = Decompress(object.substr(kObjectHeaderBytes), h->body_bytes);
  if (!body.ok()) return body.status();
  if (verify_checksum) {
    Sha256 sha;
    sha.Update(*body);
    if (sha.Final() != h->body_sha256) return Status::Corruption("segment checksum mismatch");
  }
  *header = *h;
  return body;
}

Result<std::vector<EncodedTransaction>> IndexSegmentBody(std::string_view body,
                                                         uint32_t page_size) {
  std::vector<EncodedTransaction> out;
  const auto* p = reinterpret_cast<const unsigned char*>(body.data());
  size_t off = 0;
  const size_t n = body.size();
  while (off < n) {
    if (n - off < 24) return Status::Corruption("segment ends inside a transaction header");
    const uint32_t pages = Get32(p + off + 20);
    if (pages > (n - off - 24) / (4 + size_t{page_size})) {
      return Status::Corruption("segment transaction claims more pages than it holds");
    }
    const size_t bytes = 24 + size_t{pages} * (4 + page_size);
    out.push_back({Get64(p + off), off, bytes});
    off += bytes;
  }
  return out;
}

Result<std::vector<SegmentTransaction>> DecodeSegment(std::string_view object,
                                                      ObjectHeader* header) {
  ObjectHeader h;
  Result<std::string> body = DecodeSegmentBody(object, &h);
  if (!body.ok()) return body.status();
  Result<std::vector<EncodedTransaction>> index = IndexSegmentBody(*body, h.page_size);
  if (!index.ok()) return index.status();
  std::vector<SegmentTransaction> out;
  out.reserve(index->size());
  const auto* p = reinterpret_cast<const unsigned char*>(body->data());
  for (const EncodedTransaction& e : *index) {
    SegmentTransaction t;
    t.txid = e.txid;
    t.time_ms = static_cast<int64_t>(Get64(p + e.offset + 8));
    t.db_pages = Get32(p + e.offset + 16);
    const uint32_t pages = Get32(p + e.offset + 20);
    t.pages.reserve(pages);
    size_t off = e.offset + 24;
    for (uint32_t i = 0; i < pages; ++i) {
      t.pages.push_back(WalPage{Get32(p + off), std::string(body->data() + off + 4, h.page_size)});
      off += 4 + h.page_size;
    }
    out.push_back(std::move(t));
  }
  *header = h;
  return out;
}

Status WriteSnapshotFile(const std::string& db_path, ObjectHeader header,
                         const std::string& out_path) {
  int in_raw = open(db_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in_raw < 0) return Status::IoError("cannot open " + db_path + ": " + std::strerror(errno));
  Fd in(in_raw);
  int out_raw = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out_raw < 0) return Status::IoError("cannot create " + out_path + ": " + std::strerror(errno));
  Fd out(out_raw);
  // The header goes first but holds the body's checksum: write a placeholder, fix it at the end.
  GW_RETURN_IF_ERROR(WriteAll(out.get(), std::string(kObjectHeaderBytes, '\0'), out_path));
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, kDefaultZstdLevel);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  Sha256 sha;
  std::string in_buf(1 << 20, '\0');
  std::string out_buf(ZSTD_CStreamOutSize(), '\0');
  uint64_t total = 0;
  const uint64_t want = uint64_t{header.db_pages} * header.page_size;
  bool done = false;
  while (!done) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(in_buf.size(), want - total));
    ssize_t n = chunk == 0 ? 0 : read(in.get(), in_buf.data(), chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError("cannot read " + db_path + ": " + std::strerror(errno));
    if (n == 0 && total < want) {
      return Status::Corruption(db_path + " is shorter than its page count says");
    }
    total += static_cast<uint64_t>(n);
    sha.Update(std::string_view(in_buf.data(), static_cast<size_t>(n)));
    const ZSTD_EndDirective mode = total == want ? ZSTD_e_end : ZSTD_e_continue;
    ZSTD_inBuffer input{in_buf.data(), static_cast<size_t>(n), 0};
    for (;;) {
      ZSTD_outBuffer output{out_buf.data(), out_buf.size(), 0};
      size_t left = ZSTD_compressStream2(cctx.get(), &output, &input, mode);
      if (ZSTD_isError(left)) return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(left));
      GW_RETURN_IF_ERROR(WriteAll(out.get(), std::string_view(out_buf.data(), output.pos), out_path));
      if (mode == ZSTD_e_end ? left == 0 : input.pos == input.size) break;
    }
    done = total == want;
  }
  header.kind = ObjectKind::kSnapshot;
  header.body_bytes = total;
  header.body_sha256 = sha.Final();
  const std::string encoded = EncodeHeader(header);
  if (pwrite(out.get(), encoded.data(), encoded.size(), 0) != static_cast<ssize_t>(encoded.size()) ||
      fsync(out.get()) != 0) {
    return Status::IoError("cannot finish " + out_path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

Result<ObjectHeader> ReadSnapshotFile(const std::string& object_path, const std::string& db_path) {
  int in_raw = open(object_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in_raw < 0) return Status::IoError("cannot open " + object_path + ": " + std::strerror(errno));
  Fd in(in_raw);
  std::string head(kObjectHeaderBytes, '\0');
  if (read(in.get(), head.data(), head.size()) != static_cast<ssize_t>(head.size())) {
    return Status::Corruption("snapshot object shorter than its header");
  }
  Result<ObjectHeader> h = DecodeHeader(head);
  if (!h.ok()) return h.status();
  if (h->kind != ObjectKind::kSnapshot) return Status::Corruption("object is not a snapshot");
  int out_raw = open(db_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out_raw < 0) return Status::IoError("cannot create " + db_path + ": " + std::strerror(errno));
  Fd out(out_raw);
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  Sha256 sha;
  std::string in_buf(ZSTD_DStreamInSize(), '\0');
  std::string out_buf(ZSTD_DStreamOutSize(), '\0');
  uint64_t total = 0;
  size_t last = 1;
  for (;;) {
    ssize_t n = read(in.get(), in_buf.data(), in_buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError("cannot read " + object_path + ": " + std::strerror(errno));
    if (n == 0) break;
    ZSTD_inBuffer input{in_buf.data(), static_cast<size_t>(n), 0};
    while (input.pos < input.size) {
      ZSTD_outBuffer output{out_buf.data(), out_buf.size(), 0};
      last = ZSTD_decompressStream(dctx.get(), &output, &input);
      if (ZSTD_isError(last)) {
        return Status::Corruption(std::string("snapshot does not decompress: ") +
                                  ZSTD_getErrorName(last));
      }
      total += output.pos;
      if (total > h->body_bytes) return Status::Corruption("snapshot is longer than its header says");
      sha.Update(std::string_view(out_buf.data(), output.pos));
      GW_RETURN_IF_ERROR(WriteAll(out.get(), std::string_view(out_buf.data(), output.pos), db_path));
    }
  }
  if (last != 0 || total != h->body_bytes) return Status::Corruption("snapshot is truncated");
  if (sha.Final() != h->body_sha256) return Status::Corruption("snapshot checksum mismatch");
  if (fsync(out.get()) != 0) return Status::IoError("cannot fsync " + db_path);
  return *h;
}

std::string NewGenerationId(int64_t now_ms) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char suffix[9];
  std::snprintf(suffix, sizeof suffix, "%08x", static_cast<unsigned>(rng()));
  return Hex16(static_cast<uint64_t>(now_ms)) + "-" + suffix;
}

std::string GenerationPrefix(const std::string& db, const std::string& generation) {
  return db + "/generations/" + generation + "/";
}

std::string SnapshotKey(const std::string& db, const std::string& generation, uint64_t txid,
                        int64_t time_ms) {
  return GenerationPrefix(db, generation) + "snapshots/" + Hex16(txid) + "-" +
         Hex16(static_cast<uint64_t>(time_ms)) + ".snap";
}

std::string SegmentKey(const std::string& db, const std::string& generation, int level,
                       uint64_t first_txid, uint64_t last_txid, int64_t last_time_ms) {
  return GenerationPrefix(db, generation) + "segments/" + std::to_string(level) + "/" +
         Hex16(first_txid) + "-" + Hex16(last_txid) + "-" +
         Hex16(static_cast<uint64_t>(last_time_ms)) + ".seg";
}

std::optional<ParsedKey> ParseKey(std::string_view key) {
  // <db>/generations/<gen>/snapshots/<txid>-<time>.snap
  // <db>/generations/<gen>/segments/<level>/<first>-<last>-<time>.seg
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i <= key.size(); ++i) {
    if (i == key.size() || key[i] == '/') {
      parts.push_back(key.substr(start, i - start));
      start = i + 1;
    }
  }
  if (parts.size() < 5 || parts[1] != "generations") return std::nullopt;
  auto hex = [](std::string_view s, uint64_t* out) {
    if (s.size() != 16) return false;
    *out = 0;
    for (char c : s) {
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return false;
      *out = *out * 16 + static_cast<uint64_t>(d);
    }
    return true;
  };
  ParsedKey k;
  k.db = std::string(parts[0]);
  k.generation = std::string(parts[2]);
  uint64_t time = 0;
  const std::string_view name = parts.back();
  if (parts[3] == "snapshots" && parts.size() == 5 && name.size() == 38 &&
      name.substr(33) == ".snap" && name[16] == '-') {
    k.kind = ObjectKind::kSnapshot;
    if (!hex(name.substr(0, 16), &k.first_txid) || !hex(name.substr(17, 16), &time)) {
      return std::nullopt;
    }
    k.last_txid = k.first_txid;
    k.time_ms = static_cast<int64_t>(time);
    return k;
  }
  if (parts[3] == "segments" && parts.size() == 6 && name.size() == 54 &&
      name.substr(50) == ".seg" && name[16] == '-' && name[33] == '-' && parts[4].size() == 1 &&
      parts[4][0] >= '0' && parts[4][0] <= '9') {
    k.kind = ObjectKind::kSegment;
    k.level = parts[4][0] - '0';
    if (!hex(name.substr(0, 16), &k.first_txid) || !hex(name.substr(17, 16), &k.last_txid) ||
        !hex(name.substr(34, 16), &time)) {
      return std::nullopt;
    }
    k.time_ms = static_cast<int64_t>(time);
    return k;
  }
  return std::nullopt;
}

}  // namespace replica
