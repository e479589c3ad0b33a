#include "xenstore-tools/cli/qemu_img.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>

#include <nlohmann/json.hpp>

namespace tapmap::cli {

bool IsNbdUrl(std::string_view location) {
  for (std::string_view scheme : {"nbd://", "nbd+unix://", "nbds://", "nbds+unix://"}) {
    if (location.substr(0, scheme.size()) == scheme) return true;
  }
  return false;
}

std::string QemuLocation(const std::string& location) {
  if (IsNbdUrl(location) || location.empty() || location[0] == '/') return location;
  if (location.find(':') != std::string::npos) return "./" + location;
  return location;
}

bool IsFormatName(std::string_view format) {
  if (format.empty() || format.size() > 32) return false;
  for (char c : format) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

Result<ImageInfo> QemuImgInfo(const std::string& location, const std::string& format,
                              InterruptGuard& guard) {
  if (!IsNbdUrl(location)) {
    struct stat st {};
    if (::stat(location.c_str(), &st) != 0) {
      if (errno == ENOENT) return Status::NotFound(location + " does not exist");
      return Status::FromErrno(location, errno);
    }
    if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(location + " is a directory");
  }
  std::vector<std::string> argv = {"qemu-img", "info", "--output=json"};
  if (!format.empty()) {
    argv.push_back("-f");
    argv.push_back(format);
  }
  argv.push_back(QemuLocation(location));
  std::string text;
  auto run = HelperProcess::Run(
      argv, "", guard, [&](std::string_view line) { (text += line) += '\n'; }, kQemuImgInstallHint);
  if (!run.ok()) return run.status();
  if (run->interrupted_by != 0) return run->ToStatus("qemu-img info");
  if (run->exit_code != 0) {
    return Status::InvalidArgument("qemu-img cannot read " + location +
                                   (run->error_tail.empty() ? "" : ": " + run->error_tail));
  }
  auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("virtual-size") ||
      !doc["virtual-size"].is_number_unsigned() || !doc.contains("format") ||
      !doc["format"].is_string()) {
    return Status::Corruption("unexpected output of qemu-img info for " + location + ": " +
                              text.substr(0, 200));
  }
  ImageInfo info;
  info.format = doc["format"].get<std::string>();
  info.virtual_size = doc["virtual-size"].get<uint64_t>();
  return info;
}

Status QemuImgCheck(const std::string& location, const std::string& format, InterruptGuard& guard) {
  if (IsNbdUrl(location)) return Status::Ok();
  std::string text;
  auto run = HelperProcess::Run(
      {"qemu-img", "check", "--output=json", "-f", format, QemuLocation(location)}, "", guard,
      [&](std::string_view line) { (text += line) += '\n'; }, kQemuImgInstallHint);
  if (!run.ok()) return run.status();
  if (run->interrupted_by != 0) return run->ToStatus("qemu-img check");
  // 0 clean, 3 leaked clusters only, 63 the format has no check.
  if (run->exit_code == 0 || run->exit_code == 3 || run->exit_code == 63) return Status::Ok();
  std::string last = run->error_tail.substr(run->error_tail.rfind('\n') + 1);
  auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  std::string count;
  if (doc.is_object() && doc.contains("corruptions") && doc["corruptions"].is_number()) {
    count = doc["corruptions"].dump() + " corruptions";
  }
  return Status::Corruption(location + " is corrupt: qemu-img check found " +
                            (count.empty() ? std::string("errors") : count) + " (the last: " + last + ")");
}

std::optional<double> ParseQemuImgProgress(std::string_view line) {
  size_t open = line.find('(');
  size_t slash = line.find("/100%)", open == std::string_view::npos ? 0 : open);
  if (open == std::string_view::npos || slash == std::string_view::npos) return std::nullopt;
  std::string number(line.substr(open + 1, slash - open - 1));
  if (number.empty()) return std::nullopt;
  char* end = nullptr;
  double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !(value >= 0.0 && value <= 100.0)) return std::nullopt;
  return value;
}

std::vector<std::string> QemuImgConvertArgv(const ConvertRequest& r) {
  std::vector<std::string> argv = {"qemu-img", "convert", "-p", "-t", "writeback",
                                   "-f", r.source_format, "-O", r.target_format};
  if (r.target_exists) argv.push_back("-n");
  if (r.target_exists && r.target_is_zero) argv.push_back("--target-is-zero");
  argv.push_back(QemuLocation(r.source));
  argv.push_back(QemuLocation(r.target));
  return argv;
}

Status QemuImgConvert(const ConvertRequest& request, InterruptGuard& guard,
                      const std::function<void(double)>& on_percent) {
  auto run = HelperProcess::Run(
      QemuImgConvertArgv(request), "", guard,
      [&](std::string_view line) {
        if (auto p = ParseQemuImgProgress(line)) on_percent(*p);
      },
      kQemuImgInstallHint);
  if (!run.ok()) return run.status();
  return run->ToStatus("qemu-img convert");
}

}  // namespace tapmap::cli
