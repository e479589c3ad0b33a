// Same-host reopen with real clients: on a freshly started tapdisk-map, back-to-back
// nbdinfo (NBD_OPT_INFO then NBD_OPT_GO), qemu-io write and qemu-io -r read cycles on
// one volume, each a connect/open/disconnect, never fail: an open arriving while the
// previous opener's final commit and close are in flight waits for them, and INFO
// takes no lease. Every cycle's data is read back.
#include <csignal>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "tests/nbd/daemon_fixture.h"

namespace tapmap::nbd {
namespace {

using testing::DaemonFixture;
using tapmap::testing::RunCommand;

constexpr int kIterations = 500;

TEST_CASE("500 back-to-back nbdinfo + qemu-io write/read connect cycles on one volume: 0 failures") {
  DaemonFixture f;
  f.Tapmap({"volume", "create", "vol", "64M"});
  const std::string url = f.Url("vol");
  int failures = 0;
  std::string first_failures;
  auto run = [&](const std::vector<std::string>& argv, int iteration) {
    std::string out;
    int rc = RunCommand(argv, &out);
    bool ok = rc == 0 && out.find("failed") == std::string::npos && out.find("error") == std::string::npos;
    if (!ok) {
      failures++;
      if (failures <= 5) first_failures += "iteration " + std::to_string(iteration) + ": " + argv[0] + ": " + out + "\n";
    }
  };
  for (int i = 0; i < kIterations; ++i) {
    const std::string pattern = std::to_string(i % 251);
    const std::string offset = std::to_string((i % 64) * 65536 + 4096);
    run({"nbdinfo", url}, i);
    run({"qemu-io", "-f", "raw", "-c", "write -P " + pattern + " " + offset + " 4k", url}, i);
    run({"qemu-io", "-f", "raw", "-r", "-c", "read -P " + pattern + " " + offset + " 4k", url}, i);
  }
  INFO(first_failures);
  CHECK(failures == 0);

  // Nothing was refused, so nothing was logged as refused.
  std::ifstream log(f.path("tapdisk-map.log"));
  std::stringstream text;
  text << log.rdbuf();
  CHECK(text.str().find("refused") == std::string::npos);
}

}  // namespace
}  // namespace tapmap::nbd
