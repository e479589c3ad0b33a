#include "common/logging.h"

#include <cstdlib>
#include <ctime>
#include <vector>

namespace tapmap {

bool ParseLogLevel(std::string_view text, LogLevel* level) {
  if (text == "debug") *level = LogLevel::kDebug;
  else if (text == "info") *level = LogLevel::kInfo;
  else if (text == "warning" || text == "warn") *level = LogLevel::kWarning;
  else if (text == "error") *level = LogLevel::kError;
  else return false;
  return true;
}

namespace {

// Appends `text` to `out` with control characters escaped; with `quoting`, '"' and
// '\\' are escaped too (the text goes between double quotes).
void AppendEscaped(std::string& out, std::string_view text, bool quoting) {
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      switch (c) {
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default: {
          static constexpr char kHex[] = "0123456789abcdef";
          out += "\\x";
          out += kHex[c >> 4];
          out += kHex[c & 0xf];
        }
      }
    } else if (c == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) == 0x85) {
      out += "\\u0085";  // NEL
      i += 1;
    } else if (c == 0xe2 && i + 2 < text.size() && static_cast<unsigned char>(text[i + 1]) == 0x80 &&
               (static_cast<unsigned char>(text[i + 2]) == 0xa8 || static_cast<unsigned char>(text[i + 2]) == 0xa9)) {
      out += text[i + 2] == '\xa8' ? "\\u2028" : "\\u2029";  // LINE / PARAGRAPH SEPARATOR
      i += 2;
    } else if (quoting && (c == '"' || c == '\\')) {
      out += '\\';
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(c);
    }
  }
}

// A context value is written bare only if it is plain ASCII with nothing that could
// be read as the end of the value or of the context.
bool NeedsQuotes(std::string_view value) {
  if (value.empty()) return true;
  for (unsigned char c : value) {
    if (c <= ' ' || c >= 0x7f || c == '=' || c == '"' || c == '[' || c == ']') return true;
  }
  return false;
}

}  // namespace

std::string EscapeControlCharacters(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  AppendEscaped(out, text, false);
  return out;
}

std::string QuoteForLog(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  AppendEscaped(out, text, true);
  out += '"';
  return out;
}

Logger::Logger(std::string component, LogLevel min_level, std::FILE* sink)
    : component_(std::move(component)),
      min_level_(min_level),
      sink_(sink),
      journal_(std::getenv("JOURNAL_STREAM") != nullptr) {}

Logger Logger::WithContext(std::string_view key, std::string_view value) const {
  Logger copy = *this;
  if (!copy.context_.empty()) copy.context_ += ' ';
  copy.context_ += key;
  copy.context_ += '=';
  copy.context_ += NeedsQuotes(value) ? QuoteForLog(value) : std::string(value);
  return copy;
}

Logger Logger::WithContext(std::string_view key, uint64_t value) const {
  return WithContext(key, std::to_string(value));
}

void Logger::Log(LogLevel level, std::string_view message) const {
  if (Enabled(level)) Emit(level, message);
}

#define TAPMAP_LOGGER_FN(name, level)            \
  void Logger::name(const char* fmt, ...) const { \
    if (!Enabled(level)) return;                  \
    va_list args;                                 \
    va_start(args, fmt);                          \
    Logv(level, fmt, args);                       \
    va_end(args);                                 \
  }
TAPMAP_LOGGER_FN(Debugf, LogLevel::kDebug)
TAPMAP_LOGGER_FN(Infof, LogLevel::kInfo)
TAPMAP_LOGGER_FN(Warnf, LogLevel::kWarning)
TAPMAP_LOGGER_FN(Errorf, LogLevel::kError)
#undef TAPMAP_LOGGER_FN

void Logger::Logv(LogLevel level, const char* fmt, va_list args) const {
  char body[1024];
  std::vsnprintf(body, sizeof(body), fmt, args);
  Emit(level, body);
}

void Logger::Emit(LogLevel level, std::string_view body) const {
  static constexpr const char* kNames[] = {"debug", "info", "warning", "error"};
  static constexpr int kSyslog[] = {7, 6, 4, 3};
  std::string line;
  if (journal_) {
    line += '<';
    line += std::to_string(kSyslog[static_cast<int>(level)]);
    line += '>';
  } else {
    char stamp[32];
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tm local;
    localtime_r(&ts.tv_sec, &local);
    std::strftime(stamp, sizeof(stamp), "%H:%M:%S", &local);
    line += stamp;
    char ms[24];
    std::snprintf(ms, sizeof(ms), ".%03ld ", ts.tv_nsec / 1000000);
    line += ms;
  }
  line += component_;
  if (!context_.empty()) {
    line += '[';
    line += context_;
    line += ']';
  }
  line += ' ';
  line += kNames[static_cast<int>(level)];
  line += ": ";
  AppendEscaped(line, body, false);  // one event, one line
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), sink_);
  std::fflush(sink_);
}

bool RateLimiter::Allow(uint64_t* suppressed) {
  std::lock_guard<std::mutex> lock(mu_);
  auto now = std::chrono::steady_clock::now();
  if (now - window_start_ >= period_) {
    window_start_ = now;
    in_window_ = 0;
  }
  if (in_window_ < burst_) {
    ++in_window_;
    *suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }
  ++suppressed_;
  return false;
}

}  // namespace tapmap
