#include "xenstore-tools/cli/command.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "xenstore-tools/cli/exit_code.h"

namespace tapmap::cli {
namespace {

// Every key the [tapmap] section of the config file may hold.
std::vector<OptionSpec> ServerSpecs() {
  return {
      {"server", "unix:/run/tapmap/mapserver.sock",
       "mapserver address: unix:PATH or tcp:HOST:PORT"},
      {"secret-file", "/etc/tapmap/secret", "file holding the secret shared with mapserver"},
      {"tls-dir", "", "mutual TLS to a tcp: mapserver (ca.crt, host.crt, host.key); the name in host.crt is the host name"},
      {"host-name", "", "name this host logs in as (default: the machine's host name)"},
  };
}
std::vector<OptionSpec> ControlSpecs() {
  return {{"control", kDefaultControlPath, "tapdisk-map control socket"}};
}
OptionSpec TimeoutSpec() {
  return {"timeout", kDefaultTimeoutSeconds, "seconds to wait for mapserver/tapdisk-map"};
}
std::vector<OptionSpec> GlobalSpecs() {
  return {
      {"config", kDefaultConfigPath, "config file (its [tapmap] section)"},
      {"json", "", "print one JSON document (see tapmap(1) for the schema)", true},
  };
}

std::vector<OptionSpec> ConfigFileSpecs() {
  std::vector<OptionSpec> specs = ServerSpecs();
  for (auto& s : ControlSpecs()) specs.push_back(s);
  specs.push_back(TimeoutSpec());
  return specs;
}

std::vector<OptionSpec> SpecsFor(const CommandSpec& cmd) {
  std::vector<OptionSpec> specs = cmd.flags;
  if (cmd.uses & kUsesServer) {
    for (auto& s : ServerSpecs()) specs.push_back(s);
  }
  if (cmd.uses & kUsesControl) {
    for (auto& s : ControlSpecs()) specs.push_back(s);
  }
  specs.push_back(TimeoutSpec());
  for (auto& s : GlobalSpecs()) specs.push_back(s);
  return specs;
}

std::string CommandName(const CommandSpec& cmd) {
  return cmd.verb.empty() ? cmd.family : cmd.family + " " + cmd.verb;
}

std::string UsageLine(const CommandSpec& cmd) {
  std::string line = "tapmap " + CommandName(cmd);
  if (!cmd.args.empty()) line += " " + cmd.args;
  return line + " [flags]";
}

const char kExitCodeHelp[] =
    "Exit codes: 0 ok, 1 the server or daemon failed the request, 2 usage error,\n"
    "3 mapserver or tapdisk-map not reachable (or no answer within --timeout).\n";

std::string OverviewHelp(const std::vector<CommandSpec>& commands) {
  std::string text =
      "usage: tapmap COMMAND [ARGS] [flags]\n"
      "Manage tapmap volumes (mapserver) and the disks tapdisk-map serves to guests.\n\n"
      "Commands:\n";
  size_t width = 0;
  for (const auto& c : commands) width = std::max(width, CommandName(c).size() + 1 + c.args.size());
  for (const auto& c : commands) {
    std::string left = CommandName(c) + (c.args.empty() ? "" : " " + c.args);
    left.resize(width, ' ');
    text += "  " + left + "  " + c.summary + "\n";
  }
  text += "\nEvery command takes --help, --json and --config FILE (default " +
          std::string(kDefaultConfigPath) + ").\n";
  text += kExitCodeHelp;
  return text;
}

std::string CommandHelp(const CommandSpec& cmd) {
  Options opts("tapmap", SpecsFor(cmd));
  return "usage: " + UsageLine(cmd) + "\n" + cmd.summary + "\n\nFlags:\n" + opts.FlagHelp() + "\n" +
         kExitCodeHelp;
}

// Value of --config from argv (both "--config X" and "--config=X"); "" if absent.
std::string FindConfigFlag(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") break;
    if (a == "--config" && i + 1 < argc) return argv[i + 1];
    if (a.substr(0, 9) == "--config=") return std::string(a.substr(9));
  }
  return "";
}

bool WantsJson(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") break;
    if (a == "--json" || a == "--json=true" || a == "--json=1") return true;
  }
  return false;
}

// argv with the flags that precede the command words moved after them. A flag whose
// spec (in any command) takes a value also moves the word after it, unless written
// "--name=value". "--help"/"-h" stay in front (they ask for the overview).
std::vector<char*> MoveLeadingFlags(const std::vector<CommandSpec>& commands, int argc,
                                    char** argv) {
  auto takes_value = [&](std::string_view name) {
    for (const auto& spec : ConfigFileSpecs()) {
      if (spec.name == name) return !spec.is_bool;
    }
    for (const auto& spec : GlobalSpecs()) {
      if (spec.name == name) return !spec.is_bool;
    }
    for (const auto& c : commands) {
      for (const auto& spec : c.flags) {
        if (spec.name == name) return !spec.is_bool;
      }
    }
    return false;
  };
  std::vector<char*> out(argv, argv + argc);
  std::vector<char*> moved;
  int i = 1;
  while (i < argc) {
    std::string_view a = argv[i];
    if (a.size() < 3 || a.substr(0, 2) != "--" || a == "--help") break;
    moved.push_back(argv[i]);
    if (a.find('=') == std::string_view::npos && takes_value(a.substr(2)) && i + 1 < argc) {
      moved.push_back(argv[++i]);
    }
    ++i;
  }
  if (moved.empty()) return out;
  out.assign(argv, argv + 1);
  out.insert(out.end(), argv + i, argv + argc);
  out.insert(out.end(), moved.begin(), moved.end());
  return out;
}

}  // namespace

