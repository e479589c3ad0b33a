// LeaseTable: what the server has promised to whom (mapserver/doc/leases.md, the one
// description of the rules) —
//   - host leases: one per logged-in host instance, renewed by the host; an instance
//     whose lease ran out is expired by MappingService;
//   - openers: one per open of a volume, read-only or holding the volume's one rw lease
//     with its epoch (mapping.capnp ExtentState: the blocks a lease may write in place
//     are those allocated after its epoch). An opener belongs to its host instance,
//     not to a connection: when its Volume capability goes away without a close it is
//     orphaned (no callback) and stays until reclaimed or expired.
// The table records and answers questions; MappingService decides (who may open,
// when to expire or revoke) and talks to the hosts.
//
// Threading: not thread-safe; used from the server's event-loop thread.
#pragma once

#include <kj/time.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "mapserver/volume_store.h"
#include "tapmap/proto/mapping.capnp.h"

namespace tapmap::mapserver {

// The server's key of a host instance (not the client's `instance` number, which is 0
// for every tool session).
using HostLeaseId = uint64_t;

struct HostLease {
  HostLeaseId id = 0;
  std::string host;
  uint64_t instance = 0;      // the client's; 0 for a tool session (cannot reclaim)
  kj::TimePoint renewed = kj::origin<kj::TimePoint>();  // last login/renew/call
  bool blocklisted = false;   // renewals refused; expires on its own
  bool recorded = false;      // its instance record is durable (metadata_format.h)
  // Every pool I/O identity it logged in with (Gate.login poolClient; at most
  // kMaxPoolClients, the latest kept), and whether they are being fenced (expiry).
  std::vector<std::string> pool_clients;
  bool fencing = false;
  bool resumable() const { return instance != 0; }
};

// Pool I/O identities remembered per instance (HostLease::pool_clients).
inline constexpr size_t kMaxPoolClients = 16;

// One open of a volume.
struct Opener {
  OpenerId id = 0;
  std::string volume;
  HostLeaseId holder = 0;
  std::string host;
  bool writable = false;
  // rw openers: the lease's epoch (VolumeStore::NewLeaseEpoch); kNoWriter otherwise.
  uint64_t lease_epoch = kNoWriter;
  // The live callback while a Volume capability serves the opener; null when orphaned.
  proto::MapCallback::Client callback = nullptr;
  bool attached = false;
  // Counts attachments: a Volume capability serves the opener only while the count is
  // the one it attached with (a reclaim over a connection the server still thinks
  // alive takes the opener over from the stale capability).
  uint64_t attachment = 0;
  bool revoked = false;  // calls fail with aborted; stays until its host lease expires
  // A rw open made while another host held the lease (live migration): reads like a
  // read-only opener (writable is false) until promoted to the lease.
  bool standby = false;
};

class LeaseTable {
 public:
  // ---- host leases ----
  // A login of (`host`, `instance`) at `now`. A resumable instance the table still
  // holds is renewed (`*resumed` = true, unless it was blocklisted: then it is left
  // to expire and a fresh record is made); otherwise a new record. `*superseded`
  // receives the other resumable instances of the same host (a host runs one
  // tapdisk-map: they are dead) for the caller to expire.
  HostLeaseId Login(const std::string& host, uint64_t instance, kj::TimePoint now, bool* resumed,
                    std::vector<HostLeaseId>* superseded);
  HostLease* FindHost(HostLeaseId id);
  // Renews; false if the instance is unknown (expired) or blocklisted.
  bool Renew(HostLeaseId id, kj::TimePoint now);
  // Instances last renewed before `deadline`.
  std::vector<HostLeaseId> RenewedBefore(kj::TimePoint deadline) const;
  void EraseHost(HostLeaseId id) { hosts_.erase(id); }
  size_t host_count() const { return hosts_.size(); }

  // ---- openers ----
  // A fresh opener id (never reused while this server runs).
  OpenerId NextId() { return next_opener_id_++; }
  Opener& Add(Opener opener);
  // Removes the opener; false if it was not there.
  bool Remove(OpenerId id) { return openers_.erase(id) != 0; }
  Opener* Find(OpenerId id);
  // The opener holding `volume`'s rw lease, or null.
  Opener* WriterOf(const std::string& volume);
  // The epoch of `volume`'s rw lease, kNoWriter if it has none.
  uint64_t WriterEpochOf(const std::string& volume);
  std::vector<Opener*> OpenersOf(const std::string& volume);
  std::vector<OpenerId> OpenersHeldBy(HostLeaseId holder) const;
  // The standby rw opener of `volume`, or null.
  Opener* StandbyOf(const std::string& volume);
  // An opener of `holder` for `volume` in this mode (a standby counts as rw) that is
  // not revoked, orphaned ones first, or null.
  Opener* FindReclaimable(HostLeaseId holder, const std::string& volume, bool writable);
  size_t size() const { return openers_.size(); }

 private:
  std::unordered_map<HostLeaseId, HostLease> hosts_;
  HostLeaseId next_host_id_ = 1;
  std::unordered_map<OpenerId, Opener> openers_;
  OpenerId next_opener_id_ = 1;
};

}  // namespace tapmap::mapserver
