// OpTable: every operation the server offers, one row each (name, argument schema, handler), and
// the dispatch that checks a request against its row before the handler sees it.
//
// Handlers are op glue: they read typed arguments from Args, call a service, and pack the result
// into their Reply. Args point into the request's memory and are valid only during the handler
// call; a handler that answers later copies what it needs.
//
// Threads: build the table before the server starts; Dispatch runs on the event loop thread.
#pragma once

#include <functional>
#include <map>
#include <msgpack.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/message.h"
#include "gateway/reply.h"

namespace gateway {

enum class ArgType {
  kAny,
  kBool,
  kInt,    // any integer (msgpack uint or int)
  kUint,   // a non-negative integer
  kFloat,  // a float or an integer
  kStr,
  kBin,
  kStrOrBin,
  kArray,
  kMap,
};
std::string_view ArgTypeName(ArgType type);

struct ArgSpec {
  std::string name;
  ArgType type = ArgType::kAny;
  bool required = false;
};

// The validated arguments of one request.
class Args {
 public:
  explicit Args(const msgpack::object& map) : map_(map) {}

  // nullptr when absent (or nil). Types were checked by dispatch, so the typed getters below only
  // return nullopt for absent arguments.
  const msgpack::object* Find(std::string_view name) const;
  std::optional<int64_t> Int(std::string_view name) const;
  std::optional<uint64_t> Uint(std::string_view name) const;
  std::optional<double> Float(std::string_view name) const;
  std::optional<bool> Bool(std::string_view name) const;
  std::optional<std::string_view> Str(std::string_view name) const;  // str or bin bytes

 private:
  const msgpack::object& map_;
};

using OpHandler = std::function<void(const Args& args, Reply reply)>;

struct OpSpec {
  std::string name;
  std::vector<ArgSpec> args;
  OpHandler handler;
};

class OpTable {
 public:
  // Adds a row. A second row with the same name replaces nothing: it is a programming error and
  // aborts, because two handlers for one op would be a silent bug.
  void Add(OpSpec spec);

  const OpSpec* Find(std::string_view name) const;
  // Sorted op names, as `hello` reports them.
  std::vector<std::string> Names() const;

  // Answers unknown ops and bad arguments itself; otherwise calls the row's handler.
  void Dispatch(const Request& request, Reply reply) const;

  // The problem with `args` for `spec`, or nullopt when they fit: a missing required argument,
  // an argument the op does not take, or one of the wrong type, each named.
  static std::optional<std::string> CheckArgs(const OpSpec& spec, const msgpack::object& args);

 private:
  std::map<std::string, OpSpec, std::less<>> ops_;
};

}  // namespace gateway
