#include "tapdisk-map/xen/sim_hypervisor.h"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "common/unique_fd.h"
#include "common/units.h"

namespace tapmap::xen {

namespace {

struct GrantEntry {
  bool in_use = false;
  DomainId grantee = 0;
  size_t pfn = 0;
  bool read_only = false;
  uint32_t map_count = 0;
};

// One interdomain channel: two ends, each with the eventfd the OTHER end's Notify
// signals.
struct Channel {
  DomainId owner = 0, remote = 0;
  EventPort owner_port = 0, remote_port = 0;
  bool remote_bound = false;
  bool closed = false;
  UniqueFd owner_fd, remote_fd;  // readable when that end has a notification
};

struct Domain {
  size_t pages = 0;
  UniqueFd memfd;
  uint8_t* memory = nullptr;  // guest view, whole memfd mapped
  std::vector<GrantEntry> grants;  // index = reference; 0..7 reserved as in Xen
  EventPort next_port = 1;
};

constexpr GrantRef kFirstGrantRef = 8;

}  // namespace

struct SimulatedHypervisor::State {
  mutable std::mutex mu;
  std::map<DomainId, std::unique_ptr<Domain>> domains;
  std::vector<std::shared_ptr<Channel>> channels;

  ~State() {
    for (auto& [id, d] : domains) {
      if (d->memory != nullptr) munmap(d->memory, d->pages * kPageSize);
    }
  }

  Domain* Find(DomainId id) const {
    auto it = domains.find(id);
    return it == domains.end() ? nullptr : it->second.get();
  }

  // Requires mu. The entry of `ref` if `accessor` may use it with this access.
  Result<GrantEntry*> CheckGrant(DomainId accessor, DomainId granter, GrantRef ref, bool write) {
    Domain* d = Find(granter);
    std::string what = "grant ref " + std::to_string(ref) + " of domain " + std::to_string(granter);
    if (d == nullptr) return Status::PermissionDenied(what + ": no such domain");
    if (ref >= d->grants.size() || !d->grants[ref].in_use) {
      return Status::PermissionDenied(what + ": not granted");
    }
    GrantEntry& e = d->grants[ref];
    if (e.grantee != accessor) {
      return Status::PermissionDenied(what + ": granted to domain " + std::to_string(e.grantee));
    }
    if (write && e.read_only) return Status::PermissionDenied(what + ": read-only grant");
    return &e;
  }
};

namespace {

class SimGrantMapping : public GrantMapping {
 public:
  SimGrantMapping(std::shared_ptr<SimulatedHypervisor::State> state, DomainId granter,
                  std::vector<GrantRef> refs, uint8_t* addr)
      : state_(std::move(state)), granter_(granter), refs_(std::move(refs)), addr_(addr) {}
  ~SimGrantMapping() override {
    munmap(addr_, refs_.size() * kPageSize);
    std::lock_guard lock(state_->mu);
    Domain* d = state_->Find(granter_);
    if (d == nullptr) return;
    for (GrantRef r : refs_) {
      if (r < d->grants.size() && d->grants[r].map_count > 0) --d->grants[r].map_count;
    }
  }
  uint8_t* data() const override { return addr_; }
  size_t page_count() const override { return refs_.size(); }

 private:
  std::shared_ptr<SimulatedHypervisor::State> state_;
  const DomainId granter_;
  const std::vector<GrantRef> refs_;
  uint8_t* const addr_;
};

class SimEventChannel : public EventChannel {
 public:
  SimEventChannel(std::shared_ptr<SimulatedHypervisor::State> state, std::shared_ptr<Channel> ch,
                  bool owner_end)
      : state_(std::move(state)), ch_(std::move(ch)), owner_end_(owner_end) {}
  ~SimEventChannel() override {
    std::lock_guard lock(state_->mu);
    if (owner_end_) {
      ch_->closed = true;
    } else {
      ch_->remote_bound = false;
    }
  }
  EventPort local_port() const override { return owner_end_ ? ch_->owner_port : ch_->remote_port; }
  Status Notify() override {
    int peer_fd;
    {
      std::lock_guard lock(state_->mu);
      if (ch_->closed) return Status::Unavailable("event channel is closed");
      if (owner_end_ && !ch_->remote_bound) return Status::Ok();  // dropped, as by Xen
      peer_fd = owner_end_ ? ch_->remote_fd.get() : ch_->owner_fd.get();
    }
    uint64_t one = 1;
    if (write(peer_fd, &one, sizeof(one)) != sizeof(one)) return Status::FromErrno("eventfd write", errno);
    return Status::Ok();
  }
  int fd() const override { return owner_end_ ? ch_->owner_fd.get() : ch_->remote_fd.get(); }
  Result<bool> ConsumePending() override {
    uint64_t count = 0;
    ssize_t n = read(fd(), &count, sizeof(count));
    if (n == sizeof(count)) return true;
    if (n < 0 && errno == EAGAIN) return false;
    return Status::FromErrno("eventfd read", errno);
  }

