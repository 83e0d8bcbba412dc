#include "gateway/op_table.h"

#include <cstdio>
#include <cstdlib>

namespace gateway {
namespace {

std::string_view Key(const msgpack::object& o) {
  return std::string_view(o.via.str.ptr, o.via.str.size);
}

bool Fits(ArgType type, const msgpack::object& v) {
  using msgpack::type::object_type;
  switch (type) {
    case ArgType::kAny:
      return true;
    case ArgType::kBool:
      return v.type == msgpack::type::BOOLEAN;
    case ArgType::kInt:
      return v.type == msgpack::type::NEGATIVE_INTEGER ||
             (v.type == msgpack::type::POSITIVE_INTEGER && v.via.u64 <= INT64_MAX);
    case ArgType::kUint:
      return v.type == msgpack::type::POSITIVE_INTEGER;
    case ArgType::kFloat:
      return v.type == msgpack::type::FLOAT32 || v.type == msgpack::type::FLOAT64 ||
             v.type == msgpack::type::POSITIVE_INTEGER || v.type == msgpack::type::NEGATIVE_INTEGER;
    case ArgType::kStr:
      return v.type == msgpack::type::STR;
    case ArgType::kBin:
      return v.type == msgpack::type::BIN;
    case ArgType::kStrOrBin:
      return v.type == msgpack::type::STR || v.type == msgpack::type::BIN;
    case ArgType::kArray:
      return v.type == msgpack::type::ARRAY;
    case ArgType::kMap:
      return v.type == msgpack::type::MAP;
  }
  return false;
}

}  // namespace

std::string_view ArgTypeName(ArgType type) {
  switch (type) {
    case ArgType::kAny:
      return "any value";
    case ArgType::kBool:
      return "bool";
    case ArgType::kInt:
      return "integer";
    case ArgType::kUint:
      return "unsigned integer";
    case ArgType::kFloat:
      return "number";
    case ArgType::kStr:
      return "str";
    case ArgType::kBin:
      return "bin";
    case ArgType::kStrOrBin:
      return "str or bin";
    case ArgType::kArray:
      return "array";
    case ArgType::kMap:
      return "map";
  }
  return "?";
}

const msgpack::object* Args::Find(std::string_view name) const {
  const msgpack::object_map& m = map_.via.map;
  for (uint32_t i = 0; i < m.size; ++i) {
    if (m.ptr[i].key.type == msgpack::type::STR && Key(m.ptr[i].key) == name) {
      if (m.ptr[i].val.type == msgpack::type::NIL) return nullptr;
      return &m.ptr[i].val;
    }
  }
  return nullptr;
}

std::optional<int64_t> Args::Int(std::string_view name) const {
  const msgpack::object* v = Find(name);
  if (v == nullptr) return std::nullopt;
  if (v->type == msgpack::type::NEGATIVE_INTEGER) return v->via.i64;
  return static_cast<int64_t>(v->via.u64);
}

std::optional<uint64_t> Args::Uint(std::string_view name) const {
  const msgpack::object* v = Find(name);
  if (v == nullptr) return std::nullopt;
  return v->via.u64;
}

std::optional<double> Args::Float(std::string_view name) const {
  const msgpack::object* v = Find(name);
  if (v == nullptr) return std::nullopt;
  switch (v->type) {
    case msgpack::type::POSITIVE_INTEGER:
      return static_cast<double>(v->via.u64);
    case msgpack::type::NEGATIVE_INTEGER:
      return static_cast<double>(v->via.i64);
    default:
      return v->via.f64;
  }
}

std::optional<bool> Args::Bool(std::string_view name) const {
  const msgpack::object* v = Find(name);
  if (v == nullptr) return std::nullopt;
  return v->via.boolean;
}

std::optional<std::string_view> Args::Str(std::string_view name) const {
  const msgpack::object* v = Find(name);
  if (v == nullptr) return std::nullopt;
  if (v->type == msgpack::type::BIN) return std::string_view(v->via.bin.ptr, v->via.bin.size);
  return std::string_view(v->via.str.ptr, v->via.str.size);
}

void OpTable::Add(OpSpec spec) {
  std::string name = spec.name;
  if (!ops_.emplace(name, std::move(spec)).second) {
    std::fprintf(stderr, "gateway: op %s registered twice\n", name.c_str());
    std::abort();
  }
}

const OpSpec* OpTable::Find(std::string_view name) const {
  auto it = ops_.find(name);
  return it == ops_.end() ? nullptr : &it->second;
}

std::vector<std::string> OpTable::Names() const {
  std::vector<std::string> names;
  names.reserve(ops_.size());
  for (const auto& [name, spec] : ops_) names.push_back(name);
  return names;
}

std::optional<std::string> OpTable::CheckArgs(const OpSpec& spec, const msgpack::object& args) {
  const msgpack::object_map& m = args.via.map;
  for (uint32_t i = 0; i < m.size; ++i) {
    const msgpack::object& k = m.ptr[i].key;
    if (k.type != msgpack::type::STR) return "argument names must be str";
    const ArgSpec* found = nullptr;
    for (const ArgSpec& a : spec.args) {
      if (a.name == Key(k)) found = &a;
    }
    if (found == nullptr) {
      std::string known;
      for (const ArgSpec& a : spec.args) known += (known.empty() ? "" : ", ") + a.name;
      return "op " + spec.name + " takes no argument '" + std::string(Key(k)) + "'" +
             (known.empty() ? std::string("; it takes none") : "; it takes: " + known);
    }
    for (uint32_t j = 0; j < i; ++j) {
      if (m.ptr[j].key.type == msgpack::type::STR && Key(m.ptr[j].key) == Key(k)) {
        return "argument '" + std::string(Key(k)) + "' is given twice";
      }
    }
    const msgpack::object& v = m.ptr[i].val;
    if (v.type != msgpack::type::NIL && !Fits(found->type, v)) {
      return "argument '" + found->name + "' of " + spec.name + " must be " +
             std::string(ArgTypeName(found->type));
    }
  }
  Args view(args);
  for (const ArgSpec& a : spec.args) {
    if (a.required && view.Find(a.name) == nullptr) {
      return "op " + spec.name + " needs argument '" + a.name + "' (" +
             std::string(ArgTypeName(a.type)) + ")";
    }
  }
  return std::nullopt;
}

void OpTable::Dispatch(const Request& request, Reply reply) const {
  const OpSpec* spec = Find(request.op);
  if (spec == nullptr) {
    reply.Error(ErrorCode::kUnknownOp,
                "unknown op '" + request.op + "'; hello lists this server's ops in 'features'");
    return;
  }
  if (std::optional<std::string> problem = CheckArgs(*spec, request.args)) {
    reply.Error(ErrorCode::kBadArgument, *problem);
    return;
  }
  spec->handler(Args(request.args), std::move(reply));
}

}  // namespace gateway
