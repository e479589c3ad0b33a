// block-tapmap against a real xenstored holding exactly what libxl 4.17 writes for
// 'vdev=xvda, access=rw, backendtype=phy, script=block-tapmap, target=vm1'. The
// control socket is a scripted peer here, so these cases pin down the script's side
// of the contract (what it reads, what it asks tapdisk-map, what it writes back for
// libxl); tools_xl_replay_test runs the same replay against the real tapdisk-map.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "tests/support/child_process.h"
#include "tests/support/xenstored_instance.h"
#include "tests/tools/libxl_replay.h"
#include "tests/tools/scripted_control_peer.h"

namespace tapmap::testing {
namespace {

using cli::ScriptedControlPeer;
using xen::kNoTransaction;

std::string Answer(const nlohmann::json& req) {
  std::string op = req.value("op", "");
  if (op == "vbd-attach") {
    std::string volume = req.value("volume", "");
    if (volume == "missing") {
      return R"({"ok": false, "error": {"code": "not-found", "message": "no volume 'missing'"}})";
    }
    nlohmann::json vbd = {{"domid", req["domid"]},   {"devid", req["devid"]},
                          {"layout", req["layout"]}, {"volume", volume},
                          {"mode", req["mode"]},     {"state", "initwait"}};
    return nlohmann::json({{"ok", true}, {"vbd", vbd}}).dump();
  }
  if (op == "vbd-detach") {
    if (req.value("devid", 0) == 51728) {
      return R"({"ok": false, "error": {"code": "not-found", "message": "no such disk"}})";
    }
    return R"({"ok": true})";
  }
  return R"({"ok": false, "error": {"code": "not-supported", "message": "unexpected op"}})";
}

class HotplugFixture {
 public:
  HotplugFixture() : dir_("tools-hotplug") {
    auto xsd = XenstoredInstance::Start({1});  // guest domain 1 "exists"
    REQUIRE(xsd.ok());
    xsd_ = std::move(*xsd);
    auto xs = xsd_->Connect();  // also exports XENSTORED_PATH to the scripts we run
    REQUIRE(xs.ok());
    xs_ = std::move(*xs);
    Status created = ReplayDomainCreate(*xs_, 1);
    INFO(created.ToString());
    REQUIRE(created.ok());
  }

  xen::XenStore& xs() { return *xs_; }
  std::string control() const { return dir_ / "control.sock"; }

  // Runs block-tapmap as libxl does, with the test's tapmap and control socket.
  int Run(const std::string& xenbus_path, const std::string& command,
          std::string* output = nullptr) {
    std::string out;
    int rc = RunCommand(
        {"env", "XENBUS_PATH=" + xenbus_path, "XENBUS_TYPE=vbd", "XENBUS_BASE_PATH=backend",
         "TAPMAP_CLI=" TAPMAP_BIN_DIR "/tapmap", "TAPMAP_CONTROL=" + control(),
         "TAPMAP_HOTPLUG_LOG=" + (dir_ / "xen-hotplug.log"), "TAPMAP_HOTPLUG_TIMEOUT=10",
         TAPMAP_BIN_DIR "/block-tapmap", command},
        &out);
    if (output) *output = out;
    return rc;
  }

  std::string Read(const std::string& path) {
    auto v = xs_->Read(kNoTransaction, path);
    return v.ok() ? *v : "<absent>";
  }

 private:
  TempDir dir_;
  std::unique_ptr<XenstoredInstance> xsd_;
  std::unique_ptr<xen::RealXenStore> xs_;
};

}  // namespace

TEST_CASE("block-tapmap add attaches the target volume and reports connected") {
  HotplugFixture f;
  ScriptedControlPeer peer(f.control(), Answer);
  LibxlDisk disk;  // xvda of domain 1, rw, target vm1
  REQUIRE(ReplayDiskAdd(f.xs(), disk).ok());

  REQUIRE(f.Run(disk.xenbus_path(), "add") == 0);
  CHECK(f.Read(disk.backend_path() + "/hotplug-status") == "connected");
  auto requests = peer.requests();
  REQUIRE(requests.size() == 1);
  CHECK(requests[0]["op"] == "vbd-attach");
  CHECK(requests[0]["domid"] == 1);
  CHECK(requests[0]["devid"] == 51712);
  CHECK(requests[0]["volume"] == "vm1");
  CHECK(requests[0]["mode"] == "w");
  CHECK(requests[0]["layout"] == "vbd");

  REQUIRE(f.Run(disk.xenbus_path(), "remove") == 0);
  requests = peer.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[1]["op"] == "vbd-detach");
  CHECK(requests[1]["devid"] == 51712);
}

