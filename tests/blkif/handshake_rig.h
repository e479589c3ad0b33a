// A backend manager against a private real xenstored, with guests simulated by
// SimBlkfront, and a "toolstack" connection that writes what xl 4.17 writes.
#pragma once

#include <future>
#include <thread>

#include "tapdisk-map/blkif/backend_manager.h"
#include "tapdisk-map/xen/sim_platform.h"
#include "tests/blkif/ring_harness.h"
#include "tests/support/memory_volume_opener.h"
#include "tests/support/wait_until.h"
#include "tests/support/xenstored_instance.h"

namespace tapmap::testing {

class HandshakeRig {
 public:
  HandshakeRig() {
    auto xsd = XenstoredInstance::Start({1, 2, 3, 4, 5, 6, 7, 8, 9});
    if (!xsd.ok()) throw StatusError(xsd.status());
    xsd_ = std::move(*xsd);
    auto ts = xsd_->Connect();
    if (!ts.ok()) throw StatusError(ts.status());
    toolstack = std::move(*ts);
    hv = std::make_shared<xen::SimulatedHypervisor>();
    if (!hv->CreateDomain(kBackendDomid, 0).ok()) throw std::runtime_error("create dom0");
    threads_ = std::make_unique<IoRunner>(io, 2);
  }
  ~HandshakeRig() {
    StopBackend();
    threads_.reset();
  }

  boost::asio::io_context io;
  std::unique_ptr<xen::RealXenStore> toolstack;
  std::shared_ptr<xen::SimulatedHypervisor> hv;
  MemoryVolumeOpener opener{io};
  std::unique_ptr<blkif::BackendManager> manager;

  // The manager logs to `log_sink` (stderr by default).
  Status StartBackend(blkif::BackendOptions options = {}, std::FILE* log_sink = stderr) {
    auto store = xsd_->Connect();
    if (!store.ok()) return store.status();
    platform_ = std::make_unique<xen::XenPlatform>(xen::MakeSimulatedPlatform(hv, kBackendDomid, std::move(*store)));
    manager = std::make_unique<blkif::BackendManager>(io, *platform_, opener, options,
                                                      Logger("blkif", getenv("BLKIF_TEST_DEBUG") ? LogLevel::kDebug : LogLevel::kWarning, log_sink));
    return manager->Start();
  }
  // Stops the manager (xenstore left as is, like a daemon exiting) and frees it.
  void StopBackend() {
    if (!manager) return;
    std::promise<void> p;
    manager->Stop([&p] { p.set_value(); });
    p.get_future().wait();
    manager.reset();
    platform_.reset();
  }

  static std::string BackendPath(uint32_t domid, uint32_t devid, const char* layout = "vbd") {
    return "/local/domain/0/backend/" + std::string(layout) + "/" + std::to_string(domid) + "/" + std::to_string(devid);
  }
  static std::string FrontendPath(uint32_t domid, uint32_t devid) {
    return "/local/domain/" + std::to_string(domid) + "/device/vbd/" + std::to_string(devid);
  }

  // What libxl (xl 4.17) writes for `disk = ['vdev=xvda, backendtype=phy,
  // script=block-tapmap, target=<volume>']`, in one transaction, with its permissions.
  Status XlAddDisk(uint32_t domid, uint32_t devid, const std::string& volume, const char* mode = "w",
                   const char* layout = "vbd", const char* script = "/etc/xen/scripts/block-tapmap") {
    std::string be = BackendPath(domid, devid, layout);
    std::string fe = FrontendPath(domid, devid);
    return xen::RunTransaction(*toolstack, [&](xen::TransactionId tx) -> Status {
      xen::XenStore& xs = *toolstack;
      TAPMAP_RETURN_IF_ERROR(xs.Remove(tx, be));
      TAPMAP_RETURN_IF_ERROR(xs.Remove(tx, fe));
      TAPMAP_RETURN_IF_ERROR(xs.Mkdir(tx, fe));
      TAPMAP_RETURN_IF_ERROR(xs.SetPermissions(tx, fe, {{domid, xen::XenStorePermission::kNone},
                                                        {0, xen::XenStorePermission::kRead}}));
      TAPMAP_RETURN_IF_ERROR(xs.Mkdir(tx, be));
      TAPMAP_RETURN_IF_ERROR(xs.SetPermissions(tx, be, {{0, xen::XenStorePermission::kNone},
                                                        {domid, xen::XenStorePermission::kRead}}));
      auto put = [&](const std::string& p, const std::string& v) { return xs.Write(tx, p, v); };
      TAPMAP_RETURN_IF_ERROR(put(fe + "/backend", be));
      TAPMAP_RETURN_IF_ERROR(put(fe + "/backend-id", "0"));
      TAPMAP_RETURN_IF_ERROR(put(fe + "/state", "1"));
      TAPMAP_RETURN_IF_ERROR(put(fe + "/virtual-device", std::to_string(devid)));
      TAPMAP_RETURN_IF_ERROR(put(fe + "/device-type", "disk"));
      TAPMAP_RETURN_IF_ERROR(put(fe + "/trusted", "1"));
      TAPMAP_RETURN_IF_ERROR(put(be + "/frontend", fe));
      TAPMAP_RETURN_IF_ERROR(put(be + "/frontend-id", std::to_string(domid)));
      TAPMAP_RETURN_IF_ERROR(put(be + "/online", "1"));
      TAPMAP_RETURN_IF_ERROR(put(be + "/removable", "0"));
      TAPMAP_RETURN_IF_ERROR(put(be + "/bootable", "1"));
      TAPMAP_RETURN_IF_ERROR(put(be + "/state", "1"));
      TAPMAP_RETURN_IF_ERROR(put(be + "/dev", "xvda"));
      TAPMAP_RETURN_IF_ERROR(put(be + "/type", "phy"));
      TAPMAP_RETURN_IF_ERROR(put(be + "/mode", mode));
      TAPMAP_RETURN_IF_ERROR(put(be + "/device-type", "disk"));
      TAPMAP_RETURN_IF_ERROR(put(be + "/discard-enable", "1"));
      TAPMAP_RETURN_IF_ERROR(put(be + "/params", volume));
      TAPMAP_RETURN_IF_ERROR(put(be + "/script", script));
      return Status::Ok();
    });
  }

