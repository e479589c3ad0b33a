// Tolerant readers of fields in JSON documents received from a daemon: a missing or
// mistyped field yields the fallback instead of throwing, so that a newer or older
// daemon never crashes the CLI (the raw document is still what --json prints).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace tapmap::cli {

template <typename J>
std::string JsonString(const J& obj, const char* key, std::string fallback = "") {
  if (!obj.is_object()) return fallback;
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return fallback;
  return it->template get<std::string>();
}

template <typename J>
uint64_t JsonUint(const J& obj, const char* key, uint64_t fallback = 0) {
  if (!obj.is_object()) return fallback;
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number_unsigned()) {
    if (it != obj.end() && it->is_number_integer() && it->template get<int64_t>() >= 0) {
      return static_cast<uint64_t>(it->template get<int64_t>());
    }
    return fallback;
  }
  return it->template get<uint64_t>();
}

template <typename J>
bool JsonBool(const J& obj, const char* key, bool fallback = false) {
  if (!obj.is_object()) return fallback;
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_boolean()) return fallback;
  return it->template get<bool>();
}

}  // namespace tapmap::cli