Invocation::Invocation(const CommandSpec& spec, const Options& options,
                       std::vector<std::string> args, std::FILE* out, std::FILE* err)
    : spec_(spec),
      options_(options),
      args_(std::move(args)),
      out_(out),
      err_(err),
      json_(options.GetBool("json")) {
  auto t = options.GetUint("timeout");
  timeout_ms_ = t.ok() ? *t * 1000 : 60000;
}

std::string Invocation::host_name() const {
  if ((spec_.uses & kUsesServer) && options_.Has("host-name")) return options_.Get("host-name");
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

Status Invocation::UsageError(std::string message) {
  usage_error_ = true;
  return Status::InvalidArgument(std::move(message));
}

void Invocation::Print(const std::string& text) const {
  if (json_) return;
  std::fwrite(text.data(), 1, text.size(), out_);
  std::fflush(out_);
}

void Invocation::PrintJson(const Json& doc, bool pretty) const {
  if (!json_) return;
  cli::PrintJson(out_, doc, pretty);
}

int RunCli(const std::vector<CommandSpec>& commands, int argc, char** argv, std::FILE* out,
           std::FILE* err) {
  const bool json = WantsJson(argc, argv);
  bool json_lines = false;  // known once the command is
  auto fail = [&](const Status& status, int code) {
    if (json) cli::PrintJson(out, ErrorJson(status), /*pretty=*/!json_lines);
    std::fprintf(err, "tapmap: %s\n", status.message().c_str());
    return code;
  };
  auto usage = [&](const std::string& message, const std::string& hint) {
    if (json) cli::PrintJson(out, ErrorJson(Status::InvalidArgument(message)), /*pretty=*/!json_lines);
    std::fprintf(err, "tapmap: %s\n%s", message.c_str(), hint.c_str());
    return static_cast<int>(kExitUsage);
  };

  // Flags may also come before the command words ("tapmap --json volume list"): move
  // them behind, so that argv reads FAMILY [VERB] ARGS... FLAGS...
  std::vector<char*> reordered = MoveLeadingFlags(commands, argc, argv);
  argc = static_cast<int>(reordered.size());
  argv = reordered.data();

  if (argc < 2) return usage("no command given", OverviewHelp(commands));
  std::string family = argv[1];
  if (family == "--help" || family == "-h" || family == "help") {
    std::fputs(OverviewHelp(commands).c_str(), out);
    return kExitOk;
  }

  std::vector<const CommandSpec*> in_family;
  for (const auto& c : commands) {
    if (c.family == family) in_family.push_back(&c);
  }
  if (in_family.empty()) {
    return usage("unknown command '" + family + "'",
                 "Run 'tapmap --help' for the list of commands.\n");
  }

  const CommandSpec* cmd = nullptr;
  int first_arg = 2;
  if (in_family.size() == 1 && in_family[0]->verb.empty()) {
    cmd = in_family[0];
  } else {
    std::string family_help = "Commands of 'tapmap " + family + "':\n";
    for (const auto* c : in_family)
      family_help += "  " + UsageLine(*c) + "\n      " + c->summary + "\n";
    if (argc < 3 || argv[2][0] == '-') {
      bool help =
          argc >= 3 && (std::strcmp(argv[2], "--help") == 0 || std::strcmp(argv[2], "-h") == 0);
      if (help) {
        std::fputs(family_help.c_str(), out);
        return kExitOk;
      }
      return usage("'tapmap " + family + "' needs a subcommand", family_help);
    }
    std::string verb = argv[2];
    for (const auto* c : in_family) {
      if (c->verb == verb) cmd = c;
    }
    if (cmd == nullptr)
      return usage("unknown command 'tapmap " + family + " " + verb + "'", family_help);
    first_arg = 3;
  }

  json_lines = cmd->json_lines;

  // Config file first (all [tapmap] keys are checked, not only this command's), then
  // the command's own flags on top.
  std::string config_flag = FindConfigFlag(argc, argv);
  Options file("tapmap", ConfigFileSpecs());
  Status loaded = file.LoadFile(config_flag.empty() ? kDefaultConfigPath : config_flag,
                                /*missing_ok=*/config_flag.empty());
  if (!loaded.ok()) return usage(loaded.message(), "");

  Options options("tapmap", SpecsFor(*cmd));
  for (const auto& spec : ConfigFileSpecs()) {
    bool declared = false;
    for (const auto& s : SpecsFor(*cmd)) declared |= s.name == spec.name;
    if (declared) options.Set(spec.name, file.Get(spec.name));
  }
  Status parsed = options.ParseArgs(argc, argv, first_arg);
  if (!parsed.ok()) return usage(parsed.message(), "usage: " + UsageLine(*cmd) + "\n");
  if (options.help_requested()) {
    std::fputs(CommandHelp(*cmd).c_str(), out);
    return kExitOk;
  }
  const auto& args = options.positional();
  if (args.size() < cmd->min_args || args.size() > cmd->max_args) {
    return usage("wrong number of arguments for 'tapmap " + CommandName(*cmd) + "'",
                 "usage: " + UsageLine(*cmd) + "\n");
  }
  auto timeout = options.GetUint("timeout");
  if (!timeout.ok() || *timeout == 0 || *timeout > 86400) {
    return usage("--timeout must be a whole number of seconds in 1..86400", "");
  }

  Invocation inv(*cmd, options, args, out, err);
  Status status;
  try {
    status = cmd->run(inv);
  } catch (const StatusError& e) {
    status = e.status();
  } catch (const std::exception& e) {
    status = Status::Internal(e.what());
  }
  if (status.ok()) return kExitOk;
  if (inv.usage_error()) return usage(status.message(), "usage: " + UsageLine(*cmd) + "\n");
  return fail(status, ExitCodeFor(status));
}

}  // namespace tapmap::cli