 private:
  std::shared_ptr<SimulatedHypervisor::State> state_;
  std::shared_ptr<Channel> ch_;
  const bool owner_end_;
};

}  // namespace

SimulatedHypervisor::SimulatedHypervisor() : state_(std::make_shared<State>()) {}
SimulatedHypervisor::~SimulatedHypervisor() = default;

Status SimulatedHypervisor::CreateDomain(DomainId domid, size_t memory_pages) {
  std::lock_guard lock(state_->mu);
  if (state_->Find(domid) != nullptr) {
    return Status::AlreadyExists("domain " + std::to_string(domid) + " exists");
  }
  auto d = std::make_unique<Domain>();
  d->pages = memory_pages;
  d->memfd.Reset(memfd_create("sim-domain", MFD_CLOEXEC));
  if (!d->memfd) return Status::FromErrno("memfd_create", errno);
  if (ftruncate(d->memfd.get(), static_cast<off_t>(memory_pages * kPageSize)) != 0) {
    return Status::FromErrno("ftruncate guest memory", errno);
  }
  if (memory_pages > 0) {
    void* mem = mmap(nullptr, memory_pages * kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED,
                     d->memfd.get(), 0);
    if (mem == MAP_FAILED) return Status::FromErrno("mmap guest memory", errno);
    d->memory = static_cast<uint8_t*>(mem);
  }
  d->grants.resize(kFirstGrantRef);
  state_->domains[domid] = std::move(d);
  return Status::Ok();
}

void SimulatedHypervisor::DestroyDomain(DomainId domid) {
  std::lock_guard lock(state_->mu);
  auto it = state_->domains.find(domid);
  if (it == state_->domains.end()) return;
  if (it->second->memory != nullptr) munmap(it->second->memory, it->second->pages * kPageSize);
  state_->domains.erase(it);
  for (auto& ch : state_->channels) {
    if (ch->owner == domid || ch->remote == domid) ch->closed = true;
  }
}

bool SimulatedHypervisor::IsAlive(DomainId domid) const {
  std::lock_guard lock(state_->mu);
  return state_->Find(domid) != nullptr;
}

Result<uint8_t*> SimulatedHypervisor::GuestPage(DomainId domid, size_t pfn) const {
  std::lock_guard lock(state_->mu);
  Domain* d = state_->Find(domid);
  if (d == nullptr) return Status::NotFound("no domain " + std::to_string(domid));
  if (pfn >= d->pages) return Status::InvalidArgument("pfn " + std::to_string(pfn) + " out of range");
  return d->memory + pfn * kPageSize;
}

Result<GrantRef> SimulatedHypervisor::GrantAccess(DomainId granter, DomainId grantee, size_t pfn,
                                                  bool read_only) {
  std::lock_guard lock(state_->mu);
  Domain* d = state_->Find(granter);
  if (d == nullptr) return Status::NotFound("no domain " + std::to_string(granter));
  if (pfn >= d->pages) return Status::InvalidArgument("pfn " + std::to_string(pfn) + " out of range");
  GrantRef ref = kFirstGrantRef;
  while (ref < d->grants.size() && d->grants[ref].in_use) ++ref;
  if (ref == d->grants.size()) d->grants.emplace_back();
  d->grants[ref] = GrantEntry{true, grantee, pfn, read_only, 0};
  return ref;
}

Status SimulatedHypervisor::EndAccess(DomainId granter, GrantRef ref) {
  std::lock_guard lock(state_->mu);
  Domain* d = state_->Find(granter);
  if (d == nullptr) return Status::NotFound("no domain " + std::to_string(granter));
  if (ref >= d->grants.size() || !d->grants[ref].in_use) {
    return Status::NotFound("grant ref " + std::to_string(ref) + " not granted");
  }
  if (d->grants[ref].map_count > 0) {
    return Status::Busy("grant ref " + std::to_string(ref) + " is still mapped");
  }
  d->grants[ref] = GrantEntry{};
  return Status::Ok();
}

Result<std::unique_ptr<EventChannel>> SimulatedHypervisor::AllocUnbound(DomainId owner,
                                                                        DomainId remote) {
  std::lock_guard lock(state_->mu);
  Domain* d = state_->Find(owner);
  if (d == nullptr) return Status::NotFound("no domain " + std::to_string(owner));
  auto ch = std::make_shared<Channel>();
  ch->owner = owner;
  ch->remote = remote;
  ch->owner_port = d->next_port++;
  ch->owner_fd.Reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  ch->remote_fd.Reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!ch->owner_fd || !ch->remote_fd) return Status::FromErrno("eventfd", errno);
  state_->channels.push_back(ch);
  return std::unique_ptr<EventChannel>(new SimEventChannel(state_, ch, /*owner_end=*/true));
}

