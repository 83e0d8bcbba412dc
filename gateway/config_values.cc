#include "gateway/config_values.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>

namespace gateway {
namespace {

using services::Result;
using services::Status;

// Splits "1.5GiB" into 1.5 and "GiB". Fails when there is no leading number.
bool SplitNumber(std::string_view text, double* number, std::string_view* unit) {
  size_t i = 0;
  bool digits = false;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) {
    digits |= text[i] != '.';
    ++i;
  }
  if (!digits) return false;
  std::string num(text.substr(0, i));
  char* end = nullptr;
  *number = std::strtod(num.c_str(), &end);
  if (end != num.c_str() + num.size()) return false;
  *unit = text.substr(i);
  while (!unit->empty() && unit->front() == ' ') unit->remove_prefix(1);
  return true;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

Result<int64_t> ParseSize(std::string_view text) {
  const std::string bad = "size '" + std::string(text) +
                          "' is not a number of bytes with an optional unit; write e.g. 512, "
                          "64KiB, 128MiB, 1GiB or 10MB";
  double number = 0;
  std::string_view unit;
  if (!SplitNumber(text, &number, &unit)) return Status::InvalidArgument(bad);
  const std::string u = Lower(unit);
  double scale = 0;
  if (u.empty() || u == "b")
    scale = 1;
  else if (u == "kb")
    scale = 1e3;
  else if (u == "mb")
    scale = 1e6;
  else if (u == "gb")
    scale = 1e9;
  else if (u == "tb")
    scale = 1e12;
  else if (u == "kib" || u == "k")
    scale = 1024.0;
  else if (u == "mib" || u == "m")
    scale = 1024.0 * 1024;
  else if (u == "gib" || u == "g")
    scale = 1024.0 * 1024 * 1024;
  else if (u == "tib" || u == "t")
    scale = 1024.0 * 1024 * 1024 * 1024;
  else
    return Status::InvalidArgument(bad);
  const double bytes = number * scale;
  if (bytes > 9.0e18)
    return Status::InvalidArgument("size '" + std::string(text) + "' is too large");
  if (bytes != std::floor(bytes)) {
    return Status::InvalidArgument("size '" + std::string(text) +
                                   "' is not a whole number of bytes");
  }
  return static_cast<int64_t>(bytes);
}

Result<int64_t> ParseDurationMs(std::string_view text) {
  const std::string bad = "duration '" + std::string(text) +
                          "' is not understood; write e.g. 250ms, 1s, 1.5s, 10m, 6h, 7d or 1h30m";
  if (text.empty()) return Status::InvalidArgument(bad);
  double total = 0;
  std::string_view rest = text;
  while (!rest.empty()) {
    double number = 0;
    std::string_view unit;
    if (!SplitNumber(rest, &number, &unit)) return Status::InvalidArgument(bad);
    size_t n = 0;
    while (n < unit.size() && std::isalpha(static_cast<unsigned char>(unit[n]))) ++n;
    const std::string u = Lower(unit.substr(0, n));
    double scale = 0;
    if (u == "ms")
      scale = 1;
    else if (u == "s")
      scale = 1000;
    else if (u == "m")
      scale = 60'000;
    else if (u == "h")
      scale = 3'600'000;
    else if (u == "d")
      scale = 86'400'000;
    else
      return Status::InvalidArgument(bad);
    total += number * scale;
    rest = unit.substr(n);
  }
  if (total > 9.0e15)
    return Status::InvalidArgument("duration '" + std::string(text) + "' is too long");
  return static_cast<int64_t>(std::llround(total));
}

Result<uint32_t> ParseFileMode(std::string_view text) {
  const std::string bad = "file mode '" + std::string(text) +
                          "' is not octal permission bits; write e.g. \"0660\" or \"0600\"";
  if (text.empty() || text.size() > 4) return Status::InvalidArgument(bad);
  uint32_t mode = 0;
  for (char c : text) {
    if (c < '0' || c > '7') return Status::InvalidArgument(bad);
    mode = mode * 8 + static_cast<uint32_t>(c - '0');
  }
  if (mode > 0777) return Status::InvalidArgument(bad);
  return mode;
}

Result<std::string> ExpandEnv(std::string_view text, const EnvLookup& lookup) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '$') {
      out += text[i];
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '$') {
      out += '$';
      ++i;
      continue;
    }
    if (i + 1 >= text.size() || text[i + 1] != '{') {
      out += '$';
      continue;
    }
    size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      return Status::InvalidArgument("'${' without a closing '}' in \"" + std::string(text) +
                                     "\"; write ${NAME}, or $$ for a literal $");
    }
    std::string name(text.substr(i + 2, close - i - 2));
    if (name.empty()) return Status::InvalidArgument("empty ${} in \"" + std::string(text) + "\"");
    std::optional<std::string> value = lookup(name);
    if (!value) {
      return Status::InvalidArgument("environment variable " + name +
                                     " is not set; export it or change the config");
    }
    out += *value;
    i = close;
  }
  return out;
}

std::optional<std::string> ProcessEnv(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

std::string FormatSize(int64_t bytes) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  std::string unit = "B";
  int64_t value = bytes;
  for (const char* u : kUnits) {
    if (value == 0 || value % 1024 != 0) break;
    value /= 1024;
    unit = u;
  }
  return std::to_string(value) + unit;
}

std::string FormatDurationMs(int64_t ms) {
  struct Unit {
    int64_t ms;
    const char* name;
  } static const kUnits[] = {{86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1000, "s"}};
  for (const Unit& u : kUnits) {
    if (ms != 0 && ms % u.ms == 0) return std::to_string(ms / u.ms) + u.name;
  }
  return std::to_string(ms) + "ms";
}

}  // namespace gateway
