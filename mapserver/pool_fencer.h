// PoolFencer: cuts an expired host instance off the pool before the mapserver gives
// its volumes to anyone else (mapserver/doc/leases.md "Fencing on a RADOS pool").
//
// On a file or block-device pool a host fences itself: its I/O stops when its lease
// runs out (FencedPoolIo), and an I/O it issued completes within the lease margin. On
// a RADOS pool that is not enough: a write issued just before a network partition is
// retried by librados and may reach the OSDs after the partition heals, long after
// the host's lease ran out and its blocks were handed on. So the server blocklists the
// instance's librados clients (the identities it logged in with, Gate.login
// poolClient) in the Ceph cluster — the OSDs then refuse every operation of theirs,
// delayed or new, as RBD's exclusive-lock breaking does — and releases the instance's
// openers only once that is in force.
//
// Fence() is called on the server's event loop thread and must not block it.
#pragma once

#include <kj/async.h>

#include <string>
#include <vector>

namespace tapmap::mapserver {

class PoolFencer {
 public:
  virtual ~PoolFencer() = default;
  // Resolves once no operation of any of `clients` can reach the pool any more;
  // rejects (with a description) if that could not be made sure, e.g. the cluster's
  // monitors are unreachable: the caller keeps the instance's openers and tries again.
  virtual kj::Promise<void> Fence(std::vector<std::string> clients) = 0;
};

}  // namespace tapmap::mapserver
