// The core ops every server has: hello, ping, stats (PROTOCOL.md "Operations").
#pragma once

#include <cstdint>
#include <functional>

#include "gateway/metrics.h"
#include "gateway/op_table.h"
#include "services/clock.h"
#include "services/databases.h"

namespace gateway {

inline constexpr uint64_t kProtocolVersion = 1;

// What the core ops read. Pointers must outlive the table; all reads happen on the loop thread.
struct CoreOpsEnv {
  const OpTable* table = nullptr;  // for hello's feature list
  const Metrics* metrics = nullptr;
  const services::Databases* databases = nullptr;
  const services::Clock* clock = nullptr;
  int64_t started_mono_us = 0;
  uint32_t max_frame_size = 0;
};

void AddCoreOps(OpTable* table, const CoreOpsEnv* env);

}  // namespace gateway
