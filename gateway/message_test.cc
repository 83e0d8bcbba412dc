#include "gateway/message.h"

#include <gtest/gtest.h>

#include <random>

#include "gateway/frame_decoder.h"

namespace gateway {
namespace {

std::string Pack(const msgpack::object& o) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, o);
  return std::string(buf.data(), buf.size());
}

template <typename T>
std::string PackValue(const T& v) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, v);
  return std::string(buf.data(), buf.size());
}

std::string RequestBytes(uint64_t id, const std::string& op) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> p(buf);
  p.pack_array(3);
  p.pack_uint64(id);
  p.pack(op);
  p.pack_map(1);
  p.pack("k");
  p.pack(7);
  return std::string(buf.data(), buf.size());
}

TEST(DecodeRequestTest, GoodRequest) {
  auto r = DecodeRequest(RequestBytes(42, "ping"));
  ASSERT_TRUE(std::holds_alternative<Request>(r));
  const Request& req = std::get<Request>(r);
  EXPECT_EQ(req.id, 42u);
  EXPECT_EQ(req.op, "ping");
  EXPECT_EQ(req.args.type, msgpack::type::MAP);
  EXPECT_EQ(req.args.via.map.size, 1u);
}

void ExpectError(std::string_view payload, ErrorCode code, uint64_t id = 0) {
  auto r = DecodeRequest(payload);
  ASSERT_TRUE(std::holds_alternative<RequestError>(r));
  EXPECT_EQ(std::get<RequestError>(r).code, code) << std::get<RequestError>(r).message;
  EXPECT_EQ(std::get<RequestError>(r).id, id);
  EXPECT_FALSE(std::get<RequestError>(r).message.empty());
}

TEST(DecodeRequestTest, MalformedPayloadsAreBadFrames) {
  ExpectError("\xc1", ErrorCode::kBadFrame);                         // never-used byte
  ExpectError(std::string("\x93\x01", 2), ErrorCode::kBadFrame);     // truncated array
  ExpectError(RequestBytes(1, "ping") + "x", ErrorCode::kBadFrame);  // trailing bytes
  // An array that claims 2^32-1 elements in five bytes is refused without allocating them.
  ExpectError(std::string("\xdd\xff\xff\xff\xff", 5), ErrorCode::kBadFrame);
  // Nesting deeper than the limit.
  ExpectError(std::string(100, '\x91') + "\x01", ErrorCode::kBadFrame);
}

TEST(DecodeRequestTest, WrongShapesAreBadRequests) {
  ExpectError(PackValue(5), ErrorCode::kBadRequest);
  ExpectError(PackValue(std::vector<int>{1, 2}), ErrorCode::kBadRequest, 1);
  ExpectError(PackValue(std::make_tuple(-1, "ping", std::map<std::string, int>{})),
              ErrorCode::kBadRequest);
  ExpectError(PackValue(std::make_tuple(9, 3, std::map<std::string, int>{})),
              ErrorCode::kBadRequest, 9);
  ExpectError(PackValue(std::make_tuple(9, "ping", std::vector<int>{})), ErrorCode::kBadRequest, 9);
}

TEST(DecodeRequestTest, RandomBytesNeverCrash) {
  std::mt19937_64 rng(7);
  int decoded = 0;
  for (int i = 0; i < 100'000; ++i) {
    std::string payload(1 + rng() % 48, '\0');
    for (char& c : payload) c = static_cast<char>(rng());
    // Bias towards containers so the structural limits get exercised.
    if (i % 2 == 0) payload[0] = static_cast<char>(0x90 | (rng() % 16));
    auto r = DecodeRequest(payload);
    decoded += std::holds_alternative<Request>(r);
  }
  EXPECT_LT(decoded, 100'000);
}

TEST(AppendResponseTest, FramesDecodeBack) {
  std::string out;
  AppendResponse(&out, 7, 0, [](Packer& p) { p.pack("pong"); });
  AppendError(&out, 8, ErrorCode::kUnknownOp, "no such op");
  FrameDecoder d(1 << 20);
  FrameDecoder::Outcome first = d.Decode(out);
  ASSERT_EQ(first.kind, FrameDecoder::Kind::kOk);
  msgpack::object_handle h = msgpack::unpack(first.payload.data(), first.payload.size());
  EXPECT_EQ(Pack(h.get()), PackValue(std::make_tuple(7, 0, "pong")));
  FrameDecoder::Outcome second = d.Decode(std::string_view(out).substr(first.consumed));
  ASSERT_EQ(second.kind, FrameDecoder::Kind::kOk);
  h = msgpack::unpack(second.payload.data(), second.payload.size());
  std::map<std::string, std::string> body{{"code", "unknown_op"}, {"message", "no such op"}};
  EXPECT_EQ(Pack(h.get()), PackValue(std::make_tuple(8, 4, body)));
}

}  // namespace
}  // namespace gateway
