#include "tests/tools/libxl_replay.h"

#include <chrono>
#include <thread>
#include <utility>
#include <vector>

#include "tests/support/wait_until.h"

namespace tapmap::testing {
namespace {

using xen::kNoTransaction;
using xen::TransactionId;
using xen::XenStore;
using xen::XenStorePermission;

// Runs `body` in a transaction, retrying while xenstored reports a conflict.
template <typename Fn>
Status InTransaction(XenStore& xs, Fn&& body) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto tx = xs.StartTransaction();
    if (!tx.ok()) return tx.status();
    Status s = body(*tx);
    if (!s.ok()) {
      (void)xs.EndTransaction(*tx, /*abort=*/true);
      return s;
    }
    Status end = xs.EndTransaction(*tx, /*abort=*/false);
    if (end.ok()) return end;
    if (end.code() != StatusCode::kBusy && end.code() != StatusCode::kAborted &&
        end.code() != StatusCode::kUnavailable) {
      return end;
    }
  }
  return Status::Busy("xenstore transaction kept conflicting");
}

Status WriteAll(XenStore& xs, TransactionId tx, const std::string& dir,
                const std::vector<std::pair<std::string, std::string>>& kvs) {
  for (const auto& [k, v] : kvs) TAPMAP_RETURN_IF_ERROR(xs.Write(tx, dir + "/" + k, v));
  return Status::Ok();
}

Status SetPerms(XenStore& xs, TransactionId tx, const std::string& path,
                std::vector<XenStorePermission> perms) {
  return xs.SetPermissions(tx, path, perms);
}

}  // namespace

std::string LibxlDisk::frontend_path() const {
  return "/local/domain/" + std::to_string(domid) + "/device/vbd/" + std::to_string(devid);
}
std::string LibxlDisk::backend_path() const {
  return "/local/domain/0/backend/" + layout + "/" + std::to_string(domid) + "/" +
         std::to_string(devid);
}
std::string LibxlDisk::xenbus_path() const {
  return "backend/" + layout + "/" + std::to_string(domid) + "/" + std::to_string(devid);
}

Status ReplayDomainCreate(XenStore& xs, uint32_t domid, const std::string& type) {
  std::string dom = "/local/domain/" + std::to_string(domid);
  return InTransaction(xs, [&](TransactionId tx) -> Status {
    TAPMAP_RETURN_IF_ERROR(xs.Write(tx, "/libxl/" + std::to_string(domid) + "/type", type));
    TAPMAP_RETURN_IF_ERROR(xs.Mkdir(tx, dom));
    TAPMAP_RETURN_IF_ERROR(SetPerms(
        xs, tx, dom, {{0, XenStorePermission::kNone}, {domid, XenStorePermission::kRead}}));
    TAPMAP_RETURN_IF_ERROR(xs.Write(tx, dom + "/name", "guest" + std::to_string(domid)));
    TAPMAP_RETURN_IF_ERROR(xs.Write(tx, dom + "/domid", std::to_string(domid)));
    TAPMAP_RETURN_IF_ERROR(xs.Mkdir(tx, dom + "/device"));
    return SetPerms(xs, tx, dom + "/device",
                    {{domid, XenStorePermission::kNone}, {0, XenStorePermission::kRead}});
  });
}

Status ReplayDiskAdd(XenStore& xs, const LibxlDisk& disk) {
  const std::string fe = disk.frontend_path();
  const std::string be = disk.backend_path();
  const std::string lx =
      "/libxl/" + std::to_string(disk.domid) + "/device/vbd/" + std::to_string(disk.devid);
  const std::string d = std::to_string(disk.domid);
  std::string params = disk.layout == "vbd3" ? "aio:" + disk.target : disk.target;
  std::vector<std::pair<std::string, std::string>> back = {
      {"params", params},
      {"script", disk.script},
      {"frontend-id", d},
      {"online", "1"},
      {"removable", "0"},
      {"bootable", "1"},
      {"state", "1"},
      {"dev", disk.vdev},
      {"type", disk.layout == "vbd3" ? "tap" : "phy"},
      {"mode", disk.writable ? "w" : "r"},
      {"device-type", "disk"},
      {"discard-enable", disk.writable ? "1" : "0"},
  };
  std::vector<std::pair<std::string, std::string>> front = {
      {"backend-id", "0"},
      {"state", "1"},
      {"virtual-device", std::to_string(disk.devid)},
      {"device-type", "disk"},
      {"protocol", "x86_64-abi"},
  };
  const std::vector<XenStorePermission> fe_perms = {{disk.domid, XenStorePermission::kNone},
                                                    {0, XenStorePermission::kRead}};
  const std::vector<XenStorePermission> be_perms = {{0, XenStorePermission::kNone},
                                                    {disk.domid, XenStorePermission::kRead}};
  return InTransaction(xs, [&](TransactionId tx) -> Status {
    (void)xs.Remove(tx, lx);
    TAPMAP_RETURN_IF_ERROR(xs.Write(tx, lx + "/frontend", fe));
    TAPMAP_RETURN_IF_ERROR(xs.Write(tx, lx + "/backend", be));
    (void)xs.Remove(tx, fe);
    TAPMAP_RETURN_IF_ERROR(xs.Mkdir(tx, fe));
    TAPMAP_RETURN_IF_ERROR(SetPerms(xs, tx, fe, fe_perms));
    TAPMAP_RETURN_IF_ERROR(xs.Write(tx, fe + "/backend", be));
    for (const auto& [k, v] : front) {
      TAPMAP_RETURN_IF_ERROR(xs.Write(tx, fe + "/" + k, v));
      TAPMAP_RETURN_IF_ERROR(SetPerms(xs, tx, fe + "/" + k, fe_perms));
    }
    (void)xs.Remove(tx, be);
    TAPMAP_RETURN_IF_ERROR(xs.Mkdir(tx, be));
    TAPMAP_RETURN_IF_ERROR(SetPerms(xs, tx, be, be_perms));
    TAPMAP_RETURN_IF_ERROR(xs.Write(tx, be + "/frontend", fe));
    TAPMAP_RETURN_IF_ERROR(WriteAll(xs, tx, be, back));
    return WriteAll(xs, tx, lx, back);
  });
}

Status ReplayDiskCloseRequest(XenStore& xs, const LibxlDisk& disk) {
  const std::string be = disk.backend_path();
  return InTransaction(xs, [&](TransactionId tx) -> Status {
    TAPMAP_RETURN_IF_ERROR(xs.Write(tx, be + "/online", "0"));
    return xs.Write(tx, be + "/state", "5");
  });
}

Status ReplayDiskDestroy(XenStore& xs, const LibxlDisk& disk) {
  const std::string lx =
      "/libxl/" + std::to_string(disk.domid) + "/device/vbd/" + std::to_string(disk.devid);
  return InTransaction(xs, [&](TransactionId tx) -> Status {
    (void)xs.Remove(tx, disk.frontend_path());
    (void)xs.Remove(tx, disk.backend_path());
    (void)xs.Remove(tx, lx);
    return Status::Ok();
  });
}

bool WaitForValue(XenStore& xs, const std::string& path, const std::string& value, int timeout_ms) {
  return WaitUntil(
      [&] {
        auto v = xs.Read(kNoTransaction, path);
        return v.ok() && *v == value;
      },
      std::chrono::milliseconds(timeout_ms), std::chrono::milliseconds(20));
}

}  // namespace tapmap::testing
