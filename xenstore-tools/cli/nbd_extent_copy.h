// NbdExtentCopy: copies byte ranges between a local file and an NBD export at any
// offsets, and zeroes ranges of the export — the part of incremental export/import
// that qemu-img cannot do (it copies whole images).
//
// Delegated to libnbd through its Python binding (python3-libnbd): a short fixed
// program (in nbd_extent_copy.cc) run by Debian's python3 reads the plan on its stdin
// and reports the bytes done on its stdout; tapmap has no NBD client code of its own.
//
// Plan, one step per line (what Run sends):
//   url URL                   the NBD URL to connect to (libnbd's nbd_connect_uri)
//   file ro|rw PATH           the local file (opened O_RDONLY or O_RDWR; must exist)
//   pull OFF LEN FOFF         export [OFF, OFF+LEN) -> file at FOFF
//   push OFF LEN FOFF         file [FOFF, FOFF+LEN) -> export at OFF
//   zero OFF LEN              NBD_CMD_WRITE_ZEROES on the export (may punch holes)
// then the export is flushed (if written) and the file fsynced (if written).
// Progress lines: "done BYTES" (bytes of steps completed so far).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "xenstore-tools/cli/interrupt_guard.h"

namespace tapmap::cli {

struct ExtentCopyStep {
  enum class Kind { kPull, kPush, kZero };
  Kind kind = Kind::kPull;
  uint64_t export_offset = 0;
  uint64_t length = 0;
  uint64_t file_offset = 0;  // unused for kZero
};

class NbdExtentCopy {
 public:
  // Runs `steps` against `url` and the file at `path` (opened read-write iff a step
  // pulls). Calls `on_bytes` with the bytes done so far. kAborted if interrupted;
  // kIoError with libnbd's or the OS's message on failure; kNotSupported if
  // python3-libnbd is missing.
  static Status Run(const std::string& url, const std::string& path,
                    const std::vector<ExtentCopyStep>& steps, InterruptGuard& guard,
                    const std::function<void(uint64_t done)>& on_bytes);

  // The plan text Run feeds the helper (exposed for tests).
  static std::string Plan(const std::string& url, const std::string& path,
                          const std::vector<ExtentCopyStep>& steps);
};

}  // namespace tapmap::cli
