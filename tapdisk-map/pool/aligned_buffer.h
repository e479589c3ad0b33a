// AlignedBuffer: a buffer whose address and size are multiples of the pool's
// direct-I/O alignment, as O_DIRECT requires of every pool read and write. It is the
// only kind of buffer the pool layer accepts. Heap memory by default; its own
// huge-page-aligned mapping on request (HugePageBacked); or a view of a part of
// another buffer that keeps that one alive.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <utility>

namespace tapmap::pool {

// Alignment of addresses, offsets and lengths of every pool I/O. 4096 satisfies
// O_DIRECT on every Linux block device and filesystem we support (logical block sizes
// of 512 and 4096 bytes).
inline constexpr size_t kDirectIoAlignment = 4096;
// Size and alignment of an x86-64 transparent huge page.
inline constexpr size_t kHugePageBytes = 2u << 20;

class AlignedBuffer {
 public:
  // Tag: the caller overwrites every byte at once, so skip the zero fill.
  struct Uninitialized {};
  // Tag: back the buffer by its own anonymous mapping, aligned to kHugePageBytes and
  // advised MADV_HUGEPAGE, so that each whole 2 MiB of it can be one transparent huge
  // page (where THP is "always" or "madvise"; plain pages otherwise). For long-lived
  // large I/O buffers: a 1 MiB O_DIRECT write from such memory pins one page, not 256,
  // and receiving into it faults once, not 256 times.
  struct HugePageBacked {};

  AlignedBuffer() = default;
  // `size` bytes rounded up to kDirectIoAlignment, zero-filled. Throws std::bad_alloc.
  explicit AlignedBuffer(size_t size) : AlignedBuffer(size, Uninitialized{}) {
    if (data_ != nullptr) std::memset(data_, 0, size_);
  }
  // The same without the zero fill: the content is indeterminate until written.
  AlignedBuffer(size_t size, Uninitialized) : size_(RoundUp(size)) {
    if (size_ == 0) return;
    void* p = std::aligned_alloc(kDirectIoAlignment, size_);
    if (p == nullptr) throw std::bad_alloc();
    data_ = static_cast<uint8_t*>(p);
  }
  // `size` bytes rounded up to kDirectIoAlignment in a HugePageBacked mapping (its
  // address a multiple of kHugePageBytes), content indeterminate. Throws
  // std::bad_alloc.
  AlignedBuffer(size_t size, HugePageBacked) : size_(RoundUp(size)) {
    if (size_ == 0) return;
    // Map one huge page more than needed, then unmap the unaligned head and tail.
    const size_t span = (size_ + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    void* p = ::mmap(nullptr, span + kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    const auto start = reinterpret_cast<uintptr_t>(p);
    const uintptr_t aligned = (start + kHugePageBytes - 1) & ~(uintptr_t{kHugePageBytes} - 1);
    const uintptr_t end = start + span + kHugePageBytes;
    if (aligned > start) ::munmap(p, aligned - start);
    if (end > aligned + span) ::munmap(reinterpret_cast<void*>(aligned + span), end - (aligned + span));
    (void)::madvise(reinterpret_cast<void*>(aligned), span, MADV_HUGEPAGE);  // a hint: fine if refused
    data_ = reinterpret_cast<uint8_t*>(aligned);
    mapped_bytes_ = span;
  }

  // A view of `size` bytes of `parent` starting at `offset` (both multiples of
  // kDirectIoAlignment, inside parent), sharing its memory and keeping it alive: bytes
  // written through either are seen by both.
  static AlignedBuffer View(std::shared_ptr<AlignedBuffer> parent, size_t offset, size_t size) {
    AlignedBuffer view;
    view.data_ = parent->data_ + offset;
    view.size_ = size;
    view.parent_ = std::move(parent);
    return view;
  }
  // View() as a shared buffer. Lets a block of a larger received payload be written
  // to the pool and kept (cached, pinned) without copying it.
  static std::shared_ptr<AlignedBuffer> Slice(std::shared_ptr<AlignedBuffer> parent, size_t offset, size_t size) {
    return std::make_shared<AlignedBuffer>(View(std::move(parent), offset, size));
  }

  ~AlignedBuffer() { Release(); }
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        mapped_bytes_(std::exchange(o.mapped_bytes_, 0)),
        parent_(std::move(o.parent_)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      Release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      mapped_bytes_ = std::exchange(o.mapped_bytes_, 0);
      parent_ = std::move(o.parent_);
    }
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // True for a view (the memory belongs to a parent buffer).
  bool is_view() const { return parent_ != nullptr; }
  // True for a HugePageBacked buffer itself (not for views of one).
  bool huge_page_backed() const { return mapped_bytes_ != 0; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

  static constexpr size_t RoundUp(size_t n) {
    return (n + kDirectIoAlignment - 1) / kDirectIoAlignment * kDirectIoAlignment;
  }

 private:
  void Release() {
    if (parent_ != nullptr) {
      parent_.reset();
    } else if (mapped_bytes_ != 0) {
      ::munmap(data_, mapped_bytes_);
    } else {
      std::free(data_);
    }
    data_ = nullptr;
    mapped_bytes_ = 0;
  }

  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_bytes_ = 0;                // nonzero: data_ is our own mapping of this many bytes
  std::shared_ptr<AlignedBuffer> parent_;  // set for a view: the owner of data_
};

}  // namespace tapmap::pool
