// Options: a program's settings, from the config file (/etc/tapmap/tapmap.conf by
// default) overridden by command-line flags. Every config key is also a flag:
//
//   config file                      command line
//   [tapdisk-map]                    tapdisk-map --cache-size 4G
//   cache-size = 4G
//
// Config format (documented in doc/config.md): '#' comments, "[section]" headers
// naming the program, "key = value" lines. Keys outside any section apply to every
// program. Unknown keys in a program's own section are an error (typos must not pass
// silently); keys of other sections are ignored.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tapmap {

struct OptionSpec {
  std::string name;           // flag name without "--", e.g. "cache-size"
  std::string default_value;  // "" means unset
  std::string help;           // one line for --help
  bool is_bool = false;       // a bool flag may be given without a value ("--force")
};

class Options {
 public:
  Options(std::string program, std::vector<OptionSpec> specs);

  // Reads `path`, taking the global keys and those of section `program`. A missing file
  // is OK if `missing_ok`. Errors name the file and line.
  Status LoadFile(const std::string& path, bool missing_ok);

  // Parses flags in argv[first..argc). "--name=value", "--name value", "--flag" for
  // bools; "--" ends flags. Non-flag words are collected in positional(). "--help"/"-h"
  // sets help_requested(). Unknown flags are an error naming the flag.
  Status ParseArgs(int argc, char** argv, int first = 1);

  bool help_requested() const { return help_requested_; }
  bool Has(std::string_view name) const;  // set by file, flag or a non-empty default
  // Value of a declared option ("" when unset). Asking for an undeclared name throws.
  const std::string& Get(std::string_view name) const;
  bool GetBool(std::string_view name) const;  // "1", "true", "yes", "on" are true
  Result<uint64_t> GetSize(std::string_view name) const;  // via ParseSize
  Result<uint64_t> GetUint(std::string_view name) const;
  void Set(std::string_view name, std::string value);

  const std::vector<std::string>& positional() const { return positional_; }
  // "  --cache-size SIZE   help (default: 1G)" lines for every option.
  std::string FlagHelp() const;

 private:
  const OptionSpec* Find(std::string_view name) const;

  std::string program_;
  std::vector<OptionSpec> specs_;
  std::map<std::string, std::string, std::less<>> values_;
  std::vector<std::string> positional_;
  bool help_requested_ = false;
};

}  // namespace tapmap
