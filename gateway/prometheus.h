// PromText: builds Prometheus text exposition format (version 0.0.4): one HELP and TYPE line per
// metric family, then its samples, with label values escaped.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace gateway {

class PromText {
 public:
  using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

  // Starts a family; call once per name, before its samples.
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, Labels labels, double value);
  void Sample(std::string_view name, double value) { Sample(name, {}, value); }
  const std::string& text() const { return out_; }

 private:
  std::string out_;
};

}  // namespace gateway
