// RadosOptions: where and how to reach a Ceph cluster (a plain value, no librados
// types; protocol/pool_location.h fills it from "rados:POOL/PREFIX?...").
#pragma once

#include <string>

namespace tapmap::rados {

struct RadosOptions {
  std::string pool;       // the Ceph pool (must exist)
  std::string conf;       // ceph.conf path; "" = librados's default search (/etc/ceph/ceph.conf)
  std::string client_id;  // client name without "client.", e.g. "admin"
  // Bound, in seconds, on connecting (client_mount_timeout) and on every monitor and
  // OSD operation (rados_mon_op_timeout, rados_osd_op_timeout): an unreachable or
  // stopped cluster is an error after this long, never a hang. Must be >= 1.
  unsigned timeout_seconds = 30;
};

}  // namespace tapmap::rados
