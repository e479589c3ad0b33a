// PoolLocation: where a pool lives, as given to `mapserver --pool` and
// `tapdisk-map --pool`. Parsed here, once, for every program.
//
//   PATH                                    a regular file or block device
//   rados:CEPHPOOL/PREFIX[?OPTION&...]      RADOS objects PREFIX.* in Ceph pool CEPHPOOL
//     conf=/path/ceph.conf                  the cluster's configuration (default:
//                                           librados's search, /etc/ceph/ceph.conf)
//     id=CLIENTNAME                         the Ceph client name without "client."
//                                           (default admin)
//     timeout=SECONDS                       bound on connecting and on every operation
//                                           (default 30, 1..3600)
//
// CEPHPOOL and PREFIX are non-empty and made of letters, digits, '.', '_' and '-'
// (PREFIX may not start with '.'). The object layout is protocol/pool_format.h's.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "rados/rados_options.h"

namespace tapmap::protocol {

inline constexpr std::string_view kRadosScheme = "rados:";
inline constexpr unsigned kDefaultRadosTimeoutSeconds = 30;

struct PoolLocation {
  enum class Kind { kFile, kRados };
  Kind kind = Kind::kFile;
  std::string path;            // kFile: the file or device
  rados::RadosOptions rados;   // kRados: the cluster, Ceph pool and client options
  std::string prefix;          // kRados: object name prefix

  bool is_rados() const { return kind == Kind::kRados; }
};

// Parses a pool location. kInvalidArgument naming the bad part: an empty text, a
// "rados:" form without "CEPHPOOL/PREFIX", a bad character, an unknown or repeated
// option, a timeout outside 1..3600. Any text not starting with "rados:" is a path.
Result<PoolLocation> ParsePoolLocation(std::string_view text);

}  // namespace tapmap::protocol