  // libxl's device removal: online=0 and state=Closing on the backend.
  Status XlRemoveDisk(uint32_t domid, uint32_t devid) {
    std::string be = BackendPath(domid, devid);
    return xen::RunTransaction(*toolstack, [&](xen::TransactionId tx) -> Status {
      TAPMAP_RETURN_IF_ERROR(toolstack->Write(tx, be + "/online", "0"));
      return toolstack->Write(tx, be + "/state", "5");
    });
  }

  // Polls `path` until it reads `value` (10 s). Returns what it read last.
  std::string WaitNode(const std::string& path, const std::string& value,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::string last = "<absent>";
    WaitUntil(
        [&] {
          auto v = toolstack->Read(xen::kNoTransaction, path);
          last = v.ok() ? *v : "<absent>";
          return last == value;
        },
        timeout);
    return last;
  }

  Result<blkif::VbdInfo> Attach(uint32_t domid, uint32_t devid, const std::string& volume, bool ro = false,
                                blkif::Layout layout = blkif::Layout::kVbd, uint32_t sector_size = 512) {
    std::promise<Result<blkif::VbdInfo>> p;
    blkif::AttachSpec spec;
    spec.key = blkif::VbdKey{domid, devid, layout};
    spec.volume = volume;
    spec.read_only = ro;
    spec.sector_size = sector_size;
    manager->Attach(spec, [&p](Result<blkif::VbdInfo> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }
  Status Detach(uint32_t domid, uint32_t devid) {
    std::promise<Status> p;
    manager->Detach(blkif::VbdKey{domid, devid, blkif::Layout::kVbd}, [&p](Status s) { p.set_value(s); });
    return p.get_future().get();
  }
  std::vector<blkif::VbdInfo> List() {
    std::promise<std::vector<blkif::VbdInfo>> p;
    manager->List([&p](std::vector<blkif::VbdInfo> v) { p.set_value(std::move(v)); });
    return p.get_future().get();
  }
  Status Pause(uint32_t domid, uint32_t devid) {
    std::promise<Status> p;
    manager->Pause(blkif::VbdKey{domid, devid, blkif::Layout::kVbd}, [&p](Status s) { p.set_value(s); });
    return p.get_future().get();
  }
  Status Resume(uint32_t domid, uint32_t devid) {
    std::promise<Status> p;
    manager->Resume(blkif::VbdKey{domid, devid, blkif::Layout::kVbd}, [&p](Status s) { p.set_value(s); });
    return p.get_future().get();
  }

  // A guest: domain + blkfront that publishes its rings at the frontend path.
  std::unique_ptr<SimBlkfront> Guest(uint32_t domid, SimBlkfrontOptions options = {}) {
    if (!hv->IsAlive(domid)) {
      if (!hv->CreateDomain(domid, 2048).ok()) return nullptr;
    }
    auto f = std::make_unique<SimBlkfront>(hv, domid, kBackendDomid, options);
    if (!f->SetupRings().ok()) return nullptr;
    return f;
  }

 private:
  std::unique_ptr<XenstoredInstance> xsd_;
  std::unique_ptr<xen::XenPlatform> platform_;
  std::unique_ptr<IoRunner> threads_;
};

}  // namespace tapmap::testing
