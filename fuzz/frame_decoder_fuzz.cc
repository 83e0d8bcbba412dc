// Fuzz target: gateway::FrameDecoder fed a byte stream in random chunks, as a connection is.
//
// Input: [limit mode][chunk seed][stream...]. The limit mode picks the decoder's max payload (the
// usual 1 MiB, a tiny one so that most lengths are over it, no limit at all, or 1..64); the chunk
// seed picks how the stream is cut into reads (0: all at once). Checked on every Decode call:
// nothing is consumed past the input, a frame it asks to wait for is within the limit, and the
// outcome is exactly what the 4-byte length says. Across calls: cutting the stream differently
// gives the same frames and the same final error, because the decoder keeps no state.
#include <sanitizer/asan_interface.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "gateway/frame_decoder.h"

namespace {

using fuzz::Check;
using gateway::FrameDecoder;
using gateway::kFrameHeaderBytes;

uint32_t LimitFor(uint8_t mode) {
  switch (mode & 3) {
    case 0:
      return 1u << 20;
    case 1:
      return 16;
    case 2:
      return UINT32_MAX;
    default:
      return 1 + (mode >> 2);
  }
}

// Decodes `v` once and checks the outcome against the spec.
FrameDecoder::Outcome DecodeChecked(const FrameDecoder& d, std::string_view v) {
  FrameDecoder::Outcome o = d.Decode(v);
  const uint64_t limit = d.max_payload_bytes();
  Check(o.consumed <= v.size(), "consumed more bytes than were given");
  if (o.kind == FrameDecoder::Kind::kNeedMore && o.frame_bytes != 0) {
    Check(o.frame_bytes <= kFrameHeaderBytes + limit, "asks for a frame over the limit");
    Check(o.frame_bytes > v.size(), "asks for more although the frame is all there");
  }
  if (v.size() < kFrameHeaderBytes) {
    Check(o.kind == FrameDecoder::Kind::kNeedMore && o.frame_bytes == 0 && o.consumed == 0,
          "a partial header must give kNeedMore with no size");
    return o;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  const uint32_t length =
      (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
  if (length == 0) {
    Check(o.kind == FrameDecoder::Kind::kError && o.error == FrameDecoder::ErrorKind::kEmptyFrame,
          "length 0 must be kEmptyFrame");
  } else if (length > limit) {
    Check(o.kind == FrameDecoder::Kind::kError && o.error == FrameDecoder::ErrorKind::kTooLarge &&
              o.declared_length == length,
          "a length over the limit must be kTooLarge with that length");
  } else if (v.size() < kFrameHeaderBytes + uint64_t{length}) {
    Check(o.kind == FrameDecoder::Kind::kNeedMore && o.frame_bytes == kFrameHeaderBytes + length,
          "an incomplete frame must be kNeedMore with its whole size");
  } else {
    Check(o.kind == FrameDecoder::Kind::kOk && o.consumed == kFrameHeaderBytes + length &&
              o.frame_bytes == o.consumed && o.payload.data() == v.data() + kFrameHeaderBytes &&
              o.payload.size() == length,
          "a complete frame must be kOk with its payload in place");
    char header[kFrameHeaderBytes];
    gateway::EncodeFrameHeader(length, header);
    Check(std::string_view(header, kFrameHeaderBytes) == v.substr(0, kFrameHeaderBytes),
          "EncodeFrameHeader disagrees with the decoded length");
  }
  return o;
}

struct Decoded {
  std::vector<std::pair<size_t, size_t>> frames;  // payload offset in the stream, and size
  bool error = false;
  FrameDecoder::ErrorKind error_kind = FrameDecoder::ErrorKind::kNone;
  size_t left_over = 0;  // bytes buffered and not yet a whole frame, when there was no error
};

// Feeds `stream` in chunks whose sizes come from `seed`, taking every whole frame out after each
// read, the way Connection does. The bytes a connection would hold are a window [start, end) of
// one copy of the stream; everything outside the window is poisoned, so AddressSanitizer reports
// a decoder that looks at bytes not yet received (or already consumed) without a copy per call.
Decoded Feed(const FrameDecoder& d, std::string_view stream, uint8_t seed) {
  Decoded out;
  const fuzz::ExactCopy copy(reinterpret_cast<const uint8_t*>(stream.data()), stream.size());
  const char* base = copy.view().data();
  ASAN_POISON_MEMORY_REGION(base, stream.size());
  uint32_t rng = seed * 2654435761u + 1;
  size_t start = 0, end = 0;
  while (end < stream.size()) {
    size_t chunk = stream.size();
    if (seed != 0) {
      rng ^= rng << 13;
      rng ^= rng >> 17;
      rng ^= rng << 5;
      chunk = 1 + rng % (seed % 2 == 0 ? 8 : 300);  // mostly tiny reads, or medium ones
    }
    chunk = std::min(chunk, stream.size() - end);
    ASAN_UNPOISON_MEMORY_REGION(base + end, chunk);
    end += chunk;
    for (;;) {
      FrameDecoder::Outcome o = DecodeChecked(d, std::string_view(base + start, end - start));
      if (o.kind == FrameDecoder::Kind::kError) {
        out.error = true;
        out.error_kind = o.error;
        ASAN_UNPOISON_MEMORY_REGION(base, stream.size());
        return out;
      }
      if (o.kind == FrameDecoder::Kind::kNeedMore) break;
      out.frames.emplace_back(static_cast<size_t>(o.payload.data() - base), o.payload.size());
      ASAN_POISON_MEMORY_REGION(base + start, o.consumed);
      start += o.consumed;
    }
  }
  out.left_over = end - start;
  ASAN_UNPOISON_MEMORY_REGION(base, stream.size());
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return -1;  // not an input of this layout; keep it out of the corpus
  const FrameDecoder d(LimitFor(data[0]));
  const std::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);
  const Decoded chunked = Feed(d, stream, data[1]);
  const Decoded whole = Feed(d, stream, 0);
  Check(chunked.frames == whole.frames, "chunking changed the frames");
  Check(chunked.error == whole.error && chunked.error_kind == whole.error_kind,
        "chunking changed the error");
  Check(chunked.left_over == whole.left_over, "chunking changed the bytes left over");
  return 0;
}
