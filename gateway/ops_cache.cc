#include "gateway/ops_cache.h"

#include <sys/stat.h>

#include <cmath>
#include <memory>
#include <unordered_set>

namespace gateway {
namespace {

using services::cache::CacheError;
using services::cache::CacheOp;
using services::cache::CacheValue;
using services::cache::Expiry;
using services::cache::StoredKey;

constexpr size_t kDefaultKeysLimit = 1000;
constexpr size_t kMaxKeysLimit = 10000;
constexpr size_t kAccessBatch = 256;
constexpr int64_t kAccessFlushMs = 1000;

std::string_view Bytes(const msgpack::object& o) {
  return o.type == msgpack::type::BIN ? std::string_view(o.via.bin.ptr, o.via.bin.size)
                                      : std::string_view(o.via.str.ptr, o.via.str.size);
}

bool IsKey(const msgpack::object& o) {
  return o.type == msgpack::type::STR || o.type == msgpack::type::BIN;
}

// Checks one key; on a problem answers `reply` and returns false.
bool CheckKey(std::string_view key, std::string_view what, Reply& reply) {
  if (key.empty() || key.size() > services::cache::kMaxKeyBytes) {
    reply.Error(ErrorCode::kBadArgument, std::string(what) + " must be 1 byte to 64KiB long, got " +
                                             std::to_string(key.size()) + " bytes");
    return false;
  }
  return true;
}

void PackValue(Packer& p, const CacheValue& v) {
  switch (v.kind) {
    case CacheValue::Kind::kInt:
      p.pack_int64(v.integer);
      break;
    case CacheValue::Kind::kText:
      PackStr(p, v.bytes);
      break;
    case CacheValue::Kind::kBytes:
      PackBytes(p, v.bytes);
      break;
  }
}

ErrorCode WireCode(CacheError e) {
  switch (e) {
    case CacheError::kKeyNotFound:
      return ErrorCode::kKeyNotFound;
    case CacheError::kNotInteger:
      return ErrorCode::kNotInteger;
    case CacheError::kOutOfRange:
      return ErrorCode::kOutOfRange;
    case CacheError::kStorage:
      return ErrorCode::kStorageError;
    case CacheError::kNone:
      break;
  }
  return ErrorCode::kInternal;
}

void PackFlag(Packer& p, const services::cache::CacheWriteResult& r) {
  if (r.flag) {
    p.pack_true();
  } else {
    p.pack_false();
  }
}
void PackNumber(Packer& p, const services::cache::CacheWriteResult& r) { p.pack_int64(r.number); }
void PackTrue(Packer& p, const services::cache::CacheWriteResult&) { p.pack_true(); }
void PackEmptyArray(Packer& p, const services::cache::CacheWriteResult&) { p.pack_array(0); }

int64_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

}  // namespace

CacheOps::CacheOps(uv_loop_t* loop, services::cache::CacheReader* reader,
                   services::cache::CacheWriter* writer, LoopTasks* tasks,
                   const services::Clock* clock, CacheOpsConfig config)
    : check_(new uv_check_t),
      idle_(new uv_idle_t),
      reader_(reader),
      writer_(writer),
      tasks_(tasks),
      clock_(clock),
      config_(std::move(config)) {
  uv_check_init(loop, check_);
  uv_idle_init(loop, idle_);
  check_->data = this;
}

CacheOps::~CacheOps() { Close(); }

void CacheOps::Close() {
  if (closed_) return;
  closed_ = true;
  // Nothing gathered may be dropped: what is left goes the slow way.
  for (size_t i = 0; i < gathered_.size(); ++i) {
    SubmitToThread(std::move(gathered_writes_[i]), std::move(gathered_[i].reply),
                   gathered_[i].pack);
  }
  gathered_writes_.clear();
  gathered_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(check_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
  uv_close(reinterpret_cast<uv_handle_t*>(idle_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
}

void CacheOps::Register(OpTable* table) {
  const ArgSpec key{"key", ArgType::kStrOrBin, true};
  const ArgSpec value{"value", ArgType::kAny, true};
  const ArgSpec timeout{"timeout", ArgType::kFloat, false};
  const ArgSpec cull{"cull", ArgType::kArray, false};
  auto write = [this](CacheOp op, PackResult pack) {
    return [this, op, pack](const Args& args, Reply reply) {
      CacheWrite w;
      if (!DecodeWrite(op, args, reply, &w)) return;
      Submit(std::move(w), std::move(reply), pack);
    };
  };
  table->Add({"cache.get", {key}, [this](const Args& a, Reply r) { Get(a, std::move(r)); }});
  table->Add({"cache.get_many", {{"keys", ArgType::kArray, true}}, [this](const Args& a, Reply r) {
                GetMany(a, std::move(r));
              }});
  table->Add({"cache.has_key", {key}, [this](const Args& a, Reply r) { HasKey(a, std::move(r)); }});
  table->Add({"cache.ttl", {key}, [this](const Args& a, Reply r) { Ttl(a, std::move(r)); }});
  table->Add({"cache.keys",
              {{"prefix", ArgType::kStrOrBin, false},
               {"after", ArgType::kStrOrBin, false},
               {"limit", ArgType::kUint, false}},
              [this](const Args& a, Reply r) { Keys(a, std::move(r)); }});
  table->Add({"cache.stats", {}, [this](const Args&, Reply r) { Stats(std::move(r)); }});
  table->Add({"cache.set", {key, value, timeout, cull}, write(CacheOp::kSet, PackTrue)});
  table->Add({"cache.set_many",
              {{"items", ArgType::kMap, true}, timeout, cull},
              write(CacheOp::kSetMany, PackEmptyArray)});
  table->Add({"cache.add", {key, value, timeout, cull}, write(CacheOp::kAdd, PackFlag)});
  table->Add({"cache.touch", {key, timeout}, write(CacheOp::kTouch, PackFlag)});
  table->Add({"cache.expire", {key, timeout}, write(CacheOp::kExpire, PackFlag)});
  table->Add({"cache.persist", {key}, write(CacheOp::kPersist, PackFlag)});
  table->Add({"cache.delete", {key}, write(CacheOp::kDelete, PackFlag)});
  table->Add({"cache.delete_many",
              {{"keys", ArgType::kArray, true}},
              write(CacheOp::kDeleteMany, PackNumber)});
  table->Add(
      {"cache.incr", {key, {"delta", ArgType::kInt, true}}, write(CacheOp::kIncr, PackNumber)});
  const ArgSpec prefix{"prefix", ArgType::kStrOrBin, true};
  table->Add({"cache.clear", {prefix}, write(CacheOp::kClearPrefix, PackNumber)});
  table->Add({"cache.delete_prefix", {prefix}, write(CacheOp::kClearPrefix, PackNumber)});
  table->Add({"cache.clear_all", {}, write(CacheOp::kClearAll, PackNumber)});
  const ArgSpec token{"token", ArgType::kStrOrBin, true};
  table->Add({"cache.lock",
              {key, token, {"timeout", ArgType::kFloat, true}},
              write(CacheOp::kLock, PackFlag)});
  table->Add({"cache.unlock", {key, token}, write(CacheOp::kUnlock, PackFlag)});
}

bool CacheOps::DecodeWrite(CacheOp op, const Args& args, Reply& reply, CacheWrite* w) {
  w->op = op;
  const int64_t now = NowMs();
  if (const msgpack::object* k = args.Find("key")) {
    if (!CheckKey(Bytes(*k), "key", reply)) return false;
    w->key = StoredKey::From(Bytes(*k));
  }
  auto decode_value = [&](const msgpack::object& o, CacheValue* out) {
    switch (o.type) {
      case msgpack::type::BIN:
      case msgpack::type::STR: {
        const std::string_view b = Bytes(o);
        if (static_cast<int64_t>(b.size()) > config_.max_value_size) {
          reply.Error(ErrorCode::kValueTooLarge, "value of " + std::to_string(b.size()) +
                                                     " bytes is over the limit of " +
                                                     std::to_string(config_.max_value_size) +
                                                     " bytes ([databases.cache] max_value_size)");
          return false;
        }
        *out = o.type == msgpack::type::BIN ? CacheValue::Bytes(std::string(b))
                                            : CacheValue::Text(std::string(b));
        return true;
      }
      case msgpack::type::POSITIVE_INTEGER:
        if (o.via.u64 > static_cast<uint64_t>(INT64_MAX)) break;
        *out = CacheValue::Int(static_cast<int64_t>(o.via.u64));
        return true;
      case msgpack::type::NEGATIVE_INTEGER:
        *out = CacheValue::Int(o.via.i64);
        return true;
      default:
        break;
    }
    reply.Error(ErrorCode::kBadArgument,
                "a cache value must be bin, str or a signed 64-bit integer; pickle other values");
    return false;
  };
  if (const msgpack::object* v = args.Find("value")) {
    if (!decode_value(*v, &w->value)) return false;
  } else if (op == CacheOp::kSet || op == CacheOp::kAdd) {
    reply.Error(ErrorCode::kBadArgument, "argument 'value' must not be nil");
    return false;
  }
  if (const msgpack::object* t = args.Find("token")) {
    w->value = CacheValue::Bytes(std::string(Bytes(*t)));
  }
  if (std::optional<double> timeout = args.Float("timeout")) {
    if (std::isnan(*timeout)) {
      reply.Error(ErrorCode::kBadArgument, "'timeout' is NaN; give seconds, or nil for never");
      return false;
    }
    if (std::isinf(*timeout) && *timeout > 0) {
      w->expiry = Expiry::Never();
    } else {
      w->expiry = Expiry::After(*timeout, now);
    }
    if ((op == CacheOp::kLock) && !(*timeout > 0)) {
      reply.Error(ErrorCode::kBadArgument, "a lock timeout must be more than 0 seconds");
      return false;
    }
  }
  if (const msgpack::object* items = args.Find("items")) {
    const msgpack::object_map& m = items->via.map;
    w->items.reserve(m.size);
    for (uint32_t i = 0; i < m.size; ++i) {
      if (!IsKey(m.ptr[i].key)) {
        reply.Error(ErrorCode::kBadArgument, "keys of 'items' must be str or bin");
        return false;
      }
      if (!CheckKey(Bytes(m.ptr[i].key), "a key of 'items'", reply)) return false;
      CacheValue value;
      if (!decode_value(m.ptr[i].val, &value)) return false;
      w->items.emplace_back(StoredKey::From(Bytes(m.ptr[i].key)), std::move(value));
    }
  }
  if (const msgpack::object* keys = args.Find("keys")) {
    const msgpack::object_array& a = keys->via.array;
    w->keys.reserve(a.size);
    for (uint32_t i = 0; i < a.size; ++i) {
      if (!IsKey(a.ptr[i])) {
        reply.Error(ErrorCode::kBadArgument, "'keys' must hold only str or bin keys");
        return false;
      }
      if (!CheckKey(Bytes(a.ptr[i]), "a key of 'keys'", reply)) return false;
      w->keys.push_back(StoredKey::From(Bytes(a.ptr[i])));
    }
  }
  if (std::optional<int64_t> delta = args.Int("delta")) w->delta = *delta;
  if (std::optional<std::string_view> prefix = args.Str("prefix")) {
    if (prefix->empty()) {
      reply.Error(ErrorCode::kBadArgument,
                  "'prefix' must not be empty; use cache.clear_all to remove everything");
      return false;
    }
    w->prefix.assign(*prefix);
  }
  if (const msgpack::object* cull = args.Find("cull")) {
    const msgpack::object_array& a = cull->via.array;
    if (a.size != 2 || a.ptr[0].type != msgpack::type::POSITIVE_INTEGER ||
        a.ptr[1].type != msgpack::type::POSITIVE_INTEGER) {
      reply.Error(ErrorCode::kBadArgument,
                  "'cull' must be [max_entries, cull_frequency], two unsigned integers");
      return false;
    }
    w->cull.emplace(static_cast<int64_t>(a.ptr[0].via.u64), static_cast<int64_t>(a.ptr[1].via.u64));
  }
  return true;
}

void CacheOps::Submit(CacheWrite write, Reply reply, PackResult pack) {
  if (closed_) {
    SubmitToThread(std::move(write), std::move(reply), pack);
    return;
  }
  if (gathered_.empty()) {
    uv_check_start(check_, OnCheck);
    uv_idle_start(idle_, [](uv_idle_t*) {});
  }
  gathered_writes_.push_back(std::move(write));
  gathered_.push_back(Gathered{std::move(reply), pack});
}

void CacheOps::OnCheck(uv_check_t* handle) { static_cast<CacheOps*>(handle->data)->Flush(); }

void CacheOps::Flush() {
  uv_check_stop(check_);
  uv_idle_stop(idle_);
  std::vector<CacheWrite> writes;
  std::vector<Gathered> replies;
  writes.swap(gathered_writes_);
  replies.swap(gathered_);
  if (writes.empty()) return;
  std::optional<std::vector<CacheWriteResult>> results = writer_->TryApplyNow(writes);
  if (!results) {
    for (size_t i = 0; i < writes.size(); ++i) {
      SubmitToThread(std::move(writes[i]), std::move(replies[i].reply), replies[i].pack);
    }
    return;
  }
  for (size_t i = 0; i < replies.size(); ++i) {
    const CacheWriteResult& result = (*results)[i];
    if (result.error != CacheError::kNone) {
      replies[i].reply.Error(WireCode(result.error), result.message);
    } else {
      replies[i].reply.Ok([&](Packer& p) { replies[i].pack(p, result); });
    }
  }
}

void CacheOps::SubmitToThread(CacheWrite write, Reply reply, PackResult pack) {
  // The writer's completion runs on its thread; the Reply may only be completed on the loop.
  auto shared = std::make_shared<Reply>(std::move(reply));
  LoopTasks* tasks = tasks_;
  writer_->Submit(std::move(write), [tasks, shared, pack](CacheWriteResult result) {
    tasks->Post([shared, pack, result = std::move(result)] {
      if (result.error != CacheError::kNone) {
        shared->Error(WireCode(result.error), result.message);
      } else {
        shared->Ok([&](Packer& p) { pack(p, result); });
      }
    });
  });
}

void CacheOps::NoteRead(const std::string& stored_key, bool hit) {
  hit ? ++hits_ : ++misses_;
  if (!config_.lru || !hit) return;
  const int64_t now = NowMs();
  if (accessed_.empty()) accessed_since_ms_ = now;
  accessed_.push_back(stored_key);
  if (accessed_.size() >= kAccessBatch || now - accessed_since_ms_ >= kAccessFlushMs) {
    writer_->RecordAccess(std::move(accessed_), now);
    accessed_.clear();
  }
}

void CacheOps::Get(const Args& args, Reply reply) {
  const std::string_view key = *args.Str("key");
  if (!CheckKey(key, "key", reply)) return;
  const StoredKey stored = StoredKey::From(key);
  auto value = reader_->Get(stored, NowMs());
  if (!value.ok()) {
    reply.Error(ErrorCode::kStorageError, value.status().ToString());
    return;
  }
  NoteRead(stored.key, value->has_value());
  reply.Ok([&](Packer& p) {
    if (value->has_value()) {
      PackValue(p, **value);
    } else {
      p.pack_nil();
    }
  });
}

void CacheOps::GetMany(const Args& args, Reply reply) {
  const msgpack::object_array& keys = args.Find("keys")->via.array;
  std::vector<std::pair<std::string_view, CacheValue>> found;
  std::unordered_set<std::string_view> seen;
  const int64_t now = NowMs();
  for (uint32_t i = 0; i < keys.size; ++i) {
    if (!IsKey(keys.ptr[i])) {
      reply.Error(ErrorCode::kBadArgument, "'keys' must hold only str or bin keys");
      return;
    }
    const std::string_view key = Bytes(keys.ptr[i]);
    if (!CheckKey(key, "a key of 'keys'", reply)) return;
    if (!seen.insert(key).second) continue;
    const StoredKey stored = StoredKey::From(key);
    auto value = reader_->Get(stored, now);
    if (!value.ok()) {
      reply.Error(ErrorCode::kStorageError, value.status().ToString());
      return;
    }
    NoteRead(stored.key, value->has_value());
    if (value->has_value()) found.emplace_back(key, std::move(**value));
  }
  reply.Ok([&](Packer& p) {
    p.pack_map(static_cast<uint32_t>(found.size()));
    for (const auto& [key, value] : found) {
      PackBytes(p, key);
      PackValue(p, value);
    }
  });
}

void CacheOps::HasKey(const Args& args, Reply reply) {
  const std::string_view key = *args.Str("key");
  if (!CheckKey(key, "key", reply)) return;
  auto has = reader_->Has(StoredKey::From(key), NowMs());
  if (!has.ok()) {
    reply.Error(ErrorCode::kStorageError, has.status().ToString());
    return;
  }
  reply.Ok([&](Packer& p) { *has ? p.pack_true() : p.pack_false(); });
}

void CacheOps::Ttl(const Args& args, Reply reply) {
  const std::string_view key = *args.Str("key");
  if (!CheckKey(key, "key", reply)) return;
  const int64_t now = NowMs();
  auto ttl = reader_->Ttl(StoredKey::From(key), now);
  if (!ttl.ok()) {
    reply.Error(ErrorCode::kStorageError, ttl.status().ToString());
    return;
  }
  reply.Ok([&](Packer& p) {
    if (!ttl->exists) {
      p.pack_false();
    } else if (!ttl->expires_at_ms) {
      p.pack_nil();
    } else {
      PackFloat64(p, static_cast<double>(*ttl->expires_at_ms - now) / 1000.0);
    }
  });
}

void CacheOps::Keys(const Args& args, Reply reply) {
  const std::string_view prefix = args.Str("prefix").value_or(std::string_view());
  std::optional<std::string> after;
  if (std::optional<std::string_view> a = args.Str("after")) after.emplace(*a);
  const uint64_t limit = args.Uint("limit").value_or(kDefaultKeysLimit);
  if (limit == 0 || limit > kMaxKeysLimit) {
    reply.Error(ErrorCode::kBadArgument, "'limit' must be 1 to " + std::to_string(kMaxKeysLimit));
    return;
  }
  auto page = reader_->Keys(prefix, after, limit, NowMs());
  if (!page.ok()) {
    reply.Error(ErrorCode::kStorageError, page.status().ToString());
    return;
  }
  reply.Ok([&](Packer& p) {
    p.pack_map(2);
    PackStr(p, "keys");
    p.pack_array(static_cast<uint32_t>(page->keys.size()));
    for (const std::string& k : page->keys) PackBytes(p, k);
    PackStr(p, "next");
    if (page->next) {
      PackBytes(p, *page->next);
    } else {
      p.pack_nil();
    }
  });
}

CacheOps::Counters CacheOps::Snapshot() const {
  return {hits_, misses_, writer_->Counters(), FileSize(config_.path)};
}

void CacheOps::Stats(Reply reply) {
  const services::cache::CacheCounters c = writer_->Counters();
  const std::pair<const char*, int64_t> fields[] = {
      {"hits", static_cast<int64_t>(hits_)},
      {"misses", static_cast<int64_t>(misses_)},
      {"entries", c.entries},
      {"bytes", c.bytes},
      {"evictions", c.evictions},
      {"expirations", c.expirations},
      {"max_size", config_.max_size},
      {"max_entries", config_.max_entries},
      {"file_bytes", FileSize(config_.path)},
  };
  reply.Ok([&](Packer& p) {
    p.pack_map(static_cast<uint32_t>(std::size(fields)));
    for (const auto& [name, n] : fields) {
      PackStr(p, name);
      p.pack_int64(n);
    }
  });
}

}  // namespace gateway
