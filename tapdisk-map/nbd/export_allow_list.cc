#include "tapdisk-map/nbd/export_allow_list.h"

#include <fnmatch.h>

#include "tapdisk-map/nbd/refusal_log.h"

namespace tapmap::nbd {

Status ValidateExportPatterns(const std::vector<std::string>& patterns) {
  if (patterns.empty()) return Status::InvalidArgument("an export allow-list needs at least one name or pattern");
  for (const std::string& pattern : patterns) {
    if (pattern.empty()) return Status::InvalidArgument("empty name in an export allow-list");
    for (char c : pattern) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                c == '_' || c == '-' || c == '@' || c == '*' || c == '?' || c == '[' || c == ']' || c == '!';
      if (!ok) {
        return Status::InvalidArgument("export allow-list entry '" + pattern +
                                       "' has a character outside [A-Za-z0-9._-@*?[]!]");
      }
    }
  }
  return Status::Ok();
}

bool ExportAllowed(const std::vector<std::string>& patterns, std::string_view name) {
  const std::string full(name);
  const ExportName parsed = ParseExportName(full);
  for (const std::string& pattern : patterns) {
    if (::fnmatch(pattern.c_str(), full.c_str(), 0) == 0) return true;
    if (parsed.read_only && ::fnmatch(pattern.c_str(), parsed.volume.c_str(), 0) == 0) return true;
  }
  return false;
}

AllowedExports::AllowedExports(ExportCatalog& inner, std::vector<std::string> patterns)
    : inner_(inner), patterns_(std::move(patterns)) {}

Status AllowedExports::NotOffered(const std::string& name) const {
  return Status::NotFound("export " + QuotedExportName(name) + " is not offered on this listener");
}

void AllowedExports::Open(const std::string& name, OpenDone done) {
  if (!ExportAllowed(patterns_, name)) return done(NotOffered(name));
  inner_.Open(name, std::move(done));
}

void AllowedExports::Describe(const std::string& name, DescribeDone done) {
  if (!ExportAllowed(patterns_, name)) return done(NotOffered(name));
  inner_.Describe(name, std::move(done));
}

void AllowedExports::List(ListDone done) {
  inner_.List([this, done = std::move(done)](Result<std::vector<std::string>> names) {
    if (!names.ok()) return done(std::move(names));
    std::vector<std::string> allowed;
    for (std::string& name : *names) {
      if (ExportAllowed(patterns_, name)) allowed.push_back(std::move(name));
    }
    done(std::move(allowed));
  });
}

}  // namespace tapmap::nbd
