#include "tapdisk-map/nbd/refusal_log.h"

#include <algorithm>
#include <cstdio>

namespace tapmap::nbd {

std::string PrintableText(std::string_view text, size_t max_bytes) {
  std::string out;
  const size_t n = std::min(text.size(), max_bytes);
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char escaped[5];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", c);
      out += escaped;
    }
  }
  if (text.size() > max_bytes) out += "...";
  return out;
}

std::string QuotedExportName(std::string_view name) {
  std::string quoted = "'";
  for (char c : PrintableText(name)) {
    if (c == '\'') {
      quoted += "\\x27";
    } else {
      quoted += c;
    }
  }
  quoted += '\'';
  return quoted;
}

void RefusalLog::Refused(const Logger& log, std::string_view option, std::string_view name, const Status& status) {
  refused_++;
  uint64_t unreported = 0;
  if (!limiter_.Allow(&unreported)) {
    suppressed_++;
    return;
  }
  std::string line = "refused " + std::string(option) + " of export " + QuotedExportName(name) + ": " +
                     PrintableText(status.ToString(), 1024);
  if (unreported > 0) line += " (" + std::to_string(unreported) + " earlier refusals not logged: rate limit)";
  log.Warnf("%s", line.c_str());
}

}  // namespace tapmap::nbd
