// Logger: one line per event on stderr (the journal under systemd), each line tagged
// with the component and a context ("domid=3 devid=51712 volume=vm1") so a line can be
// traced to the disk it concerns. Loggers are values: derive one per object with
// WithContext; there is no global logger and no global log level.
//
// Under systemd (JOURNAL_STREAM set) lines carry a "<N>" syslog priority prefix, which
// journald turns into the entry's priority.
//
// One event is one line, whatever the text holds: messages and context values often
// quote what a peer sent (an NBD export name, a guest's xenstore value), so every
// control character in them is escaped (EscapeControlCharacters) before the line is
// written, and a context value that could be misread (empty, or holding a space, '=',
// '"', '[', ']' or anything but printable ASCII) is quoted (QuoteForLog). A forged "\n12:00:00.000 mapserver info:
// deleted volume prod-db" thus stays inside the line that quotes it.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <chrono>
#include <string>
#include <string_view>

namespace tapmap {

enum class LogLevel : uint8_t { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Parses "debug", "info", "warning", "error"; returns false on anything else.
bool ParseLogLevel(std::string_view text, LogLevel* level);

// `text` with every control character written out: "\n", "\r", "\t", and "\xNN"
// for the other bytes below 0x20 and 0x7f (ESC is "\x1b"); the Unicode line breaks
// a log viewer may honour (U+0085, U+2028, U+2029 in UTF-8) as "\u0085" etc.
// Everything else, including other UTF-8, is kept.
std::string EscapeControlCharacters(std::string_view text);

// `text` in double quotes, with '"' and '\' backslash-escaped and control characters
// escaped as above: for a name a peer chose, so its start and end are unambiguous.
std::string QuoteForLog(std::string_view text);

class Logger {
 public:
  // `component` names the program or layer ("mapserver", "blkif"). Lines below
  // `min_level` are dropped. `sink` must outlive the logger (stderr by default).
  explicit Logger(std::string component, LogLevel min_level = LogLevel::kInfo,
                  std::FILE* sink = stderr);

  // A logger that appends "key=value" to this one's context. `value` is escaped, and
  // quoted if it could be misread (see the top of this file); `key` is the caller's.
  Logger WithContext(std::string_view key, std::string_view value) const;
  Logger WithContext(std::string_view key, uint64_t value) const;

  LogLevel min_level() const { return min_level_; }
  bool Enabled(LogLevel level) const { return level >= min_level_; }

  // Writes one line; control characters in `message` are escaped.
  void Log(LogLevel level, std::string_view message) const;
  void Debugf(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
  void Infof(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
  void Warnf(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
  void Errorf(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));

 private:
  void Logv(LogLevel level, const char* fmt, va_list args) const;
  void Emit(LogLevel level, std::string_view body) const;

  std::string component_;
  std::string context_;
  LogLevel min_level_;
  std::FILE* sink_;
  bool journal_;
};

// Allows at most `burst` events per `period`; used for log lines an untrusted peer can
// trigger (a malicious guest must not flood the journal). Thread-safe.
class RateLimiter {
 public:
  RateLimiter(uint32_t burst, std::chrono::milliseconds period) : burst_(burst), period_(period) {}
  // True if this event may be reported. `*suppressed` gets the number of events dropped
  // since the last allowed one (to report "N similar messages suppressed").
  bool Allow(uint64_t* suppressed);

 private:
  std::mutex mu_;
  const uint32_t burst_;
  const std::chrono::milliseconds period_;
  std::chrono::steady_clock::time_point window_start_{};
  uint32_t in_window_ = 0;
  uint64_t suppressed_ = 0;
};

}  // namespace tapmap
