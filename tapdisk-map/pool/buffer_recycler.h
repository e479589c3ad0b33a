// BufferRecycler: a bounded store of freed I/O buffers for reuse.
//
// Why: a stream of large requests (NBD WRITE payloads of 1 MiB and more) allocates a
// fresh O_DIRECT-aligned buffer per request, and keeps each one alive until the blocks
// written from it are committed (they are pinned as slices of it, see
// engine/doc/durability.md). Between those long-lived buffers the heap also serves the
// small allocations of the data path, so freed payload memory is rarely where the next
// payload fits: the heap grows instead and every new page is faulted in and zeroed by
// the kernel. Measured with bench/nbd/seq_write.sh: tapdisk-map's RSS grew to ~600 MiB
// over a 2 GiB write with ~20 MiB actually pinned, one minor fault per 4 KiB of data,
// and page faults were the largest item of its profile. Reusing buffers keeps the
// working set mapped.
//
// Buffers of kHugeMinimum..kHugePageBytes are carved from 2 MiB slabs backed by
// transparent huge pages (AlignedBuffer::HugePageBacked; a 1 MiB buffer shares its slab
// with one other), larger ones get a huge-page-backed mapping of their own, and small
// ones come from the heap. Measured with bench/nbd/seq_write.sh (1 MiB writes, five
// interleaved pairs of runs on one machine): 483-559 MiB/s with heap buffers, 570-708
// with huge-page slabs, with the same number of device requests: the difference is the
// per-4 KiB cost of faulting in received payloads and of pinning them for O_DIRECT.
// A slab is freed when its last buffer is, so retained buffers may hold up to twice
// their bytes of memory.
//
// Buffers are grouped by size rounded up to kGranule; Get returns one of at least the
// requested size whose content is indeterminate (never zeroed: callers overwrite what
// they use). A buffer comes back when the last shared_ptr to it (including slices made
// with AlignedBuffer::Slice) is dropped, on any thread; the recycler keeps at most
// `max_retained_bytes` of them and frees the rest. The recycler's state is shared with
// the buffers it handed out, so buffers may outlive the recycler object.
//
// Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "tapdisk-map/pool/aligned_buffer.h"

namespace tapmap::pool {

class BufferRecycler {
 public:
  // Sizes are rounded up to a multiple of this (64 KiB).
  static constexpr size_t kGranule = 64 * 1024;
  // Buffers of at least this size (up to kHugePageBytes) are carved from huge-page slabs.
  static constexpr size_t kHugeMinimum = 256 * 1024;

  explicit BufferRecycler(size_t max_retained_bytes);
  ~BufferRecycler();
  BufferRecycler(const BufferRecycler&) = delete;
  BufferRecycler& operator=(const BufferRecycler&) = delete;

  // A buffer of RoundUp(size) bytes (size > 0), aligned for O_DIRECT, content
  // indeterminate; a retained one of that size if there is one. Throws std::bad_alloc.
  std::shared_ptr<AlignedBuffer> Get(size_t size);

  struct Counters {
    uint64_t reused = 0;     // Get served from retained buffers
    uint64_t allocated = 0;  // Get had to allocate
    uint64_t dropped = 0;    // returned buffers freed because the store was full
    uint64_t huge_page_slabs = 0;  // HugePageBacked mappings made (slabs and large buffers)
    uint64_t retained_bytes = 0;
  };
  Counters counters() const;

  static constexpr size_t RoundUp(size_t n) { return (n + kGranule - 1) / kGranule * kGranule; }

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace tapmap::pool
