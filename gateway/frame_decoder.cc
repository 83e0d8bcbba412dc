#include "gateway/frame_decoder.h"

namespace gateway {

FrameDecoder::Outcome FrameDecoder::Decode(std::string_view input) const {
  Outcome out;
  if (input.size() < kFrameHeaderBytes) return out;
  const auto* p = reinterpret_cast<const unsigned char*>(input.data());
  const uint32_t length =
      (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
  // The limit is checked here, before anyone sizes a buffer by the claimed length.
  if (length == 0) {
    out.kind = Kind::kError;
    out.error = ErrorKind::kEmptyFrame;
    return out;
  }
  if (length > max_payload_) {
    out.kind = Kind::kError;
    out.error = ErrorKind::kTooLarge;
    out.declared_length = length;
    return out;
  }
  out.frame_bytes = kFrameHeaderBytes + length;
  if (input.size() < out.frame_bytes) return out;
  out.kind = Kind::kOk;
  out.payload = input.substr(kFrameHeaderBytes, length);
  out.consumed = out.frame_bytes;
  return out;
}

void EncodeFrameHeader(uint32_t n, char out[kFrameHeaderBytes]) {
  out[0] = static_cast<char>((n >> 24) & 0xff);
  out[1] = static_cast<char>((n >> 16) & 0xff);
  out[2] = static_cast<char>((n >> 8) & 0xff);
  out[3] = static_cast<char>(n & 0xff);
}

}  // namespace gateway
