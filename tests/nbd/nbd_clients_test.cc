// Real Debian NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy) against the NBD layer
// serving RAM volumes (the nbd_memory_server test program): handshake variants,
// concurrent I/O, discard/zero, read-only exports, whole-image copy and compare.
#include <catch2/catch.hpp>
#include <fstream>
#include <random>

#include "tests/support/child_process.h"

namespace tapmap::nbd {
namespace {

using tapmap::testing::ChildProcess;
using tapmap::testing::RunCommand;
using tapmap::testing::TempDir;
using tapmap::testing::WaitForPath;

struct MemoryServer {
  explicit MemoryServer(const TempDir& dir)
      : socket(dir / "nbd.sock"),
        process({std::string(TAPMAP_BIN_DIR) + "/nbd_memory_server", "--listen", "unix:" + socket,
                 "--volume", "disk:64M", "--volume", "snap:16M:ro"},
                dir / "server.log") {
    REQUIRE(WaitForPath(socket, std::chrono::seconds(20)));
  }
  std::string Url(const std::string& volume) const { return "nbd+unix:///" + volume + "?socket=" + socket; }
  std::string socket;
  ChildProcess process;
};

int Run(const std::vector<std::string>& argv, std::string* out) {
  int rc = RunCommand(argv, out);
  if (rc != 0) std::fprintf(stderr, "%s exited %d:\n%s\n", argv[0].c_str(), rc, out->c_str());
  return rc;
}

TEST_CASE("nbdinfo sees the exports, sizes and flags") {
  TempDir dir("nbd-clients");
  MemoryServer server(dir);
  std::string out;
  REQUIRE(Run({"nbdinfo", "--json", server.Url("disk")}, &out) == 0);
  CHECK(out.find("\"export-size\": 67108864") != std::string::npos);
  CHECK(out.find("\"can_multi_conn\": true") != std::string::npos);
  CHECK(out.find("\"can_flush\": true") != std::string::npos);
  CHECK(out.find("\"is_read_only\": false") != std::string::npos);
  CHECK(out.find("\"block_size_minimum\": 512") != std::string::npos);
  REQUIRE(Run({"nbdinfo", "--list", "nbd+unix://?socket=" + server.socket}, &out) == 0);
  CHECK(out.find("disk") != std::string::npos);
  CHECK(out.find("snap") != std::string::npos);
  REQUIRE(Run({"nbdinfo", "--json", server.Url("snap")}, &out) == 0);
  CHECK(out.find("\"is_read_only\": true") != std::string::npos);
  CHECK(Run({"nbdinfo", server.Url("missing")}, &out) != 0);
  server.process.Stop();
}

TEST_CASE("qemu-io writes, reads back, discards and zeroes with many requests in flight") {
  TempDir dir("nbd-clients");
  MemoryServer server(dir);
  std::string out;
  std::vector<std::string> cmd = {"qemu-io", "-f", "raw", server.Url("disk")};
  // Overlapping async writes of different patterns at scattered offsets.
  for (int i = 0; i < 32; ++i) {
    char c[96];
    std::snprintf(c, sizeof(c), "aio_write -P 0x%02x %d 64k", 0x10 + i, i * 1048576 + (i % 7) * 4096);
    cmd.push_back("-c");
    cmd.push_back(c);
  }
  cmd.insert(cmd.end(), {"-c", "aio_flush", "-c", "write -P 0xab 40M 1M", "-c", "flush"});
  REQUIRE(Run(cmd, &out) == 0);
  CHECK(out.find("error") == std::string::npos);
  CHECK(out.find("failed") == std::string::npos);

  cmd = {"qemu-io", "-f", "raw", server.Url("disk")};
  for (int i = 0; i < 32; ++i) {
    char c[96];
    std::snprintf(c, sizeof(c), "aio_read -P 0x%02x %d 64k", 0x10 + i, i * 1048576 + (i % 7) * 4096);
    cmd.push_back("-c");
    cmd.push_back(c);
  }
  cmd.insert(cmd.end(), {"-c", "aio_flush", "-c", "read -P 0xab 40M 1M", "-c", "read -P 0 41M 1M",
                         "-c", "discard 40M 64k", "-c", "write -z 42008576 64k", "-c",
                         "read -P 0 42008576 64k", "-c", "read -P 0xab 42074112 64k"});
  REQUIRE(Run(cmd, &out) == 0);
  CHECK(out.find("Pattern verification failed") == std::string::npos);
  CHECK(out.find("error") == std::string::npos);

  // A read-only export refuses writes.
  Run({"qemu-io", "-f", "raw", "-c", "write 0 4k", server.Url("snap")}, &out);
  CHECK((out.find("Operation not permitted") != std::string::npos ||
         out.find("Permission denied") != std::string::npos));
  server.process.Stop();
}

TEST_CASE("qemu-img convert and compare, nbdcopy back: a whole image round-trips") {
  TempDir dir("nbd-clients");
  MemoryServer server(dir);
  std::string image = dir / "image.raw";
  {
    std::ofstream f(image, std::ios::binary);
    std::mt19937_64 rng(7);
    std::vector<uint64_t> block(131072);
    for (int mb = 0; mb < 64; ++mb) {
      if (mb % 5 == 3) {
        std::fill(block.begin(), block.end(), 0);  // some zero areas
      } else {
        for (auto& v : block) v = rng();
      }
      f.write(reinterpret_cast<const char*>(block.data()), block.size() * 8);
    }
  }
  std::string out;
  REQUIRE(Run({"qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", "-W", image, server.Url("disk")}, &out) == 0);
  REQUIRE(Run({"qemu-img", "compare", "-f", "raw", "-F", "raw", image, server.Url("disk")}, &out) == 0);
  CHECK(out.find("Images are identical") != std::string::npos);
  std::string copy = dir / "copy.raw";
  REQUIRE(Run({"nbdcopy", "--connections=4", "--requests=16", server.Url("disk"), copy}, &out) == 0);
  REQUIRE(Run({"cmp", image, copy}, &out) == 0);
  server.process.Stop();
}

}  // namespace
}  // namespace tapmap::nbd
