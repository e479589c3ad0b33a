// LeaseTable: who has which volume open at this server — the openers (one per Volume
// capability handed out), read-only or holding the volume's one rw lease with its
// epoch (mapping.capnp ExtentState: the blocks a lease may write in place are those
// allocated after its epoch). The table only records; MappingService decides (who may
// open, when a lease is revoked) and talks to the openers.
//
// Openers are owned by their Volume capabilities; the table holds pointers to the
// ones registered, which each capability removes before it goes away.
//
// Threading: not thread-safe; used from the server's event-loop thread.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "mapserver/volume_store.h"
#include "tapmap/proto/mapping.capnp.h"

namespace tapmap::mapserver {

// One open Volume capability.
struct Opener {
  OpenerId id = 0;
  std::string volume;
  std::string host;
  bool writable = false;
  // rw openers: the lease's epoch (VolumeStore::NewLeaseEpoch); kNoWriter otherwise.
  uint64_t lease_epoch = kNoWriter;
  proto::MapCallback::Client callback = nullptr;
  enum class State { kOpen, kClosed, kRevoked } state = State::kOpen;
};

class LeaseTable {
 public:
  // A fresh opener id (never reused while this server runs).
  OpenerId NextId() { return next_id_++; }
  void Add(Opener* opener) { openers_[opener->id] = opener; }
  // Removes the opener; false if it was not registered (already released or revoked).
  bool Remove(OpenerId id) { return openers_.erase(id) != 0; }
  Opener* Find(OpenerId id);
  // The opener holding `volume`'s rw lease, or null.
  Opener* WriterOf(const std::string& volume);
  // The epoch of `volume`'s rw lease, kNoWriter if it has none.
  uint64_t WriterEpochOf(const std::string& volume);
  std::vector<Opener*> OpenersOf(const std::string& volume);
  size_t size() const { return openers_.size(); }

 private:
  std::unordered_map<OpenerId, Opener*> openers_;
  OpenerId next_id_ = 1;
};

}  // namespace tapmap::mapserver
