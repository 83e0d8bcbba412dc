// Parsers for the value syntaxes the config file uses: sizes ("128MiB"), durations ("1s", "6h"),
// file modes ("0660") and ${VAR} expansion. Pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "services/status.h"

namespace gateway {

// "512", "64KiB", "128MiB", "1GiB", "10MB" (decimal: 1 MB = 1,000,000 B), "1.5GiB". Units are
// B, KB/MB/GB/TB (powers of 1000) and KiB/MiB/GiB/TiB (powers of 1024); case matters for the "i"
// only, so "mib" is also accepted. Errors say what the accepted forms are.
services::Result<int64_t> ParseSize(std::string_view text);

// "250ms", "1s", "1.5s", "10m", "6h", "7d", and sums such as "1h30m". Result in milliseconds.
services::Result<int64_t> ParseDurationMs(std::string_view text);

// "0660" or "660" (octal permission bits, at most 0777).
services::Result<uint32_t> ParseFileMode(std::string_view text);

// Replaces ${NAME} with lookup(NAME); "$$" is a literal "$". An unset variable is an error naming
// it. Lookup returns nullopt for unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
services::Result<std::string> ExpandEnv(std::string_view text, const EnvLookup& lookup);

// Looks up the process environment.
std::optional<std::string> ProcessEnv(const std::string& name);

// 134217728 -> "128MiB"; 1500 -> "1500B"; used to print the effective config.
std::string FormatSize(int64_t bytes);
// 3600000 -> "1h"; 1500 -> "1500ms".
std::string FormatDurationMs(int64_t ms);

}  // namespace gateway
