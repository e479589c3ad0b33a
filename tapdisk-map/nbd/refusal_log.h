// RefusalLog: one warning line per NBD open the server refuses (NBD_OPT_GO, _INFO or
// _EXPORT_NAME answered with an error), saying which export, which option and why —
// rate-limited, so that a client retrying in a loop cannot flood the log, and with
// everything a client supplied made printable (an export name may hold any byte but
// NUL; a newline in it must not forge a log line).
//
//   RefusalLog refusals;                                 // shared by a server's connections
//   refusals.Refused(log, "NBD_OPT_GO", name, status);  // "refused NBD_OPT_GO of export 'vm1': busy: ..."
//
// Threading: thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "common/logging.h"
#include "common/status.h"

namespace tapmap::nbd {

// `text` with every byte outside printable ASCII (and the backslash) written as \xNN,
// cut to `max_bytes` of input (then "..." is appended).
std::string PrintableText(std::string_view text, size_t max_bytes = 256);

class RefusalLog {
 public:
  // At most `burst` lines, refilled at `per_second` lines per second; refusals beyond
  // are counted and reported in the next line that is written.
  explicit RefusalLog(uint32_t burst = 20, uint32_t per_second = 5) : burst_(burst), per_second_(per_second) {}
  RefusalLog(const RefusalLog&) = delete;
  RefusalLog& operator=(const RefusalLog&) = delete;

  // Logs (warning, through `log`) that `option` for export `name` was refused with
  // `status`, unless over the rate.
  void Refused(const Logger& log, std::string_view option, std::string_view name, const Status& status);

  // Refusals seen / not written because of the rate (for tests).
  uint64_t refused() const;
  uint64_t suppressed() const;

 private:
  using Clock = std::chrono::steady_clock;
  const uint32_t burst_;
  const uint32_t per_second_;
  mutable std::mutex mu_;
  double tokens_ = -1;  // < 0: not started (a full burst)
  Clock::time_point last_{};
  uint64_t refused_ = 0;
  uint64_t suppressed_ = 0;
  uint64_t unreported_ = 0;  // suppressed since the last line written
};

}  // namespace tapmap::nbd
