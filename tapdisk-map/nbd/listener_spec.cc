#include "tapdisk-map/nbd/listener_spec.h"

#include "tapdisk-map/nbd/export_allow_list.h"

namespace tapmap::nbd {
namespace {

std::vector<std::string_view> Split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

}  // namespace

std::string NbdListenerSpec::ToString() const {
  std::string text = address.ToString();
  if (!exports.empty()) {
    text += "?exports=";
    for (size_t i = 0; i < exports.size(); ++i) text += (i ? ":" : "") + exports[i];
  }
  return text;
}

Result<NbdListenerSpec> ParseNbdListener(std::string_view text) {
  NbdListenerSpec spec;
  const size_t question = text.find('?');
  Result<ListenAddress> address = ParseListenAddress(text.substr(0, question));
  if (!address.ok()) return address.status();
  spec.address = std::move(*address);
  if (question == std::string_view::npos) return spec;
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("bad NBD listener '" + std::string(text) + "': " + why +
                                   " (expected ADDRESS?exports=NAME[:NAME...])");
  };
  bool have_exports = false;
  for (std::string_view setting : Split(text.substr(question + 1), '&')) {
    const size_t eq = setting.find('=');
    if (eq == std::string_view::npos) return bad("setting '" + std::string(setting) + "' has no '='");
    const std::string_view key = setting.substr(0, eq);
    const std::string_view value = setting.substr(eq + 1);
    if (key != "exports") return bad("unknown setting '" + std::string(key) + "'");
    if (have_exports) return bad("exports given twice");
    have_exports = true;
    for (std::string_view name : Split(value, ':')) spec.exports.emplace_back(name);
    if (Status s = ValidateExportPatterns(spec.exports); !s.ok()) return bad(s.message());
  }
  return spec;
}

Result<std::vector<NbdListenerSpec>> ParseNbdListeners(std::string_view text) {
  std::vector<NbdListenerSpec> out;
  for (std::string_view item : Split(text, ',')) {
    Result<NbdListenerSpec> spec = ParseNbdListener(item);
    if (!spec.ok()) return spec.status();
    out.push_back(std::move(*spec));
  }
  return out;
}

}  // namespace tapmap::nbd
