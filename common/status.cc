#include "common/status.h"

#include <array>
#include <cerrno>
#include <cstring>

namespace tapmap {
namespace {

struct CodeName {
  StatusCode code;
  std::string_view name;
};

constexpr std::array<CodeName, 14> kCodeNames = {{
    {StatusCode::kOk, "ok"},
    {StatusCode::kInvalidArgument, "invalid-argument"},
    {StatusCode::kNotFound, "not-found"},
    {StatusCode::kAlreadyExists, "already-exists"},
    {StatusCode::kBusy, "busy"},
    {StatusCode::kReadOnly, "read-only"},
    {StatusCode::kNoSpace, "no-space"},
    {StatusCode::kIoError, "io-error"},
    {StatusCode::kCorruption, "corruption"},
    {StatusCode::kUnavailable, "unavailable"},
    {StatusCode::kPermissionDenied, "permission-denied"},
    {StatusCode::kNotSupported, "not-supported"},
    {StatusCode::kAborted, "aborted"},
    {StatusCode::kInternal, "internal"},
}};

}  // namespace

std::string_view StatusCodeName(StatusCode code) {
  for (const auto& c : kCodeNames) {
    if (c.code == code) return c.name;
  }
  return "internal";
}

std::optional<StatusCode> StatusCodeFromName(std::string_view name) {
  for (const auto& c : kCodeNames) {
    if (c.name == name) return c.code;
  }
  return std::nullopt;
}

Status Status::FromErrno(std::string_view context, int err) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  return Status(err == ENOSPC ? StatusCode::kNoSpace : StatusCode::kIoError, std::move(msg));
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string s(StatusCodeName(code_));
  s += ": ";
  s += message_;
  return s;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Status(code_, std::move(msg));
}

Status Status::FromWireText(std::string_view text, bool fallback_unavailable) {
  // Cap'n Proto may prefix descriptions ("remote exception: "); find our code anywhere
  // at a word start followed by ": ".
  for (const auto& c : kCodeNames) {
    if (c.code == StatusCode::kOk) continue;
    std::string needle(c.name);
    needle += ": ";
    size_t pos = text.find(needle);
    while (pos != std::string_view::npos) {
      bool at_word_start = pos == 0 || text[pos - 1] == ' ';
      if (at_word_start) return Status(c.code, std::string(text.substr(pos + needle.size())));
      pos = text.find(needle, pos + 1);
    }
  }
  return Status(fallback_unavailable ? StatusCode::kUnavailable : StatusCode::kInternal,
                std::string(text));
}

}  // namespace tapmap
