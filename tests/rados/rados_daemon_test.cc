// The real programs on a RADOS pool: a one-node Ceph cluster, `mapserver format` and
// `serve` on rados:..., tapdisk-map with an NBD export on the same location, real NBD
// clients (qemu-img, qemu-io). A volume's data, its snapshot and a clone's own
// writes read back; after tapdisk-map is killed with -9 and restarted they are still
// there; `mapserver fsck` is clean.
#include <signal.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <random>
#include <vector>

#include "tests/nbd/daemon_fixture.h"
#include "tests/rados/ceph_cluster.h"

namespace tapmap::rados_test {
namespace {

using tapmap::nbd::testing::Bin;
using tapmap::nbd::testing::Run;
using tapmap::testing::CephCluster;
using tapmap::testing::ChildProcess;
using tapmap::testing::WaitForPath;

// mapserver + tapdisk-map on `location`, files under the cluster's scratch directory.
class RadosDaemons {
 public:
  RadosDaemons(const CephCluster& cluster, std::string location) : cluster_(cluster), location_(std::move(location)) {
    std::ofstream(path("secret")) << "rados integration secret\n";
    ::chmod(path("secret").c_str(), 0600);
    std::ofstream(path("tapmap.conf")) << "# defaults only\n";
    REQUIRE(Run({Bin("mapserver"), "format", "--config", path("tapmap.conf"), "--pool", location_, "--meta",
                 path("meta"), "--size", "1G", "--block-size", "64K", "--object-size", "1M"}) == 0);
    StartMapserver();
    StartTapdisk();
  }

  void StartMapserver() {
    mapserver_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{Bin("mapserver"), "serve", "--config", path("tapmap.conf"), "--pool", location_,
                                 "--meta", path("meta"), "--listen", "unix:" + path("ms.sock"), "--secret-file",
                                 path("secret")},
        path("mapserver.log"));
    REQUIRE(WaitForPath(path("ms.sock"), std::chrono::seconds(30)));
  }
  void StopMapserver() {
    if (mapserver_) CHECK(mapserver_->Stop(std::chrono::seconds(30)) == 0);
    mapserver_.reset();
  }

  void StartTapdisk() {
    ::unlink(path("nbd.sock").c_str());
    ::unlink(path("ctl.sock").c_str());
    tapdisk_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{Bin("tapdisk-map"), "--config", path("tapmap.conf"), "--server",
                                 "unix:" + path("ms.sock"), "--pool", location_, "--secret-file", path("secret"),
                                 "--host-name", "rados-it", "--control", path("ctl.sock"), "--nbd",
                                 "unix:" + path("nbd.sock"), "--cache-size", "64M", "--xen", "off"},
        path("tapdisk-map.log"));
    REQUIRE(WaitForPath(path("nbd.sock"), std::chrono::seconds(30)));
    REQUIRE(WaitForPath(path("ctl.sock"), std::chrono::seconds(30)));
  }
  void KillTapdisk() {
    tapdisk_->Signal(SIGKILL);
    REQUIRE(tapdisk_->Wait(std::chrono::seconds(30)).has_value());
    tapdisk_.reset();
  }
  void StopTapdisk() {
    if (tapdisk_) CHECK(tapdisk_->Stop(std::chrono::seconds(60)) == 0);
    tapdisk_.reset();
  }

  // `tapmap --json volume ...` against this mapserver.
  void Volume(std::vector<std::string> args) {
    std::vector<std::string> argv = {Bin("tapmap"),          "--config",      path("tapmap.conf"), "--json",
                                     "--server",           "unix:" + path("ms.sock"), "--secret-file",
                                     path("secret"),       "volume"};
    argv.insert(argv.end(), args.begin(), args.end());
    REQUIRE(Run(argv) == 0);
  }

  std::string Url(const std::string& volume) const {
    return "nbd+unix:///" + volume + "?socket=" + path("nbd.sock");
  }
  std::string path(const std::string& name) const { return cluster_.path(name); }
  const std::string& location() const { return location_; }

 private:
  const CephCluster& cluster_;
  std::string location_;
  std::unique_ptr<ChildProcess> mapserver_;
  std::unique_ptr<ChildProcess> tapdisk_;
};

// `megabytes` of random data with every fourth megabyte zero (a hole in the volume).
std::vector<char> MakeImage(int megabytes, uint64_t seed) {
  std::vector<char> image(size_t(megabytes) << 20, 0);
  std::mt19937_64 rng(seed);
  for (int mb = 0; mb < megabytes; ++mb) {
    if (mb % 4 == 3) continue;
    for (size_t i = size_t(mb) << 20; i < size_t(mb + 1) << 20; i += 8) {
      uint64_t v = rng();
      std::memcpy(&image[i], &v, 8);
    }
  }
  return image;
}

void Save(const std::string& path, const std::vector<char>& data) {
  std::ofstream(path, std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
}

// True if the NBD export `url` holds exactly the bytes of the file `image`.
bool Same(const std::string& image, const std::string& url) {
  return Run({"qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", image, url}) == 0;
}

TEST_CASE("Volumes on a RADOS pool: snapshot, clone, kill -9 of tapdisk-map, fsck clean") {
  CephCluster cluster;
  RadosDaemons d(cluster, cluster.Location("it"));

  auto golden = MakeImage(16, 1);
  Save(d.path("golden.raw"), golden);
  d.Volume({"create", "golden", "16M"});
  REQUIRE(Run({"qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", d.path("golden.raw"), d.Url("golden")}) == 0);
  d.Volume({"snapshot", "golden", "golden-v1"});
  d.Volume({"clone", "golden-v1", "c1"});

  // The clone's own writes: 1 MiB of 0x5a at 1 MiB, 64 KiB of 0xc3 in a hole (at 3 MiB).
  REQUIRE(Run({"qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 1M", "-c", "write -P 0xc3 3M 64k", "-c", "flush",
               d.Url("c1")}) == 0);
  auto c1 = golden;
  std::memset(&c1[1 << 20], 0x5a, 1 << 20);
  std::memset(&c1[3 << 20], 0xc3, 64 << 10);
  Save(d.path("c1.raw"), c1);

  CHECK(Same(d.path("golden.raw"), d.Url("golden-v1")));
  CHECK(Same(d.path("golden.raw"), d.Url("golden")));
  CHECK(Same(d.path("c1.raw"), d.Url("c1")));

  // The data went to RADOS objects named by the layout.
  std::string objects;
  REQUIRE(Run({"timeout", "20", "rados", "-c", cluster.conf(), "-p", CephCluster::kPool, "ls"}, &objects) == 0);
  CHECK(objects.find("it.superblock") != std::string::npos);
  CHECK(objects.find("it.data.0000000000000001") != std::string::npos);  // the data area starts at 1 MiB

  // A crash of tapdisk-map loses nothing that was flushed.
  d.KillTapdisk();
  d.StartTapdisk();
  CHECK(Same(d.path("c1.raw"), d.Url("c1")));
  CHECK(Same(d.path("golden.raw"), d.Url("golden-v1")));

  d.StopTapdisk();
  d.StopMapserver();
  std::string out;
  CHECK(Run({Bin("mapserver"), "fsck", "--config", d.path("tapmap.conf"), "--pool", d.location(), "--meta",
             d.path("meta")},
            &out) == 0);
  CHECK(out.find("fsck clean") != std::string::npos);
}

}  // namespace
}  // namespace tapmap::rados_test
