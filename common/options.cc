#include "common/options.h"

#include <fstream>
#include <stdexcept>

#include "common/units.h"

namespace tapmap {
namespace {

std::string Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

Options::Options(std::string program, std::vector<OptionSpec> specs)
    : program_(std::move(program)), specs_(std::move(specs)) {
  for (const auto& spec : specs_) values_[spec.name] = spec.default_value;
}

const OptionSpec* Options::Find(std::string_view name) const {
  for (const auto& spec : specs_) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

Status Options::LoadFile(const std::string& path, bool missing_ok) {
  std::ifstream in(path);
  if (!in) {
    if (missing_ok) return Status::Ok();
    return Status::NotFound("config file " + path + " cannot be opened");
  }
  std::string line;
  std::string section;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    std::string where = path + ":" + std::to_string(lineno);
    size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::string t = Trim(line);
    if (t.empty()) continue;
    if (t.front() == '[') {
      if (t.back() != ']') return Status::InvalidArgument(where + ": bad section header");
      section = Trim(std::string_view(t).substr(1, t.size() - 2));
      continue;
    }
    size_t eq = t.find('=');
    if (eq == std::string::npos) return Status::InvalidArgument(where + ": expected key = value");
    std::string key = Trim(std::string_view(t).substr(0, eq));
    std::string value = Trim(std::string_view(t).substr(eq + 1));
    if (!section.empty() && section != program_) continue;
    if (Find(key) == nullptr) {
      if (section.empty()) continue;  // a global key another program uses
      return Status::InvalidArgument(where + ": unknown option '" + key + "' for " + program_);
    }
    values_[key] = value;
  }
  return Status::Ok();
}

Status Options::ParseArgs(int argc, char** argv, int first) {
  bool flags_done = false;
  for (int i = first; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      positional_.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    if (arg == "--help" || arg == "-h") {
      help_requested_ = true;
      continue;
    }
    if (arg.substr(0, 2) != "--") return Status::InvalidArgument("unknown flag '" + std::string(arg) + "'");
    std::string_view body = arg.substr(2);
    std::string name, value;
    bool has_value = false;
    size_t eq = body.find('=');
    if (eq != std::string_view::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    } else {
      name = body;
    }
    const OptionSpec* spec = Find(name);
    if (spec == nullptr) return Status::InvalidArgument("unknown flag '--" + name + "'");
    if (!has_value) {
      if (spec->is_bool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return Status::InvalidArgument("flag '--" + name + "' needs a value");
      }
    }
    values_[name] = value;
  }
  return Status::Ok();
}

bool Options::Has(std::string_view name) const { return !Get(name).empty(); }

const std::string& Options::Get(std::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw std::logic_error("undeclared option " + std::string(name));
  return it->second;
}

bool Options::GetBool(std::string_view name) const {
  const std::string& v = Get(name);
  return v == "1" || v == "true" || v == "yes" || v == "on";
}

Result<uint64_t> Options::GetSize(std::string_view name) const {
  auto r = ParseSize(Get(name));
  if (!r.ok()) return r.status().WithContext("--" + std::string(name));
  return r;
}

Result<uint64_t> Options::GetUint(std::string_view name) const {
  const std::string& v = Get(name);
  if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 19) {
    return Status::InvalidArgument("--" + std::string(name) + ": '" + v + "' is not a whole number");
  }
  return std::stoull(v);
}

void Options::Set(std::string_view name, std::string value) {
  if (Find(name) == nullptr) throw std::logic_error("undeclared option " + std::string(name));
  values_[std::string(name)] = std::move(value);
}

std::string Options::FlagHelp() const {
  std::string out;
  for (const auto& spec : specs_) {
    std::string left = "  --" + spec.name + (spec.is_bool ? "" : " VALUE");
    if (left.size() < 28) left.resize(28, ' ');
    else left += ' ';
    out += left + spec.help;
    if (!spec.default_value.empty()) out += " (default: " + spec.default_value + ")";
    out += '\n';
  }
  return out;
}

}  // namespace tapmap
