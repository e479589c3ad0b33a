// SegmentTransfer: moves request data between a guest's granted pages and private
// memory. Request data never goes to the engine straight from guest memory: a guest
// could change it while the engine caches or writes it (the data cache is shared by
// every guest of the host). Two ways:
//  - GrantCopyTransfer: one batched grant copy per request (no mapping state);
//  - PersistentGrantTransfer (frontend feature-persistent=1): each grant is mapped
//    once and kept in a bounded LRU; data is memcpy'd. Saves the per-request
//    hypercall when the guest reuses its grants (see bench/blkif for figures). A
//    grant that is not mapped yet while the host-wide quota (persistent_grant_quota.h)
//    is used up is served by grant copy instead, without keeping a mapping.
//
// Threading: one thread at a time (the ring's strand).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>

#include "common/status.h"
#include "tapdisk-map/blkif/persistent_grant_quota.h"
#include "tapdisk-map/blkif/ring_abi.h"
#include "tapdisk-map/xen/grant_access.h"

namespace tapmap::blkif {

class SegmentTransfer {
 public:
  virtual ~SegmentTransfer() = default;
  // Copies the data of `segments` (checked: first <= last <= 7) into `buffer`, which
  // holds exactly their total length.
  virtual Status CopyFromGuest(std::span<const blkif_request_segment> segments, std::span<uint8_t> buffer) = 0;
  // Copies `buffer` into the guest's `segments`.
  virtual Status CopyToGuest(std::span<const blkif_request_segment> segments,
                             std::span<const uint8_t> buffer) = 0;
  // Copies whole pages (indirect segment pages) into `dest` (refs.size() * 4096).
  virtual Status FetchPages(std::span<const grant_ref_t> refs, std::span<uint8_t> dest) = 0;
};

class GrantCopyTransfer : public SegmentTransfer {
 public:
  // `grants` must outlive this object.
  GrantCopyTransfer(xen::GrantAccess& grants, xen::DomainId domid) : grants_(grants), domid_(domid) {}
  Status CopyFromGuest(std::span<const blkif_request_segment> segments, std::span<uint8_t> buffer) override;
  Status CopyToGuest(std::span<const blkif_request_segment> segments, std::span<const uint8_t> buffer) override;
  Status FetchPages(std::span<const grant_ref_t> refs, std::span<uint8_t> dest) override;

 private:
  xen::GrantAccess& grants_;
  const xen::DomainId domid_;
};

class PersistentGrantTransfer : public SegmentTransfer {
 public:
  // Keeps at most `capacity` (>= 1) grants mapped, each holding a slot of `quota`
  // (shared by every ring of the host; null: no host-wide cap). `grants` must outlive
  // this object.
  PersistentGrantTransfer(xen::GrantAccess& grants, xen::DomainId domid, uint32_t capacity,
                          std::shared_ptr<PersistentGrantQuota> quota = nullptr)
      : grants_(grants), domid_(domid), capacity_(capacity == 0 ? 1 : capacity), quota_(std::move(quota)) {}
  ~PersistentGrantTransfer() override;
  Status CopyFromGuest(std::span<const blkif_request_segment> segments, std::span<uint8_t> buffer) override;
  Status CopyToGuest(std::span<const blkif_request_segment> segments, std::span<const uint8_t> buffer) override;
  Status FetchPages(std::span<const grant_ref_t> refs, std::span<uint8_t> dest) override;

  size_t mapped() const { return lru_.size(); }
  uint64_t maps() const { return maps_; }  // grant maps done so far (misses)
  uint64_t copied() const { return copied_; }  // segments grant-copied for want of a quota slot

 private:
  struct Entry {
    grant_ref_t ref;
    bool writable;
    std::unique_ptr<xen::GrantMapping> mapping;
  };
  // The page of `ref`, mapped writable if `need_write`. Evicts the least recently
  // used grant when full. nullptr if `ref` is not mapped and the host's quota has no
  // slot for it: the caller grant-copies it.
  Result<uint8_t*> Page(grant_ref_t ref, bool need_write);

  xen::GrantAccess& grants_;
  const xen::DomainId domid_;
  const uint32_t capacity_;
  const std::shared_ptr<PersistentGrantQuota> quota_;
  std::list<Entry> lru_;  // each entry holds a slot of quota_  // front = most recently used
  std::unordered_map<grant_ref_t, std::list<Entry>::iterator> index_;
  uint64_t maps_ = 0;
  uint64_t copied_ = 0;
};

}  // namespace tapmap::blkif
