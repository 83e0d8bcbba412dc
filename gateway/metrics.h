// Metrics: the server's counters, reported by the `stats` op.
//
// Threads: event loop thread only (every request and connection event happens there).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace gateway {

struct Metrics {
  // Starts a per-op counter at 0 for each known op, so unknown op names never become keys.
  explicit Metrics(const std::vector<std::string>& op_names) {
    for (const std::string& name : op_names) requests_by_op[name] = 0;
  }

  void CountReply(std::string_view op, uint32_t status, std::string_view error_code) {
    ++requests_total;
    auto it = requests_by_op.find(op);
    if (it != requests_by_op.end()) ++it->second;
    if (status != 0) {
      ++errors_total;
      ++errors_by_code[std::string(error_code)];
    }
  }

  int64_t connections_open = 0;
  uint64_t connections_total = 0;
  uint64_t connections_rejected = 0;
  uint64_t requests_total = 0;
  uint64_t errors_total = 0;
  std::map<std::string, uint64_t, std::less<>> requests_by_op;
  std::map<std::string, uint64_t, std::less<>> errors_by_code;
};

}  // namespace gateway
