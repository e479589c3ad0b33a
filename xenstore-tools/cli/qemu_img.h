// What the CLI delegates to qemu-img (qemu-utils): reading and writing every image
// format qemu knows (raw, qcow2, vmdk, vpc/vhd, vhdx, ...), and copying between an
// image and a volume's NBD export sparsely.
//
//   info     qemu-img info --output=json [-f FMT] SOURCE  -> format and virtual size
//   check    qemu-img check -f FMT SOURCE                   -> refuse a corrupt image
//   convert  qemu-img convert -p -t writeback ...           (see QemuImgConvert)
//
// Image locations are either a local file or an NBD URL (nbd://, nbd+unix://, nbds://,
// nbds+unix://), passed to qemu-img as they are.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "xenstore-tools/cli/helper_process.h"
#include "xenstore-tools/cli/interrupt_guard.h"

namespace tapmap::cli {

inline constexpr const char* kQemuImgInstallHint = "apt-get install qemu-utils";

// True for nbd://, nbd+unix://, nbds:// and nbds+unix:// URLs.
bool IsNbdUrl(std::string_view location);

// `location` as qemu-img must be given it: an NBD URL unchanged; a relative file name
// containing ':' prefixed with "./" (qemu would take "a:b" for protocol "a").
std::string QemuLocation(const std::string& location);

// Whether `format` is a plain format name qemu-img could know ("qcow2", "vpc"): letters,
// digits and '_' only (nothing that could be read as an option).
bool IsFormatName(std::string_view format);

struct ImageInfo {
  std::string format;         // as qemu-img detected it (or as forced)
  uint64_t virtual_size = 0;  // bytes the guest sees
};

// qemu-img info on `location` (format `format`, or probed if empty). kNotFound for a
// file that does not exist; kInvalidArgument when qemu-img cannot read it (its
// message included); kAborted if interrupted.
Result<ImageInfo> QemuImgInfo(const std::string& location, const std::string& format,
                              InterruptGuard& guard);

// qemu-img check on the file `location` in `format`: kCorruption (with qemu-img's first
// findings) if the image is corrupt — a truncated qcow2 or vmdk reads as zeros where
// its data went missing, which a copy would import silently. Leaked clusters and
// formats without checks (raw, vpc) pass; NBD URLs are not checked.
Status QemuImgCheck(const std::string& location, const std::string& format, InterruptGuard& guard);

// The percentage in one line of `qemu-img convert -p` output ("    (42.50/100%)"),
// or nullopt for any other line.
std::optional<double> ParseQemuImgProgress(std::string_view line);

struct ConvertRequest {
  std::string source;         // file or NBD URL
  std::string source_format;  // e.g. "qcow2"; required (never probed twice)
  std::string target;         // file or NBD URL
  std::string target_format;  // "raw", "qcow2", ...
  bool target_exists = false; // -n: write into an existing target of sufficient size
  bool target_is_zero = false;  // --target-is-zero: skip zeros (needs target_exists)
};

// The qemu-img argv for `request`: convert -p -t writeback (the target is flushed
// before qemu-img exits) -f SRC_FMT -O DST_FMT [-n [--target-is-zero]] SOURCE TARGET.
std::vector<std::string> QemuImgConvertArgv(const ConvertRequest& request);

// Runs the conversion, calling `on_percent` with qemu-img's progress (0..100).
// kAborted if interrupted, kIoError with qemu-img's message if it failed.
Status QemuImgConvert(const ConvertRequest& request, InterruptGuard& guard,
                      const std::function<void(double)>& on_percent);

}  // namespace tapmap::cli