Result<std::unique_ptr<GrantMapping>> SimulatedHypervisor::Map(DomainId mapper, DomainId granter,
                                                              std::span<const GrantRef> refs,
                                                              bool writable) {
  if (refs.empty()) return Status::InvalidArgument("grant map of zero references");
  std::lock_guard lock(state_->mu);
  std::vector<GrantEntry*> entries;
  for (GrantRef r : refs) {
    auto e = state_->CheckGrant(mapper, granter, r, writable);
    if (!e.ok()) return e.status();
    entries.push_back(*e);
  }
  Domain* d = state_->Find(granter);
  size_t len = refs.size() * kPageSize;
  void* base = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return Status::FromErrno("reserve grant mapping", errno);
  auto* addr = static_cast<uint8_t*>(base);
  int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  for (size_t i = 0; i < entries.size(); ++i) {
    void* p = mmap(addr + i * kPageSize, kPageSize, prot, MAP_SHARED | MAP_FIXED, d->memfd.get(),
                   static_cast<off_t>(entries[i]->pfn * kPageSize));
    if (p == MAP_FAILED) {
      int err = errno;
      munmap(base, len);
      return Status::FromErrno("map granted page", err);
    }
  }
  for (GrantEntry* e : entries) ++e->map_count;
  return std::unique_ptr<GrantMapping>(new SimGrantMapping(
      state_, granter, std::vector<GrantRef>(refs.begin(), refs.end()), addr));
}

Status SimulatedHypervisor::Copy(DomainId copier, DomainId granter,
                                 std::span<const GrantCopySegment> segments, bool into_local) {
  std::lock_guard lock(state_->mu);
  for (const GrantCopySegment& s : segments) {
    if (size_t{s.page_offset} + s.length > kPageSize) {
      return Status::InvalidArgument("grant copy segment crosses its page");
    }
    auto e = state_->CheckGrant(copier, granter, s.ref, /*write=*/!into_local);
    if (!e.ok()) return e.status();
    uint8_t* page = state_->Find(granter)->memory + (*e)->pfn * kPageSize + s.page_offset;
    if (into_local) {
      std::memcpy(s.local, page, s.length);
    } else {
      std::memcpy(page, s.local, s.length);
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<EventChannel>> SimulatedHypervisor::BindInterdomain(DomainId binder,
                                                                           DomainId remote,
                                                                           EventPort remote_port) {
  std::lock_guard lock(state_->mu);
  Domain* self = state_->Find(binder);
  if (self == nullptr) return Status::NotFound("no domain " + std::to_string(binder));
  for (auto& ch : state_->channels) {
    if (ch->owner == remote && ch->owner_port == remote_port && !ch->closed) {
      if (ch->remote != binder) {
        return Status::PermissionDenied("event channel " + std::to_string(remote_port) +
                                        " of domain " + std::to_string(remote) +
                                        " is not offered to domain " + std::to_string(binder));
      }
      if (ch->remote_bound) return Status::Busy("event channel already bound");
      ch->remote_bound = true;
      ch->remote_port = self->next_port++;
      return std::unique_ptr<EventChannel>(new SimEventChannel(state_, ch, /*owner_end=*/false));
    }
  }
  return Status::PermissionDenied("no unbound event channel " + std::to_string(remote_port) +
                                  " in domain " + std::to_string(remote));
}

size_t SimulatedHypervisor::ActiveMappings(DomainId granter) const {
  std::lock_guard lock(state_->mu);
  Domain* d = state_->Find(granter);
  if (d == nullptr) return 0;
  size_t n = 0;
  for (const GrantEntry& e : d->grants) n += e.map_count;
  return n;
}

}  // namespace tapmap::xen
