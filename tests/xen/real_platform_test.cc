// The real side of the Xen seam on a machine without a hypervisor: one clear error.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "tapdisk-map/xen/real_platform.h"

namespace tapmap::xen {
namespace {

// Captures what is written to fd 2 while alive.
class StderrCapture {
 public:
  StderrCapture() {
    std::fflush(stderr);
    char path[] = "/tmp/xen_test_stderr_XXXXXX";
    file_ = mkstemp(path);
    unlink(path);
    saved_ = dup(2);
    dup2(file_, 2);
  }
  ~StderrCapture() {
    Restore();
    close(file_);
  }
  std::string Text() {
    Restore();
    std::string text;
    char buf[4096];
    ssize_t n;
    lseek(file_, 0, SEEK_SET);
    while ((n = read(file_, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
    return text;
  }

 private:
  void Restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    dup2(saved_, 2);
    close(saved_);
    saved_ = -1;
  }
  int file_ = -1;
  int saved_ = -1;
};

TEST_CASE("without /dev/xen the real platform fails with one clear error and prints nothing") {
  struct stat st;
  if (stat("/dev/xen/gntdev", &st) == 0) {
    WARN("this machine has /dev/xen/gntdev (a Xen dom0): nothing to check");
    return;
  }
  Logger logger("xen_test", LogLevel::kInfo);
  StderrCapture capture;
  Result<XenPlatform> platform = OpenRealXenPlatform(logger);
  std::string printed = capture.Text();
  REQUIRE_FALSE(platform.ok());
  CHECK(platform.status().code() == StatusCode::kUnavailable);
  CHECK(platform.status().message() ==
        "no Xen hypervisor interface: /dev/xen/gntdev missing — run in dom0");
  CHECK(printed.empty());
}

}  // namespace
}  // namespace tapmap::xen
