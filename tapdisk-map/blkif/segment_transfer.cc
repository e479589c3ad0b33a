#include "tapdisk-map/blkif/segment_transfer.h"

#include <cstring>
#include <vector>

#include "common/units.h"

namespace tapmap::blkif {

namespace {

std::vector<xen::GrantCopySegment> CopyPlan(std::span<const blkif_request_segment> segments, uint8_t* buffer) {
  std::vector<xen::GrantCopySegment> plan;
  plan.reserve(segments.size());
  size_t pos = 0;
  for (const blkif_request_segment& s : segments) {
    uint16_t len = static_cast<uint16_t>((s.last_sect - s.first_sect + 1) * kSectorSize);
    plan.push_back(xen::GrantCopySegment{s.gref, static_cast<uint16_t>(s.first_sect * kSectorSize), len,
                                         buffer + pos});
    pos += len;
  }
  return plan;
}

}  // namespace

Status GrantCopyTransfer::CopyFromGuest(std::span<const blkif_request_segment> segments,
                                        std::span<uint8_t> buffer) {
  return grants_.CopyIn(domid_, CopyPlan(segments, buffer.data()));
}

Status GrantCopyTransfer::CopyToGuest(std::span<const blkif_request_segment> segments,
                                      std::span<const uint8_t> buffer) {
  return grants_.CopyOut(domid_, CopyPlan(segments, const_cast<uint8_t*>(buffer.data())));
}

Status GrantCopyTransfer::FetchPages(std::span<const grant_ref_t> refs, std::span<uint8_t> dest) {
  std::vector<xen::GrantCopySegment> plan;
  for (size_t i = 0; i < refs.size(); ++i) {
    plan.push_back(xen::GrantCopySegment{refs[i], 0, static_cast<uint16_t>(kPageSize), dest.data() + i * kPageSize});
  }
  return grants_.CopyIn(domid_, plan);
}

PersistentGrantTransfer::~PersistentGrantTransfer() {
  if (quota_) quota_->Give(lru_.size());
}

Result<uint8_t*> PersistentGrantTransfer::Page(grant_ref_t ref, bool need_write) {
  bool slot = false;  // a quota slot freed here, for the new mapping
  auto it = index_.find(ref);
  if (it != index_.end()) {
    if (!need_write || it->second->writable) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return lru_.front().mapping->data();
    }
    lru_.erase(it->second);  // mapped read-only; remap writable below
    index_.erase(it);
    slot = true;
  }
  if (!slot && lru_.size() >= capacity_) {
    index_.erase(lru_.back().ref);
    lru_.pop_back();
    slot = true;
  }
  if (!slot && quota_ && !quota_->TryTake()) return static_cast<uint8_t*>(nullptr);
  // Persistent grants are normally given read-write; a read-only one still serves
  // reads of guest data.
  const xen::GrantRef one[] = {ref};
  auto mapping = grants_.Map(domid_, one, /*writable=*/true);
  bool writable = true;
  if (!mapping.ok() && !need_write) {
    mapping = grants_.Map(domid_, one, /*writable=*/false);
    writable = false;
  }
  if (!mapping.ok()) {
    if (quota_) quota_->Give(1);
    return mapping.status();
  }
  ++maps_;
  lru_.push_front(Entry{ref, writable, std::move(*mapping)});
  index_[ref] = lru_.begin();
  return lru_.front().mapping->data();
}

Status PersistentGrantTransfer::CopyFromGuest(std::span<const blkif_request_segment> segments,
                                              std::span<uint8_t> buffer) {
  std::vector<xen::GrantCopySegment> unmapped;
  size_t pos = 0;
  for (const blkif_request_segment& s : segments) {
    auto page = Page(s.gref, /*need_write=*/false);
    if (!page.ok()) return page.status();
    uint16_t len = static_cast<uint16_t>((s.last_sect - s.first_sect + 1) * kSectorSize);
    uint16_t offset = static_cast<uint16_t>(s.first_sect * kSectorSize);
    if (*page != nullptr) {
      std::memcpy(buffer.data() + pos, *page + offset, len);
    } else {
      unmapped.push_back(xen::GrantCopySegment{s.gref, offset, len, buffer.data() + pos});
    }
    pos += len;
  }
  if (unmapped.empty()) return Status::Ok();
  copied_ += unmapped.size();
  return grants_.CopyIn(domid_, unmapped);
}

Status PersistentGrantTransfer::CopyToGuest(std::span<const blkif_request_segment> segments,
                                            std::span<const uint8_t> buffer) {
  std::vector<xen::GrantCopySegment> unmapped;
  size_t pos = 0;
  for (const blkif_request_segment& s : segments) {
    auto page = Page(s.gref, /*need_write=*/true);
    if (!page.ok()) return page.status();
    uint16_t len = static_cast<uint16_t>((s.last_sect - s.first_sect + 1) * kSectorSize);
    uint16_t offset = static_cast<uint16_t>(s.first_sect * kSectorSize);
    if (*page != nullptr) {
      std::memcpy(*page + offset, buffer.data() + pos, len);
    } else {
      unmapped.push_back(xen::GrantCopySegment{s.gref, offset, len, const_cast<uint8_t*>(buffer.data()) + pos});
    }
    pos += len;
  }
  if (unmapped.empty()) return Status::Ok();
  copied_ += unmapped.size();
  return grants_.CopyOut(domid_, unmapped);
}

Status PersistentGrantTransfer::FetchPages(std::span<const grant_ref_t> refs, std::span<uint8_t> dest) {
  std::vector<xen::GrantCopySegment> unmapped;
  for (size_t i = 0; i < refs.size(); ++i) {
    auto page = Page(refs[i], /*need_write=*/false);
    if (!page.ok()) return page.status();
    if (*page != nullptr) {
      std::memcpy(dest.data() + i * kPageSize, *page, kPageSize);
    } else {
      unmapped.push_back(xen::GrantCopySegment{refs[i], 0, static_cast<uint16_t>(kPageSize), dest.data() + i * kPageSize});
    }
  }
  if (unmapped.empty()) return Status::Ok();
  copied_ += unmapped.size();
  return grants_.CopyIn(domid_, unmapped);
}

}  // namespace tapmap::blkif
