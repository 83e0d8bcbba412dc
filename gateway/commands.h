// The replica commands of the command line: restore, generations, snapshots, verify.
// Each prints to stdout (results) and stderr (progress, errors) and returns an exit code.
#pragma once

#include <optional>
#include <string>

#include "gateway/config.h"

namespace gateway {

struct RestoreFlags {
  std::string db;                   // empty: every database
  std::string output;               // -o; needs one --db
  std::optional<std::string> timestamp;
  std::optional<uint64_t> txid;
  bool if_db_not_exists = false;    // skip databases whose file exists
  bool if_replica_exists = false;   // a replica holding nothing is not an error
};

int RunRestore(const Config& config, const RestoreFlags& flags);
int RunGenerations(const Config& config, const std::string& db);
int RunSnapshots(const Config& config, const std::string& db);
int RunVerify(const Config& config);
// A readable summary of a running gateway: databases, replication, queues, cache, connections.
int RunStatus(const Config& config);

}  // namespace gateway
