#include "tapdisk-map/nbd/refusal_log.h"

#include <algorithm>
#include <cstdio>
#include <utility>

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

void RefusalLog::Refused(const Logger& log, std::string_view option, std::string_view name, const Status& status) {
  uint64_t unreported = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    refused_++;
    Clock::time_point now = Clock::now();
    if (tokens_ < 0) {
      tokens_ = burst_;
    } else {
      double elapsed = std::chrono::duration<double>(now - last_).count();
      tokens_ = std::min<double>(burst_, tokens_ + elapsed * per_second_);
    }
    last_ = now;
    if (tokens_ < 1) {
      suppressed_++;
      unreported_++;
      return;
    }
    tokens_ -= 1;
    unreported = std::exchange(unreported_, 0);
  }
  std::string line = "refused " + std::string(option) + " of export '" + PrintableText(name) +
                     "': " + PrintableText(status.ToString(), 1024);
  if (unreported > 0) line += " (" + std::to_string(unreported) + " earlier refusals not logged: rate limit)";
  log.Warnf("%s", line.c_str());
}

uint64_t RefusalLog::refused() const {
  std::lock_guard<std::mutex> lock(mu_);
  return refused_;
}

uint64_t RefusalLog::suppressed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return suppressed_;
}

}  // namespace tapmap::nbd
