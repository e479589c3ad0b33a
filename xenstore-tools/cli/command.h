// The tapmap CLI's command framework, tap-ctl style: `tapmap FAMILY [VERB] ARGS [FLAGS]`.
//
// Each command family (volume, vbd, stats, snapshot-live) lives in its own file pair
// and contributes CommandSpecs; RunCli parses the command line, loads the [tapmap]
// section of the config file (/etc/tapmap/tapmap.conf, --config), lets flags override
// it, runs the command and maps the outcome to an exit code (exit_code.h).
//
// Settings shared by commands are config keys as well as flags:
//   server, secret-file, host-name   how to reach and log in to mapserver
//   control                          tapdisk-map's control socket
//   timeout                          seconds to wait for a server/daemon answer
// A command accepts only the flags that apply to it (plus --json, --config, --help).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "common/options.h"
#include "common/status.h"
#include "xenstore-tools/cli/output.h"

namespace tapmap::cli {

inline constexpr const char* kDefaultConfigPath = "/etc/tapmap/tapmap.conf";
inline constexpr const char* kDefaultControlPath = "/run/tapmap/tapdisk-map.sock";
inline constexpr const char* kDefaultTimeoutSeconds = "60";

// Which shared settings a command uses (bit set).
enum CommandUses : uint32_t {
  kUsesServer = 1u << 0,   // --server, --secret-file, --host-name
  kUsesControl = 1u << 1,  // --control
};

class Invocation;

struct CommandSpec {
  std::string family;   // "volume"
  std::string verb;     // "create"; "" when the family is the whole command ("stats")
  std::string args;     // positional arguments for usage lines: "NAME SIZE"
  std::string summary;  // one line
  size_t min_args = 0;
  size_t max_args = 0;
  std::vector<OptionSpec> flags;  // flags of this command only
  uint32_t uses = 0;              // CommandUses bits
  // Runs the command. Returns OK, a failure from the server/daemon, or (after
  // Invocation::UsageError) a usage error.
  std::function<Status(Invocation&)> run;
  // --json prints JSON Lines (progress lines, then the result): the result and an
  // error document are then printed on one line each, too.
  bool json_lines = false;
};

// What a running command sees: its options, positional arguments and output streams.
// Lives for the duration of one CommandSpec::run call.
class Invocation {
 public:
  Invocation(const CommandSpec& spec, const Options& options, std::vector<std::string> args,
             std::FILE* out, std::FILE* err);

  const CommandSpec& spec() const { return spec_; }
  const Options& options() const { return options_; }
  const std::vector<std::string>& args() const { return args_; }
  bool json() const { return json_; }
  std::FILE* out() const { return out_; }
  std::FILE* err() const { return err_; }

  // --timeout in milliseconds (already validated by RunCli).
  uint64_t timeout_ms() const { return timeout_ms_; }
  // --host-name, or this machine's name when unset.
  std::string host_name() const;

  // Marks the command line as wrong (exit code 2) and returns an invalid-argument
  // Status carrying `message` for the command to return.
  Status UsageError(std::string message);
  bool usage_error() const { return usage_error_; }

  // Prints text on stdout (human mode only; ignored with --json).
  void Print(const std::string& text) const;
  // Prints the command's JSON document (--json mode only; ignored otherwise).
  void PrintJson(const Json& doc, bool pretty = true) const;

 private:
  const CommandSpec& spec_;
  const Options& options_;
  std::vector<std::string> args_;
  std::FILE* out_;
  std::FILE* err_;
  bool json_;
  uint64_t timeout_ms_ = 0;
  bool usage_error_ = false;
};

// Parses argv, runs the matching command, prints errors, returns the exit code.
// `commands` must contain each (family, verb) pair once.
int RunCli(const std::vector<CommandSpec>& commands, int argc, char** argv, std::FILE* out = stdout,
           std::FILE* err = stderr);

}  // namespace tapmap::cli
