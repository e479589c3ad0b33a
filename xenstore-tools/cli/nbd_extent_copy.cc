#include "xenstore-tools/cli/nbd_extent_copy.h"

#include <unistd.h>

#include <cstdlib>

#include "xenstore-tools/cli/helper_process.h"

namespace tapmap::cli {
namespace {

// The helper: libnbd's Python binding following the plan of nbd_extent_copy.h. Reads
// and writes at most 4 MiB per request (tapdisk-map takes up to 32 MiB), zeroes at
// most 1 GiB per request (NBD lengths are 32 bits).
constexpr char kProgram[] = R"PY(
import os, sys
try:
    import nbd
except ImportError:
    sys.exit("the Python binding of libnbd is missing (apt-get install python3-libnbd)")
CHUNK = 4 << 20
ZERO_CHUNK = 1 << 30
h = nbd.NBD()
fd = -1
done = 0
wrote_export = wrote_file = False
def report():
    sys.stdout.write("done %d\n" % done)
    sys.stdout.flush()
try:
    for line in sys.stdin:
        line = line.rstrip("\n")
        op, _, rest = line.partition(" ")
        if op == "url":
            h.connect_uri(rest)
            continue
        if op == "file":
            mode, _, path = rest.partition(" ")
            fd = os.open(path, os.O_RDWR if mode == "rw" else os.O_RDONLY)
            continue
        w = [int(x) for x in rest.split()]
        off, n = w[0], w[1]
        if op == "zero":
            while n > 0:
                k = min(n, ZERO_CHUNK)
                h.zero(k, off)
                off += k; n -= k; done += k
                wrote_export = True
                report()
            continue
        foff = w[2]
        while n > 0:
            k = min(n, CHUNK)
            if op == "pull":
                buf = h.pread(k, off)
                view = memoryview(buf)
                written = 0
                while written < k:
                    written += os.pwrite(fd, view[written:], foff + written)
                wrote_file = True
            elif op == "push":
                buf = os.pread(fd, k, foff)
                if len(buf) != k:
                    sys.exit("the file ends before offset %d" % (foff + k))
                h.pwrite(buf, off)
                wrote_export = True
            else:
                sys.exit("unknown plan step " + op)
            off += k; foff += k; n -= k; done += k
            report()
    if wrote_export:
        h.flush()
    if wrote_file:
        os.fsync(fd)
    h.shutdown()
except nbd.Error as e:
    sys.exit("libnbd: " + str(e))
except OSError as e:
    sys.exit(str(e))
)PY";

// Debian's python3-libnbd installs the module for /usr/bin/python3; a python3 earlier
// in PATH (pyenv, a venv) would not see it.
std::string Python() { return ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3"; }

}  // namespace

std::string NbdExtentCopy::Plan(const std::string& url, const std::string& path,
                                const std::vector<ExtentCopyStep>& steps) {
  bool pulls = false;
  for (const auto& s : steps) pulls |= s.kind == ExtentCopyStep::Kind::kPull;
  std::string plan = "url " + url + "\nfile " + (pulls ? "rw " : "ro ") + path + "\n";
  for (const auto& s : steps) {
    switch (s.kind) {
      case ExtentCopyStep::Kind::kPull:
        plan += "pull ";
        break;
      case ExtentCopyStep::Kind::kPush:
        plan += "push ";
        break;
      case ExtentCopyStep::Kind::kZero:
        plan += "zero " + std::to_string(s.export_offset) + " " + std::to_string(s.length) + "\n";
        continue;
    }
    plan += std::to_string(s.export_offset) + " " + std::to_string(s.length) + " " +
            std::to_string(s.file_offset) + "\n";
  }
  return plan;
}

Status NbdExtentCopy::Run(const std::string& url, const std::string& path,
                          const std::vector<ExtentCopyStep>& steps, InterruptGuard& guard,
                          const std::function<void(uint64_t done)>& on_bytes) {
  if (url.find('\n') != std::string::npos || path.find('\n') != std::string::npos) {
    return Status::InvalidArgument("a URL or file name with a newline cannot be copied");
  }
  auto run = HelperProcess::Run(
      {Python(), "-c", kProgram}, Plan(url, path, steps), guard,
      [&](std::string_view line) {
        if (line.substr(0, 5) != "done ") return;
        on_bytes(std::strtoull(std::string(line.substr(5)).c_str(), nullptr, 10));
      },
      "apt-get install python3 python3-libnbd");
  if (!run.ok()) return run.status();
  return run->ToStatus("libnbd copy");
}

}  // namespace tapmap::cli
