#include "common/units.h"

#include <cctype>
#include <cstdio>
#include <limits>

namespace tapmap {

Result<uint64_t> ParseSize(std::string_view text) {
  auto bad = [&](const char* why) {
    return Status::InvalidArgument("bad size '" + std::string(text) + "': " + why);
  };
  if (text.empty()) return bad("empty");
  size_t i = 0;
  uint64_t value = 0;
  if (!std::isdigit(static_cast<unsigned char>(text[0]))) return bad("must start with a digit");
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) return bad("too large");
    value = value * 10 + digit;
    ++i;
  }
  std::string suffix;
  for (; i < text.size(); ++i) suffix += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  uint64_t mult = 1;
  if (suffix.empty() || suffix == "b") {
    mult = 1;
  } else if (suffix == "k" || suffix == "kb" || suffix == "kib") {
    mult = kKiB;
  } else if (suffix == "m" || suffix == "mb" || suffix == "mib") {
    mult = kMiB;
  } else if (suffix == "g" || suffix == "gb" || suffix == "gib") {
    mult = kGiB;
  } else if (suffix == "t" || suffix == "tb" || suffix == "tib") {
    mult = kTiB;
  } else {
    return bad("unknown unit (use K, M, G or T)");
  }
  if (value > std::numeric_limits<uint64_t>::max() / mult) return bad("too large");
  return value * mult;
}

std::string FormatSize(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int unit = 0;
  double v = static_cast<double>(bytes);
  while (v >= 1024.0 && unit < 5) {
    v /= 1024.0;
    ++unit;
  }
  char buf[32];
  if (unit == 0 || v == static_cast<double>(static_cast<uint64_t>(v))) {
    std::snprintf(buf, sizeof(buf), "%llu %s", static_cast<unsigned long long>(v), kUnits[unit]);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", v, kUnits[unit]);
  }
  return buf;
}

}  // namespace tapmap
