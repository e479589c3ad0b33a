// VbdAddress: which guest disk a `tapmap vbd`/`snapshot-live` command is about, written
// "<domid>/<devid>" where devid is the xenstore device number ("3/51712") or a
// virtual device name Xen understands ("3/xvda", "3/hda", "3/sdb").
//
// Device numbers follow Xen's docs/misc/vbd-interface: xvd<disk>[<part>] is
// 202<<8 | disk<<4 | part for disks 0..15 and 1<<28 | disk<<8 | part beyond;
// sd<disk> is 8<<8 | disk<<4 | part (disks 0..15); hda..hdd are 3<<8, 3<<8|64,
// 22<<8, 22<<8|64 (plus part). Disk letters: a..z, then aa, ab, ...
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tapmap::cli {

struct VbdAddress {
  uint32_t domid = 0;
  uint32_t devid = 0;
  std::string layout = "vbd";  // xenstore backend directory: "vbd" (Xen 4.17) or "vbd3"

  std::string ToString() const { return std::to_string(domid) + "/" + std::to_string(devid); }
};

// Parses "<domid>/<devid|vdev>". kInvalidArgument names the bad text.
Result<VbdAddress> ParseVbdAddress(std::string_view text);

// The device number of a vdev name ("xvda" -> 51712); kInvalidArgument if unknown.
Result<uint32_t> DeviceNumberOfVdev(std::string_view vdev);

}  // namespace tapmap::cli
