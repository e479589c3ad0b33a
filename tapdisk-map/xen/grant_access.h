// GrantAccess: access to memory pages another domain granted us (one side of the Xen
// seam): mapping a set of grant references as one RAII mapping, and grant copy.
//
// Implemented by RealGrantAccess (libxengnttab, /dev/xen/gntdev) and by the simulator
// (SimulatedHypervisor's grant tables). A reference that is not granted, granted to
// another domain, revoked, or read-only when write access was asked for is refused
// as Xen would refuse it: the call fails and nothing is mapped or copied.
//
// Threading: every method is thread-safe. A GrantMapping may be destroyed on any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"

namespace tapmap::xen {

using DomainId = uint32_t;
using GrantRef = uint32_t;

// Pages of another domain mapped contiguously into our address space. Unmapped on
// destruction. The memory is shared with the other domain: it may change at any time
// (never validate data in place; copy it first).
class GrantMapping {
 public:
  virtual ~GrantMapping() = default;
  GrantMapping() = default;
  GrantMapping(const GrantMapping&) = delete;
  GrantMapping& operator=(const GrantMapping&) = delete;

  // page_count() * 4096 bytes; valid while this object lives.
  virtual uint8_t* data() const = 0;
  virtual size_t page_count() const = 0;
  size_t size_bytes() const { return page_count() * 4096; }
};

// One piece of a grant copy: `length` bytes between offset `page_offset` of the page
// `ref` granted by the other domain and `local`. page_offset + length <= 4096.
struct GrantCopySegment {
  GrantRef ref = 0;
  uint16_t page_offset = 0;
  uint16_t length = 0;
  uint8_t* local = nullptr;
};

class GrantAccess {
 public:
  virtual ~GrantAccess() = default;

  // Maps `refs` (at least one) granted by domain `domid`, in order, as one contiguous
  // region; `writable` asks for read-write access. Fails (kPermissionDenied for a
  // refused reference, kIoError otherwise) without mapping anything if any reference
  // cannot be mapped.
  virtual Result<std::unique_ptr<GrantMapping>> Map(DomainId domid, std::span<const GrantRef> refs,
                                                    bool writable) = 0;

  // Copies every segment from the other domain's pages into `local` memory
  // (CopyIn) or from local memory into the other domain's pages (CopyOut), as one
  // batch. Returns OK only if every segment was copied; otherwise an error naming the
  // first refused reference (the content of the segments is then unspecified).
  virtual Status CopyIn(DomainId domid, std::span<const GrantCopySegment> segments) = 0;
  virtual Status CopyOut(DomainId domid, std::span<const GrantCopySegment> segments) = 0;
};

}  // namespace tapmap::xen
