#include "gateway/message.h"

#include <msgpack/v2/null_visitor.hpp>

#include <cstring>

#include "gateway/frame_decoder.h"

namespace gateway {
namespace {

// Walks a payload without building objects, so that a header claiming four billion elements in
// five bytes is rejected before msgpack's object builder allocates room for them.
class LimitsVisitor : public msgpack::v2::null_visitor {
 public:
  bool start_array(uint32_t n) { return Enter(n); }
  bool end_array() { return Leave(); }
  bool start_map(uint32_t n) { return Enter(uint64_t{n} * 2); }
  bool end_map() { return Leave(); }
  void parse_error(size_t, size_t) { malformed_ = true; }
  void insufficient_bytes(size_t, size_t) { truncated_ = true; }

  std::string Problem() const {
    if (too_deep_) return "nesting deeper than " + std::to_string(kMaxNestingDepth);
    if (too_many_) return "more than " + std::to_string(kMaxTotalElements) + " elements";
    if (truncated_) return "the frame ends in the middle of the msgpack value";
    if (malformed_) return "bytes that are not msgpack";
    return "malformed msgpack";
  }

 private:
  bool Enter(uint64_t elements) {
    total_ += elements;
    if (++depth_ > kMaxNestingDepth) too_deep_ = true;
    if (total_ > kMaxTotalElements) too_many_ = true;
    return !too_deep_ && !too_many_;
  }
  bool Leave() {
    --depth_;
    return true;
  }

  uint32_t depth_ = 0;
  uint64_t total_ = 0;
  bool too_deep_ = false;
  bool too_many_ = false;
  bool truncated_ = false;
  bool malformed_ = false;
};

std::string TypeName(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL:
      return "nil";
    case msgpack::type::BOOLEAN:
      return "bool";
    case msgpack::type::POSITIVE_INTEGER:
      return "uint";
    case msgpack::type::NEGATIVE_INTEGER:
      return "int";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      return "float";
    case msgpack::type::STR:
      return "str";
    case msgpack::type::BIN:
      return "bin";
    case msgpack::type::ARRAY:
      return "array";
    case msgpack::type::MAP:
      return "map";
    case msgpack::type::EXT:
      return "ext";
  }
  return "unknown";
}

}  // namespace

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadFrame:
      return "bad_frame";
    case ErrorCode::kFrameTooLarge:
      return "frame_too_large";
    case ErrorCode::kBadRequest:
      return "bad_request";
    case ErrorCode::kUnknownOp:
      return "unknown_op";
    case ErrorCode::kBadArgument:
      return "bad_argument";
    case ErrorCode::kTooManyConnections:
      return "too_many_connections";
    case ErrorCode::kShuttingDown:
      return "shutting_down";
    case ErrorCode::kInternal:
      return "internal";
    case ErrorCode::kUnauthorized:
      return "unauthorized";
    case ErrorCode::kKeyNotFound:
      return "key_not_found";
    case ErrorCode::kNotInteger:
      return "not_integer";
    case ErrorCode::kOutOfRange:
      return "out_of_range";
    case ErrorCode::kValueTooLarge:
      return "value_too_large";
    case ErrorCode::kStorageError:
      return "storage_error";
    case ErrorCode::kJobNotFound:
      return "job_not_found";
    case ErrorCode::kLeaseLost:
      return "lease_lost";
    case ErrorCode::kInvalidState:
      return "invalid_state";
    case ErrorCode::kReplicaError:
      return "replica_error";
  }
  return "internal";
}

std::variant<Request, RequestError> DecodeRequest(std::string_view payload) {
  LimitsVisitor limits;
  size_t offset = 0;
  bool parsed = false;
  try {
    parsed = msgpack::v2::parse(payload.data(), payload.size(), offset, limits);
  } catch (const std::exception& e) {
    return RequestError{0, ErrorCode::kBadFrame,
                        std::string("payload is not msgpack: ") + e.what()};
  }
  if (!parsed) {
    return RequestError{0, ErrorCode::kBadFrame,
                        "payload is not one msgpack value: " + limits.Problem() +
                            "; send [id, op, args] encoded as msgpack"};
  }
  if (offset != payload.size()) {
    return RequestError{0, ErrorCode::kBadFrame,
                        std::to_string(payload.size() - offset) +
                            " bytes follow the msgpack value; a frame holds exactly one value"};
  }

  Request req;
  try {
    req.handle = msgpack::unpack(payload.data(), payload.size());
  } catch (const std::exception& e) {
    return RequestError{0, ErrorCode::kBadFrame,
                        std::string("payload is not msgpack: ") + e.what()};
  }
  const msgpack::object& root = req.handle.get();
  if (root.type != msgpack::type::ARRAY) {
    return RequestError{0, ErrorCode::kBadRequest,
                        "a request is an array [id, op, args], got " + TypeName(root)};
  }
  const msgpack::object_array& a = root.via.array;
  uint64_t id = 0;
  if (a.size >= 1 && a.ptr[0].type == msgpack::type::POSITIVE_INTEGER) id = a.ptr[0].via.u64;
  if (a.size != 3) {
    return RequestError{
        id, ErrorCode::kBadRequest,
        "a request is an array of 3 [id, op, args], got " + std::to_string(a.size) + " elements"};
  }
  if (a.ptr[0].type != msgpack::type::POSITIVE_INTEGER) {
    return RequestError{0, ErrorCode::kBadRequest,
                        "request id must be an unsigned integer, got " + TypeName(a.ptr[0])};
  }
  if (a.ptr[1].type != msgpack::type::STR) {
    return RequestError{id, ErrorCode::kBadRequest,
                        "request op must be a str, got " + TypeName(a.ptr[1])};
  }
  if (a.ptr[2].type != msgpack::type::MAP) {
    return RequestError{id, ErrorCode::kBadRequest,
                        "request args must be a map (use {} for none), got " + TypeName(a.ptr[2])};
  }
  req.id = id;
  req.op.assign(a.ptr[1].via.str.ptr, a.ptr[1].via.str.size);
  req.args = a.ptr[2];
  return req;
}

void PackStr(Packer& p, std::string_view s) {
  p.pack_str(static_cast<uint32_t>(s.size()));
  p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

void PackBytes(Packer& p, std::string_view b) {
  p.pack_bin(static_cast<uint32_t>(b.size()));
  p.pack_bin_body(b.data(), static_cast<uint32_t>(b.size()));
}

void PackFloat64(Packer& p, double d) {
  uint64_t bits = 0;
  std::memcpy(&bits, &d, sizeof bits);
  char buf[9];
  buf[0] = static_cast<char>(0xcb);
  for (int i = 0; i < 8; ++i) buf[1 + i] = static_cast<char>((bits >> (56 - 8 * i)) & 0xff);
  // pack_str_body appends bytes as they are, with no header: exactly the encoding built above.
  p.pack_str_body(buf, sizeof buf);
}

size_t BeginFrame(std::string* out) {
  const size_t start = out->size();
  out->append(kFrameHeaderBytes, '\0');
  return start;
}

size_t FinishFrame(std::string* out, size_t start) {
  const size_t payload = out->size() - start - kFrameHeaderBytes;
  EncodeFrameHeader(static_cast<uint32_t>(payload), out->data() + start);
  return out->size() - start;
}

size_t AppendError(std::string* out, uint64_t id, ErrorCode code, std::string_view message) {
  return AppendResponse(out, id, static_cast<uint32_t>(code), [&](Packer& p) {
    p.pack_map(2);
    p.pack("code");
    PackStr(p, ErrorCodeName(code));
    p.pack("message");
    PackStr(p, message);
  });
}

}  // namespace gateway
