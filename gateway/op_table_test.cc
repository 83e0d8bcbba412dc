#include "gateway/op_table.h"

#include <gtest/gtest.h>

#include <functional>
#include <sstream>

namespace gateway {
namespace {

// Collects replies the way a connection would.
class RecordingSink : public ReplySink {
 public:
  std::string* ReplyBuffer() override { return &out; }
  void ReplyAppended(std::string_view op, uint32_t status) override {
    ops.emplace_back(op);
    statuses.push_back(status);
  }
  // The body of reply `i` as msgpack text, e.g. "[1, 0, \"pong\"]".
  std::string Decoded() const {
    std::string text;
    size_t pos = 0;
    while (pos + 4 <= out.size()) {
      const auto* p = reinterpret_cast<const unsigned char*>(out.data() + pos);
      const size_t n = (size_t{p[0]} << 24) | (size_t{p[1]} << 16) | (size_t{p[2]} << 8) | p[3];
      msgpack::object_handle h = msgpack::unpack(out.data() + pos + 4, n);
      std::ostringstream s;
      s << h.get();
      text += s.str() + "\n";
      pos += 4 + n;
    }
    return text;
  }
  std::string out;
  std::vector<std::string> ops;
  std::vector<uint32_t> statuses;
};

// Builds a request whose args map is packed by `pack_args`.
Request ReqWith(uint64_t id, const std::string& op,
                const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& pack_args) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> p(buf);
  p.pack_array(3);
  p.pack_uint64(id);
  p.pack(op);
  pack_args(p);
  auto decoded = DecodeRequest(std::string_view(buf.data(), buf.size()));
  return std::move(std::get<Request>(decoded));
}

template <typename Args>
Request Req(uint64_t id, const std::string& op, const Args& args) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::make_tuple(id, op, args));
  auto decoded = DecodeRequest(std::string_view(buf.data(), buf.size()));
  return std::move(std::get<Request>(decoded));
}

class OpTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    table.Add({"echo",
               {{"text", ArgType::kStr, true}, {"times", ArgType::kUint, false}},
               [](const Args& args, Reply reply) {
                 std::string text(*args.Str("text"));
                 uint64_t times = args.Uint("times").value_or(1);
                 std::string out;
                 for (uint64_t i = 0; i < times; ++i) out += text;
                 reply.Ok([&](Packer& p) { p.pack(out); });
               }});
    table.Add(
        {"later", {}, [this](const Args&, Reply reply) { parked.push_back(std::move(reply)); }});
    table.Add({"forget", {}, [](const Args&, Reply) {}});
  }
  void Run(const Request& r) { table.Dispatch(r, Reply(sink, r.id, r.op)); }

  OpTable table;
  std::shared_ptr<RecordingSink> sink = std::make_shared<RecordingSink>();
  std::vector<Reply> parked;
};

TEST_F(OpTableTest, DispatchesToTheRowHandler) {
  Run(ReqWith(1, "echo", [](auto& p) {
    p.pack_map(2);
    p.pack("text");
    p.pack("ab");
    p.pack("times");
    p.pack(3);
  }));
  EXPECT_EQ(sink->Decoded(), "[1,0,\"ababab\"]\n");
  EXPECT_EQ(table.Names(), (std::vector<std::string>{"echo", "forget", "later"}));
}

TEST_F(OpTableTest, ChecksArgumentsAgainstTheSchema) {
  Run(Req(1, "echo", std::map<std::string, int>{}));
  Run(Req(2, "echo", std::map<std::string, int>{{"text", 5}}));
  Run(Req(3, "echo", std::map<std::string, std::string>{{"text", "a"}, {"colour", "red"}}));
  Run(Req(4, "nosuch", std::map<std::string, int>{}));
  Run(ReqWith(5, "echo", [](auto& p) {
    p.pack_map(2);
    p.pack("text");
    p.pack("a");
    p.pack("times");
    p.pack(-1);
  }));
  EXPECT_EQ(sink->statuses, (std::vector<uint32_t>{5, 5, 5, 4, 5}));
  const std::string text = sink->Decoded();
  EXPECT_NE(text.find("needs argument 'text'"), std::string::npos) << text;
  EXPECT_NE(text.find("'text' of echo must be str"), std::string::npos) << text;
  EXPECT_NE(text.find("no argument 'colour'; it takes: text, times"), std::string::npos) << text;
  EXPECT_NE(text.find("unknown op 'nosuch'"), std::string::npos) << text;
  EXPECT_NE(text.find("'times' of echo must be unsigned integer"), std::string::npos) << text;
}

TEST_F(OpTableTest, RepliesMayComeLaterAndOutOfOrder) {
  Run(Req(1, "later", std::map<std::string, int>{}));
  Run(Req(2, "later", std::map<std::string, int>{}));
  Run(Req(3, "echo", std::map<std::string, std::string>{{"text", "x"}}));
  ASSERT_EQ(parked.size(), 2u);
  parked[1].Ok([](Packer& p) { p.pack("second"); });
  parked[0].Error(ErrorCode::kInternal, "first failed");
  const std::string text = sink->Decoded();
  EXPECT_EQ(text.substr(0, text.find('\n')), "[3,0,\"x\"]");
  EXPECT_NE(text.find("[2,0,\"second\"]"), std::string::npos);
  EXPECT_NE(text.find("[1,8,"), std::string::npos);
}

TEST_F(OpTableTest, ADroppedReplyStillAnswersAndAClosedSinkIsSafe) {
  Run(Req(1, "forget", std::map<std::string, int>{}));
  EXPECT_EQ(sink->statuses, (std::vector<uint32_t>{8}));
  Run(Req(2, "later", std::map<std::string, int>{}));
  sink.reset();  // the connection went away
  parked[0].Ok([](Packer& p) { p.pack("too late"); });
}

}  // namespace
}  // namespace gateway
