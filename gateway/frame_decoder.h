// FrameDecoder: finds protocol frames (4-byte big-endian length + payload) in a byte buffer.
//
// Incremental and allocation-free: Decode() looks at whatever bytes have arrived and says whether
// a whole frame is there (kOk, with the payload and the bytes consumed), more bytes are needed
// (kNeedMore, with how many in total the frame will take so the caller can size its buffer
// knowing the length was checked against the limit first), or the stream is broken (kError). The
// caller owns the buffer; the decoder keeps no state, so feeding the same bytes one at a time or
// all at once gives the same frames. See PROTOCOL.md "Frames".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace gateway {

inline constexpr size_t kFrameHeaderBytes = 4;

class FrameDecoder {
 public:
  enum class Kind { kOk, kNeedMore, kError };
  enum class ErrorKind { kNone, kEmptyFrame, kTooLarge };

  struct Outcome {
    Kind kind = Kind::kNeedMore;
    std::string_view payload;  // kOk: the frame's payload, pointing into the input
    size_t consumed = 0;       // kOk: header + payload bytes to drop from the input
    size_t frame_bytes = 0;    // kOk/kNeedMore (once the header is in): header + payload size
    ErrorKind error = ErrorKind::kNone;
    uint64_t declared_length = 0;  // kError kTooLarge: the length the header claimed
  };

  explicit FrameDecoder(uint32_t max_payload_bytes) : max_payload_(max_payload_bytes) {}

  // Never reads past input.size(). Once kError is returned the stream cannot be resynchronised.
  Outcome Decode(std::string_view input) const;

  uint32_t max_payload_bytes() const { return max_payload_; }

 private:
  uint32_t max_payload_;
};

// Writes the 4-byte big-endian length header.
void EncodeFrameHeader(uint32_t payload_bytes, char out[kFrameHeaderBytes]);

}  // namespace gateway
