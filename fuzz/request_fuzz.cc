// Fuzz target: a frame payload through DecodeRequest, then OpTable::CheckArgs and Dispatch
// against a table with one row per kind of argument schema.
//
// Input: one payload, as the connection hands it over after the frame decoder. Checked: nothing
// crashes; the memory allocated while decoding is bounded by a small multiple of the payload size
// (a header claiming a billion elements must not make msgpack reserve room for them); a request
// CheckArgs accepts really has the types its row declares, so the typed Args getters handlers use
// read the right union member; and Dispatch answers exactly once with a well-formed response
// frame carrying the request's id.
#include <sanitizer/allocator_interface.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>

#include "fuzz/fuzz_support.h"
#include "gateway/frame_decoder.h"
#include "gateway/message.h"
#include "gateway/op_table.h"

namespace {

using fuzz::Check;
using gateway::Args;
using gateway::ArgSpec;
using gateway::ArgType;
using gateway::OpSpec;
using gateway::OpTable;
using gateway::Reply;

// --- allocation accounting -----------------------------------------------------------------------

// Bytes allocated since Reset(); counted by the sanitizer allocator hooks below.
size_t g_allocated = 0;
bool g_counting = false;

void MallocHook(const volatile void*, size_t size) {
  if (g_counting) g_allocated += size;
}
void FreeHook(const volatile void*) {}

// The most DecodeRequest may allocate for a payload of `n` bytes. msgpack builds one 16-byte
// object per element (a map pair is two), each element takes at least one payload byte, and str
// and bin bodies are copied; the zone takes 8 KiB chunks, or for a bigger block 8 KiB doubled
// until it fits (less than twice the block). 64 per byte plus 64 KiB leaves room for all of that
// and still fails for an allocation sized by a count a header claims rather than by the bytes
// present. Measured on 2026-11-21 over the 820 inputs a 10-million-run corpus kept: at most 9 KiB
// beyond 64 per byte (the zone's first chunk, for a 1-byte payload); the largest total was 138 KiB,
// for a 14 KiB payload.
size_t AllocationBound(size_t n) { return 64 * n + (64u << 10); }

// --- the op table --------------------------------------------------------------------------------

// Reads every argument of `spec` through the typed getter a handler for its type would use, and
// checks the value agrees with the msgpack object.
void ReadTyped(const OpSpec& spec, const Args& args) {
  for (const ArgSpec& a : spec.args) {
    const msgpack::object* o = args.Find(a.name);
    if (a.required) Check(o != nullptr, "a required argument passed CheckArgs but is absent");
    if (o == nullptr) continue;
    switch (a.type) {
      case ArgType::kBool:
        Check(o->type == msgpack::type::BOOLEAN && args.Bool(a.name).has_value(), "bool");
        break;
      case ArgType::kInt: {
        const int64_t v = *args.Int(a.name);
        Check(o->type == msgpack::type::NEGATIVE_INTEGER ? v < 0 : v >= 0,
              "an integer argument changed sign through Args::Int");
        break;
      }
      case ArgType::kUint:
        Check(o->type == msgpack::type::POSITIVE_INTEGER && *args.Uint(a.name) == o->via.u64,
              "uint");
        break;
      case ArgType::kFloat:
        (void)*args.Float(a.name);
        break;
      case ArgType::kStr:
      case ArgType::kBin:
      case ArgType::kStrOrBin: {
        const std::string_view s = *args.Str(a.name);
        Check(s.size() == (o->type == msgpack::type::BIN ? o->via.bin.size : o->via.str.size),
              "Args::Str returned a different length");
        break;
      }
      case ArgType::kArray:
        Check(o->type == msgpack::type::ARRAY, "array");
        break;
      case ArgType::kMap:
        Check(o->type == msgpack::type::MAP, "map");
        break;
      case ArgType::kAny:
        break;
    }
  }
}

OpTable MakeTable() {
  OpTable table;
  auto handler_for = [](const std::string& name) {
    return [name](const Args& args, Reply reply) {
      // Find is safe for any name, including ones the row does not declare.
      (void)args.Find("undeclared");
      reply.Ok([&](gateway::Packer& p) { p.pack(name); });
    };
  };
  table.Add(OpSpec{"t.types",
                   {{"any", ArgType::kAny, false},
                    {"bool", ArgType::kBool, false},
                    {"int", ArgType::kInt, false},
                    {"uint", ArgType::kUint, false},
                    {"float", ArgType::kFloat, false},
                    {"str", ArgType::kStr, false},
                    {"bin", ArgType::kBin, false},
                    {"key", ArgType::kStrOrBin, false},
                    {"array", ArgType::kArray, false},
                    {"map", ArgType::kMap, false}},
                   handler_for("t.types")});
  table.Add(OpSpec{"t.required",
                   {{"key", ArgType::kStrOrBin, true},
                    {"value", ArgType::kAny, true},
                    {"timeout", ArgType::kFloat, false},
                    {"delta", ArgType::kInt, false}},
                   handler_for("t.required")});
  table.Add(OpSpec{"t.none", {}, handler_for("t.none")});
  return table;
}

const OpTable& Table() {
  static const OpTable* table = new OpTable(MakeTable());
  return *table;
}

// Collects what Dispatch answers.
class Sink : public gateway::ReplySink {
 public:
  std::string* ReplyBuffer() override { return &out; }
  void ReplyAppended(std::string_view, uint32_t status) override {
    ++replies;
    last_status = status;
  }
  std::string out;
  int replies = 0;
  uint32_t last_status = 0;
};

// Checks `frame` is one response frame [id, status, body] for `id`.
void CheckResponse(const std::string& frame, uint64_t id, uint32_t status) {
  const gateway::FrameDecoder d(UINT32_MAX);
  gateway::FrameDecoder::Outcome o = d.Decode(frame);
  Check(o.kind == gateway::FrameDecoder::Kind::kOk && o.consumed == frame.size(),
        "the reply is not exactly one frame");
  msgpack::object_handle h = msgpack::unpack(o.payload.data(), o.payload.size());
  const msgpack::object& r = h.get();
  Check(r.type == msgpack::type::ARRAY && r.via.array.size == 3, "a reply is [id, status, body]");
  Check(r.via.array.ptr[0].as<uint64_t>() == id, "the reply has another id");
  Check(r.via.array.ptr[1].as<uint32_t>() == status, "the reply has another status");
}

void CheckOneRow(const OpSpec& spec, const gateway::Request& request) {
  std::optional<std::string> problem = OpTable::CheckArgs(spec, request.args);
  if (problem.has_value()) {
    Check(!problem->empty(), "CheckArgs refused with an empty message");
    return;
  }
  ReadTyped(spec, Args(request.args));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  __sanitizer_install_malloc_and_free_hooks(MallocHook, FreeHook);
  (void)Table();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::ExactCopy payload(data, size);
  g_allocated = 0;
  g_counting = true;
  std::variant<gateway::Request, gateway::RequestError> decoded =
      gateway::DecodeRequest(payload.view());
  g_counting = false;
  if (g_allocated > AllocationBound(size)) {
    std::fprintf(stderr, "DecodeRequest allocated %zu bytes for a %zu-byte payload\n", g_allocated,
                 size);
    Check(false, "DecodeRequest allocated more than its bound");
  }

  if (auto* err = std::get_if<gateway::RequestError>(&decoded)) {
    Check(!err->message.empty(), "a RequestError without a message");
    Check(
        err->code == gateway::ErrorCode::kBadFrame || err->code == gateway::ErrorCode::kBadRequest,
        "DecodeRequest failed with a code other than bad_frame or bad_request");
    std::string frame;
    gateway::AppendError(&frame, err->id, err->code, err->message);
    CheckResponse(frame, err->id, static_cast<uint32_t>(err->code));
    return 0;
  }
  const gateway::Request& request = std::get<gateway::Request>(decoded);
  Check(request.args.type == msgpack::type::MAP, "a decoded request whose args are not a map");

  // Every row, whatever op the request names, so the schemas are exercised without the fuzzer
  // first having to guess an op name.
  for (const char* name : {"t.types", "t.required", "t.none"}) {
    CheckOneRow(*Table().Find(name), request);
  }

  auto sink = std::make_shared<Sink>();
  Table().Dispatch(request, Reply(sink, request.id, request.op));
  Check(sink->replies == 1, "Dispatch did not answer exactly once");
  CheckResponse(sink->out, request.id, sink->last_status);
  return 0;
}
