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

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/logging.h"
#include "common/status.h"

namespace tapmap::nbd {

// `text` with every byte outside printable ASCII (and the backslash) written as \xNN,
// cut to `max_bytes` of input (then "..." is appended).
std::string PrintableText(std::string_view text, size_t max_bytes = 256);

// An export name as every NBD log line writes it: in single quotes, made printable as
// above and with a quote in it escaped too ("'vm1'", "'a\\x27b'"), so that where the
// client's name ends is never in doubt.
std::string QuotedExportName(std::string_view name);

class RefusalLog {
 public:
  // At most `burst` lines per `period`; refusals beyond are counted and reported in the
  // next line written.
  explicit RefusalLog(uint32_t burst = 20, std::chrono::milliseconds period = std::chrono::seconds(10))
      : limiter_(burst, period) {}
  RefusalLog(const RefusalLog&) = delete;
  RefusalLog& operator=(const RefusalLog&) = delete;

  // Logs (warning, through `log`) that `option` for export `name` was refused with
  // `status`, unless over the rate.
  void Refused(const Logger& log, std::string_view option, std::string_view name, const Status& status);

  // Refusals seen / left unwritten because of the rate (for tests and stats).
  uint64_t refused() const { return refused_.load(); }
  uint64_t suppressed() const { return suppressed_.load(); }

 private:
  RateLimiter limiter_;
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> suppressed_{0};
};

}  // namespace tapmap::nbd
