// Requests and responses of the wire protocol (PROTOCOL.md "Requests and responses"): decoding a
// frame payload into [id, op, args] and encoding [id, status, body] frames.
//
// Knows msgpack and nothing of sockets or SQLite. All functions are pure and thread-compatible.
#pragma once

#include <cstdint>
#include <msgpack.hpp>
#include <string>
#include <string_view>
#include <variant>

namespace gateway {

// Error statuses on the wire; the numbers and names are part of the protocol.
enum class ErrorCode : uint32_t {
  kBadFrame = 1,
  kFrameTooLarge = 2,
  kBadRequest = 3,
  kUnknownOp = 4,
  kBadArgument = 5,
  kTooManyConnections = 6,
  kShuttingDown = 7,
  kInternal = 8,
  kUnauthorized = 9,
  // Cache ops.
  kKeyNotFound = 16,
  kNotInteger = 17,
  kOutOfRange = 18,
  kValueTooLarge = 19,
  kStorageError = 20,
  // Queue ops.
  kJobNotFound = 32,
  kLeaseLost = 33,
  kInvalidState = 34,
  // Replication ops.
  kReplicaError = 40,
};
std::string_view ErrorCodeName(ErrorCode code);

// Structural limits on one payload, enforced before msgpack allocates anything.
inline constexpr uint32_t kMaxNestingDepth = 64;
inline constexpr uint64_t kMaxTotalElements = 1'000'000;

// A decoded request. `args` (a map) lives in `handle`'s zone; it does not point into the input.
struct Request {
  uint64_t id = 0;
  std::string op;
  msgpack::object args;
  msgpack::object_handle handle;
};

struct RequestError {
  uint64_t id = 0;  // the request's id when it could be read, else 0
  ErrorCode code = ErrorCode::kBadRequest;
  std::string message;
};

// Decodes one frame payload. A payload that is not exactly one well-formed msgpack value within
// the limits gives kBadFrame; well-formed msgpack of the wrong shape gives kBadRequest.
std::variant<Request, RequestError> DecodeRequest(std::string_view payload);

// An output stream for msgpack::packer that appends to a std::string.
class StringSink {
 public:
  explicit StringSink(std::string* out) : out_(out) {}
  void write(const char* data, size_t n) { out_->append(data, n); }

 private:
  std::string* out_;
};
using Packer = msgpack::packer<StringSink>;

// Packs a str or a bin from bytes (msgpack-c's pack() of a string_view needs the adaptor headers).
void PackStr(Packer& p, std::string_view s);
void PackBytes(Packer& p, std::string_view b);

// Packs `d` as a msgpack float 64. msgpack-c's pack_double writes whole numbers as integers,
// but the protocol promises floats for times and durations, so the encoding is written here.
void PackFloat64(Packer& p, double d);

// Appends a whole response frame [id, status, body] to `out`. Returns the frame's size.
// `pack_body` must pack exactly one msgpack value.
template <typename PackBody>
size_t AppendResponse(std::string* out, uint64_t id, uint32_t status, PackBody&& pack_body);

// Appends an error response frame [id, status, {"code", "message"}] to `out`.
size_t AppendError(std::string* out, uint64_t id, ErrorCode code, std::string_view message);

// --- implementation ------------------------------------------------------------------------------

size_t BeginFrame(std::string* out);
size_t FinishFrame(std::string* out, size_t start);

template <typename PackBody>
size_t AppendResponse(std::string* out, uint64_t id, uint32_t status, PackBody&& pack_body) {
  const size_t start = BeginFrame(out);
  StringSink sink(out);
  Packer packer(sink);
  packer.pack_array(3);
  packer.pack_uint64(id);
  packer.pack_uint32(status);
  pack_body(packer);
  return FinishFrame(out, start);
}

}  // namespace gateway
