// RadosExclusiveLock: a cls "lock" exclusive lock with a duration on one RADOS object
// (what RBD's exclusive lock and the mapserver's active role stand on,
// mapserver/doc/metadata_rados.md). The OSD judges expiry by its own clock: a holder
// that stops renewing loses the lock `duration` after its last renewal, and then
// anyone may take it (the expired entry is simply replaced).
//
// Fencing: AssertHeld adds a cls lock.assert_locked call to a write operation on the
// locked object, so that write fails (-EBUSY) unless this client still holds the lock
// at the OSD, atomically with the write. A new holder additionally blocklists the
// previous one (Blocklist), which makes the OSDs refuse every operation of that
// client, on any object.
//
// Thread-safe (librados is); the IoCtx must outlive the lock object.
#pragma once

#include <rados/librados.hpp>

#include <chrono>
#include <optional>
#include <string>

#include "common/status.h"

namespace tapmap::rados {

class RadosExclusiveLock {
 public:
  // A lock holder as the OSD records it.
  struct Holder {
    std::string client;   // "client.4123"
    std::string cookie;
    std::string address;  // the client's address, what Blocklist takes
  };

  // The lock `name` on object `oid`, taken by this client under `cookie` (unique per
  // process instance) for `duration` at a time. Nothing is sent yet.
  RadosExclusiveLock(librados::IoCtx& ioctx, std::string oid, std::string name, std::string cookie,
                     std::chrono::milliseconds duration);
  RadosExclusiveLock(const RadosExclusiveLock&) = delete;
  RadosExclusiveLock& operator=(const RadosExclusiveLock&) = delete;

  // Takes the lock if it is free or expired. kBusy while another holder's lock is
  // live; other errors as RadosStatus.
  Status TryAcquire();
  // Extends this client's lock by `duration` from now. Fails (kBusy/kNotFound) if the
  // lock was lost: expired and taken by another, or broken; kUnavailable if blocklisted
  // or the cluster is unreachable. A failure means this client no longer holds it.
  Status Renew();
  // Releases the lock (best effort; a lock already lost is not an error).
  Status Release();
  // The current live holder, if any.
  Result<std::optional<Holder>> CurrentHolder();
  // Adds "fail unless this client holds the lock" to `op`, which must target oid().
  void AssertHeld(librados::ObjectWriteOperation* op) const;

  const std::string& oid() const { return oid_; }
  const std::string& cookie() const { return cookie_; }
  std::chrono::milliseconds duration() const { return duration_; }

 private:
  Status Lock(uint8_t flags, const char* what);

  librados::IoCtx& ioctx_;
  const std::string oid_;
  const std::string name_;
  const std::string cookie_;
  const std::chrono::milliseconds duration_;
};

// Adds `address` (a Holder::address) to the cluster's OSD blocklist for
// `expire_seconds` and waits until this client has the OSD map that carries it, so
// that any OSD this client talks to afterwards refuses the blocklisted client.
Status BlocklistClient(librados::Rados& rados, const std::string& address, uint32_t expire_seconds);

}  // namespace tapmap::rados
