#include "mapserver/lease_table.h"

namespace tapmap::mapserver {

HostLeaseId LeaseTable::Login(const std::string& host, uint64_t instance, kj::TimePoint now,
                              bool* resumed, std::vector<HostLeaseId>* superseded) {
  *resumed = false;
  HostLeaseId found = 0;
  if (instance != 0) {
    for (auto& [id, h] : hosts_) {
      if (h.host != host || !h.resumable()) continue;
      if (h.instance == instance && !h.blocklisted) {
        found = id;
      } else if (h.instance != instance) {
        superseded->push_back(id);
      }
    }
  }
  if (found != 0) {
    hosts_[found].renewed = now;
    *resumed = true;
    return found;
  }
  HostLease lease;
  lease.id = next_host_id_++;
  lease.host = host;
  lease.instance = instance;
  lease.renewed = now;
  hosts_.emplace(lease.id, lease);
  return lease.id;
}

HostLease* LeaseTable::FindHost(HostLeaseId id) {
  auto it = hosts_.find(id);
  return it == hosts_.end() ? nullptr : &it->second;
}

bool LeaseTable::Renew(HostLeaseId id, kj::TimePoint now) {
  HostLease* h = FindHost(id);
  if (h == nullptr || h->blocklisted) return false;
  h->renewed = now;
  return true;
}

std::vector<HostLeaseId> LeaseTable::RenewedBefore(kj::TimePoint deadline) const {
  std::vector<HostLeaseId> out;
  for (const auto& [id, h] : hosts_) {
    if (h.renewed < deadline) out.push_back(id);
  }
  return out;
}

Opener& LeaseTable::Add(Opener opener) {
  OpenerId id = opener.id;
  return openers_.insert_or_assign(id, std::move(opener)).first->second;
}

Opener* LeaseTable::Find(OpenerId id) {
  auto it = openers_.find(id);
  return it == openers_.end() ? nullptr : &it->second;
}

Opener* LeaseTable::WriterOf(const std::string& volume) {
  for (auto& [id, o] : openers_) {
    if (o.volume == volume && o.writable) return &o;
  }
  return nullptr;
}

uint64_t LeaseTable::WriterEpochOf(const std::string& volume) {
  Opener* writer = WriterOf(volume);
  return writer != nullptr ? writer->lease_epoch : kNoWriter;
}

std::vector<Opener*> LeaseTable::OpenersOf(const std::string& volume) {
  std::vector<Opener*> out;
  for (auto& [id, o] : openers_) {
    if (o.volume == volume) out.push_back(&o);
  }
  return out;
}

std::vector<OpenerId> LeaseTable::OpenersHeldBy(HostLeaseId holder) const {
  std::vector<OpenerId> out;
  for (const auto& [id, o] : openers_) {
    if (o.holder == holder) out.push_back(id);
  }
  return out;
}

Opener* LeaseTable::StandbyOf(const std::string& volume) {
  for (auto& [id, o] : openers_) {
    if (o.volume == volume && o.standby) return &o;
  }
  return nullptr;
}

Opener* LeaseTable::FindReclaimable(HostLeaseId holder, const std::string& volume, bool writable) {
  Opener* attached = nullptr;
  for (auto& [id, o] : openers_) {
    if (o.holder != holder || o.volume != volume || o.revoked) continue;
    if ((o.writable || o.standby) != writable) continue;
    if (!o.attached) return &o;
    if (attached == nullptr) attached = &o;
  }
  return attached;
}

}  // namespace tapmap::mapserver
