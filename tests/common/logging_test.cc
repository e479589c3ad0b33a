// Specification of the log line format's safety: one event is one line whatever the
// message or a context value holds (issue 14: an NBD export name with a newline forged
// well-formed log lines).
#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

#include "common/logging.h"

namespace tapmap {
namespace {

// A log sink in memory: what a Logger writes, read back as a string.
class MemorySink {
 public:
  MemorySink() : file_(open_memstream(&data_, &size_)) { REQUIRE(file_ != nullptr); }
  ~MemorySink() {
    std::fclose(file_);
    std::free(data_);
  }
  std::FILE* file() { return file_; }
  std::string text() {
    std::fflush(file_);
    return std::string(data_, size_);
  }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
  std::FILE* file_;
};

size_t Lines(const std::string& text) {
  size_t n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

TEST_CASE("a forged log line inside a message stays in the line that quotes it") {
  MemorySink sink;
  Logger log("tapdisk-map", LogLevel::kInfo, sink.file());
  const std::string name = "x\n20:00:00.000 mapserver info: deleted volume prod-db";
  log.Warnf("refused NBD_OPT_GO of export '%s'", name.c_str());
  log.Log(LogLevel::kInfo, name);
  const std::string text = sink.text();
  INFO(text);
  CHECK(Lines(text) == 2);
  CHECK(text.find("export 'x\\n20:00:00.000 mapserver info: deleted volume prod-db'\n") != std::string::npos);
  CHECK(text.find("\nmapserver") == std::string::npos);
  CHECK(text.find("\n20:00") == std::string::npos);
}

TEST_CASE("every control character is escaped, printable text and UTF-8 are kept") {
  CHECK(EscapeControlCharacters("a\nb\rc\td") == "a\\nb\\rc\\td");
  CHECK(EscapeControlCharacters("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m");  // terminal escapes
  CHECK(EscapeControlCharacters(std::string("nul\0one\x01 del\x7f", 13)) == "nul\\x00one\\x01 del\\x7f");
  CHECK(EscapeControlCharacters("\x1f") == "\\x1f");
  // Unicode line breaks (NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR in UTF-8).
  CHECK(EscapeControlCharacters("a\xc2\x85" "b\xe2\x80\xa8" "c\xe2\x80\xa9" "d") == "a\\u0085b\\u2028c\\u2029d");
  // Everything else passes unchanged: ASCII, backslashes, quotes, other UTF-8.
  const std::string plain = "vol-1 'q' \"dq\" C:\\path caf\xc3\xa9 \xe2\x80\x99 100%";
  CHECK(EscapeControlCharacters(plain) == plain);
  // Every byte below 0x20 comes out as printable text.
  for (int c = 0; c < 0x20; ++c) {
    std::string escaped = EscapeControlCharacters(std::string(1, static_cast<char>(c)));
    INFO(c);
    for (char e : escaped) CHECK((e >= 0x20 && e < 0x7f));
  }
}

TEST_CASE("context values are escaped, and quoted when they could be misread") {
  MemorySink sink;
  Logger base("nbd", LogLevel::kInfo, sink.file());
  base.WithContext("volume", "vm1").Infof("plain");
  base.WithContext("volume", "a b").Infof("space");
  base.WithContext("volume", "x domid=0").Infof("forged context");
  base.WithContext("volume", "v\n20:00:00.000 mapserver info: deleted volume prod-db").Infof("newline");
  base.WithContext("volume", "q\"]\\").Infof("quote");
  base.WithContext("volume", "").Infof("empty");
  base.WithContext("domid", 3).Infof("number");
  const std::string text = sink.text();
  INFO(text);
  CHECK(Lines(text) == 7);
  CHECK(text.find("nbd[volume=vm1] info: plain\n") != std::string::npos);
  CHECK(text.find("nbd[volume=\"a b\"] info: space\n") != std::string::npos);
  CHECK(text.find("nbd[volume=\"x domid=0\"] info: forged context\n") != std::string::npos);
  CHECK(text.find("nbd[volume=\"v\\n20:00:00.000 mapserver info: deleted volume prod-db\"] info: newline\n") !=
        std::string::npos);
  CHECK(text.find("nbd[volume=\"q\\\"]\\\\\"] info: quote\n") != std::string::npos);
  CHECK(text.find("nbd[volume=\"\"] info: empty\n") != std::string::npos);
  CHECK(text.find("nbd[domid=3] info: number\n") != std::string::npos);
}

TEST_CASE("QuoteForLog: unambiguous quoting of a peer's name") {
  CHECK(QuoteForLog("vm1") == "\"vm1\"");
  CHECK(QuoteForLog("") == "\"\"");
  CHECK(QuoteForLog("a\"b\\c\nd\x1b") == "\"a\\\"b\\\\c\\nd\\x1b\"");
}

}  // namespace
}  // namespace tapmap