TEST_CASE("block-tapmap passes read-only mode, absolute paths and the vbd3 layout") {
  HotplugFixture f;
  ScriptedControlPeer peer(f.control(), Answer);
  LibxlDisk ro;
  ro.vdev = "xvdc";
  ro.devid = 51744;
  ro.writable = false;
  ro.target = "golden-v1";
  REQUIRE(ReplayDiskAdd(f.xs(), ro).ok());
  REQUIRE(f.Run(ro.backend_path(), "add") == 0);  // absolute XENBUS_PATH works too

  LibxlDisk v3;  // Xen 4.19+: backend/vbd3, params "aio:vm2"
  v3.layout = "vbd3";
  v3.target = "vm2";
  REQUIRE(ReplayDiskAdd(f.xs(), v3).ok());
  REQUIRE(f.Run(v3.xenbus_path(), "add") == 0);
  CHECK(f.Read(v3.backend_path() + "/hotplug-status") == "connected");

  auto requests = peer.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[0]["mode"] == "r");
  CHECK(requests[0]["volume"] == "golden-v1");
  CHECK(requests[0]["devid"] == 51744);
  CHECK(requests[1]["volume"] == "vm2");
  CHECK(requests[1]["layout"] == "vbd3");
}

TEST_CASE("block-tapmap add failures are written to hotplug-status and hotplug-error") {
  HotplugFixture f;
  LibxlDisk disk;
  disk.vdev = "xvdd";
  disk.devid = 51760;
  disk.target = "missing";
  REQUIRE(ReplayDiskAdd(f.xs(), disk).ok());

  SECTION("the daemon is not running") {
    std::string out;
    CHECK(f.Run(disk.xenbus_path(), "add", &out) == 1);
    CHECK(f.Read(disk.backend_path() + "/hotplug-status") == "error");
    std::string err = f.Read(disk.backend_path() + "/hotplug-error");
    CHECK(err.find("exit 3") != std::string::npos);
    CHECK(err.find("is tapdisk-map running") != std::string::npos);
  }
  SECTION("the volume does not exist") {
    ScriptedControlPeer peer(f.control(), Answer);
    CHECK(f.Run(disk.xenbus_path(), "add") == 1);
    CHECK(f.Read(disk.backend_path() + "/hotplug-status") == "error");
    CHECK(f.Read(disk.backend_path() + "/hotplug-error").find("no volume 'missing'") !=
          std::string::npos);
  }
  SECTION("params is empty") {
    ScriptedControlPeer peer(f.control(), Answer);
    REQUIRE(f.xs().Write(kNoTransaction, disk.backend_path() + "/params", "").ok());
    CHECK(f.Run(disk.xenbus_path(), "add") == 1);
    CHECK(f.Read(disk.backend_path() + "/hotplug-status") == "error");
    CHECK(peer.requests().empty());
  }
}

TEST_CASE("block-tapmap remove of a disk tapdisk-map does not know succeeds") {
  HotplugFixture f;
  ScriptedControlPeer peer(f.control(), Answer);
  LibxlDisk disk;
  disk.vdev = "xvdb";
  disk.devid = 51728;  // the scripted daemon answers not-found for this one
  REQUIRE(ReplayDiskAdd(f.xs(), disk).ok());
  CHECK(f.Run(disk.xenbus_path(), "remove") == 0);
}

TEST_CASE("block-tapmap rejects bad invocations") {
  HotplugFixture f;
  CHECK(f.Run("backend/vbd/1/51712", "frobnicate") == 1);
  CHECK(f.Run("backend/vif/1/0", "add") == 1);
  CHECK(f.Run("backend/vbd/x/51712", "add") == 1);
  CHECK(f.Run("", "add") == 1);
}

}  // namespace tapmap::testing
