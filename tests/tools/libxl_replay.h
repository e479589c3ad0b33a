// LibxlDiskReplay: the xenstore writes libxl (Xen 4.17's tools/libs/light) makes for
// one xl disk line, replayed against a real xenstored so that block-tapmap and
// tapdisk-map can be tested without a hypervisor.
//
// For 'vdev=xvda, access=rw, backendtype=phy, script=block-tapmap, target=vm1' and
// guest domain D, libxl's device_disk_add + libxl__device_generic_add write, in ONE
// transaction:
//   /libxl/D/device/vbd/51712/{frontend,backend}         paths of the two below
//   /local/domain/D/device/vbd/51712                     perms: D none, 0 read
//       backend, backend-id=0, state=1, virtual-device=51712, device-type=disk,
//       protocol=x86_64-abi (PV guests)
//   /local/domain/0/backend/vbd/D/51712                  perms: 0 none, D read
//       frontend, params=vm1, script=/etc/xen/scripts/block-tapmap, frontend-id=D,
//       online=1, removable=0, bootable=1, state=1, dev=xvda, type=phy, mode=w,
//       device-type=disk, discard-enable=1
//   (and a copy of the backend keys under /libxl/D/device/vbd/51712)
// then waits up to 10 s for backend state 2 (InitWait) and runs the hotplug script
// with XENBUS_PATH=backend/vbd/D/51712 XENBUS_TYPE=vbd XENBUS_BASE_PATH=backend.
//
// Removal (libxl__initiate_device_generic_remove): online=0 and state=5 (Closing) on
// the backend in one transaction, a wait of up to 10 s for state 6 (Closed), the
// script's "remove", then the frontend, backend and /libxl directories are removed.
//
// The test xenstored must know the guest domain (XenstoredInstance::Start({domid})):
// xenstored 4.17 refuses access lists naming a domain that does not exist.
//
// The vbd3 layout (Xen 4.19+, backendtype=tap) is the same under backend/vbd3 with
// params="aio:<target>" and type=tap.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "tapdisk-map/xen/xenstore.h"

namespace tapmap::testing {

struct LibxlDisk {
  uint32_t domid = 1;
  std::string vdev = "xvda";
  uint32_t devid = 51712;
  std::string target = "vm1";
  bool writable = true;
  std::string layout = "vbd";  // "vbd" or "vbd3"
  std::string script = "/etc/xen/scripts/block-tapmap";

  std::string frontend_path() const;  // /local/domain/D/device/vbd/DEVID
  std::string backend_path() const;   // /local/domain/0/backend/LAYOUT/D/DEVID
  std::string xenbus_path() const;    // backend/LAYOUT/D/DEVID (what libxl exports)
};

// Creates the guest's /local/domain/D directory as domain creation would (name,
// domid, device/), owned by D, and libxl's own /libxl/D/type ("pv", "pvh" or "hvm",
// what libxl__domain_make writes and block-tapmap reads).
Status ReplayDomainCreate(xen::XenStore& xs, uint32_t domid, const std::string& type = "pv");

// The device-add transaction above.
Status ReplayDiskAdd(xen::XenStore& xs, const LibxlDisk& disk);

// online=0, state=5 on the backend (the start of removal).
Status ReplayDiskCloseRequest(xen::XenStore& xs, const LibxlDisk& disk);

// Removal of the frontend, backend and /libxl directories (the end of removal).
Status ReplayDiskDestroy(xen::XenStore& xs, const LibxlDisk& disk);

// Polls `path` until it reads `value` or `timeout_ms` passes; true if it did.
bool WaitForValue(xen::XenStore& xs, const std::string& path, const std::string& value,
                  int timeout_ms);

}  // namespace tapmap::testing
