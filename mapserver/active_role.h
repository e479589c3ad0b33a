// RadosActiveRole: becoming and staying the one active mapserver of a RADOS pool
// (mapserver/doc/metadata_rados.md "Active, standby, fencing").
//
//   BecomeActive  a standby (--standby) rebuilds its local metadata from RADOS and
//                 follows the journal (every 200 ms) while it tries the active lock
//                 every 500 ms; a plain server waits at most one lock duration (+2 s)
//                 for the lock. Once it holds the lock it renews it (every duration/6,
//                 on a thread of its own: a failed renewal ends the process at once,
//                 exit status 3), blocklists the previous active recorded in the
//                 journal (and waits for the OSD map that says so), and brings the
//                 local metadata up to the journal's end.
//   Attach        the opened store journals every transaction to RADOS, guarded by
//                 the lock.
//   Announce      writes the listen address into PREFIX.meta.active.
//   Shutdown      a last checkpoint, then the lock is released.
//
// Not thread-safe apart from the internal renewal thread; one per process.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/logging.h"
#include "common/status.h"
#include "mapserver/metadata_store.h"
#include "mapserver/rados_metadata_journal.h"
#include "rados/exclusive_lock.h"
#include "rados/rados_cluster.h"

namespace tapmap::mapserver {

struct ActiveRoleOptions {
  std::string meta_dir;  // the local working copy (rebuilt from RADOS)
  bool standby = false;
  std::chrono::milliseconds lock_duration{6000};
  uint32_t checkpoint_every = 1000;  // journal records between checkpoints
};

class RadosActiveRole {
 public:
  RadosActiveRole(std::unique_ptr<rados::RadosCluster> cluster, std::string prefix, ActiveRoleOptions options,
                  Logger logger);
  ~RadosActiveRole();  // stops renewing (the lock then expires unless Shutdown released it)
  RadosActiveRole(const RadosActiveRole&) = delete;
  RadosActiveRole& operator=(const RadosActiveRole&) = delete;

  // Blocks until this server is the active one and meta_dir holds the metadata up to
  // the journal's end (see above). kBusy: not a standby and another server stays
  // active; kAborted: a SIGTERM or SIGINT is pending (the caller blocks them and
  // exits); other errors: RADOS unreachable, metadata missing or corrupt.
  Status BecomeActive();
  // Journals `store`'s transactions (it must be open on meta_dir and outlive this).
  void Attach(MetadataStore& store);
  Status Announce(const std::string& address);
  // A last checkpoint, then releases the lock. Call with no transaction running.
  Status Shutdown();

  RadosMetadataJournal& journal() { return journal_; }

 private:
  Status FollowUntilLocked();
  Status WaitForLock();
  void StartRenewing();
  void StopRenewing();

  std::unique_ptr<rados::RadosCluster> cluster_;
  ActiveRoleOptions options_;
  Logger logger_;
  RadosMetadataJournal journal_;
  rados::RadosExclusiveLock lock_;
  std::thread renewer_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_renewing_ = false;
};

}  // namespace tapmap::mapserver
