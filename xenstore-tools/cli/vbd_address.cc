#include "xenstore-tools/cli/vbd_address.h"

#include <cctype>

namespace tapmap::cli {
namespace {

// Parses a non-empty decimal number below `limit`; false otherwise.
bool ParseDecimal(std::string_view text, uint64_t limit, uint64_t* value) {
  if (text.empty() || text.size() > 10) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v >= limit) return false;
  *value = v;
  return true;
}

// "a" -> 0, "z" -> 25, "aa" -> 26 (bijective base 26). Consumes letters from `*text`.
bool ParseDiskLetters(std::string_view* text, uint64_t* disk) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < text->size() && (*text)[i] >= 'a' && (*text)[i] <= 'z') {
    v = v * 26 + static_cast<uint64_t>((*text)[i] - 'a' + 1);
    if (v > (1u << 20)) return false;
    ++i;
  }
  if (i == 0) return false;
  *disk = v - 1;
  text->remove_prefix(i);
  return true;
}

}  // namespace

Result<uint32_t> DeviceNumberOfVdev(std::string_view vdev) {
  auto bad = [&](const char* why) {
    return Status::InvalidArgument("bad virtual device '" + std::string(vdev) + "': " + why);
  };
  std::string_view rest = vdev;
  std::string_view prefix;
  for (std::string_view p : {"xvd", "hd", "sd"}) {
    if (rest.substr(0, p.size()) == p) {
      prefix = p;
      rest.remove_prefix(p.size());
      break;
    }
  }
  if (prefix.empty()) return bad("expected a number or xvdX, hdX, sdX");
  uint64_t disk = 0;
  if (!ParseDiskLetters(&rest, &disk)) return bad("missing disk letter");
  uint64_t part = 0;
  if (!rest.empty() && !ParseDecimal(rest, 256, &part)) return bad("bad partition number");
  if (prefix == "xvd") {
    if (disk < 16 && part < 16) return static_cast<uint32_t>((202u << 8) | (disk << 4) | part);
    if (disk >= (1u << 20) || part >= 256) return bad("disk or partition out of range");
    return static_cast<uint32_t>((1u << 28) | (disk << 8) | part);
  }
  if (prefix == "sd") {
    if (disk >= 16 || part >= 16) return bad("sd disks are a..p, partitions 0..15");
    return static_cast<uint32_t>((8u << 8) | (disk << 4) | part);
  }
  if (disk >= 4 || part >= 64) return bad("hd disks are a..d, partitions 0..63");
  static constexpr uint32_t kHdBase[4] = {3u << 8, (3u << 8) | 64, 22u << 8, (22u << 8) | 64};
  return static_cast<uint32_t>(kHdBase[disk] | part);
}

Result<VbdAddress> ParseVbdAddress(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    return Status::InvalidArgument("bad disk '" + std::string(text) +
                                   "': expected DOMID/DEVID, e.g. 3/51712 or 3/xvda");
  }
  VbdAddress addr;
  uint64_t domid = 0;
  if (!ParseDecimal(text.substr(0, slash), 0x7FF0, &domid)) {
    return Status::InvalidArgument("bad domain id in '" + std::string(text) + "'");
  }
  addr.domid = static_cast<uint32_t>(domid);
  std::string_view dev = text.substr(slash + 1);
  uint64_t devid = 0;
  if (!dev.empty() && std::isdigit(static_cast<unsigned char>(dev[0]))) {
    if (!ParseDecimal(dev, 1ull << 32, &devid)) {
      return Status::InvalidArgument("bad device id in '" + std::string(text) + "'");
    }
    addr.devid = static_cast<uint32_t>(devid);
    return addr;
  }
  auto number = DeviceNumberOfVdev(dev);
  if (!number.ok()) return number.status();
  addr.devid = *number;
  return addr;
}

}  // namespace tapmap::cli
