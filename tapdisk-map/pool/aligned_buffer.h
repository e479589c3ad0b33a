// AlignedBuffer: a heap buffer whose address and size are multiples of the pool's
// direct-I/O alignment, as O_DIRECT requires of every pool read and write. It is the
// only kind of buffer the pool layer accepts.
#pragma once

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

class AlignedBuffer {
 public:
  // Tag: the caller overwrites every byte at once, so skip the zero fill.
  struct Uninitialized {};

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
  // A view of `size` bytes of `parent` starting at `offset` (both multiples of
  // kDirectIoAlignment, inside parent), sharing its memory and keeping it alive: bytes
  // written through either are seen by both. Lets a block of a larger received
  // payload be written to the pool and kept (cached, pinned) without copying it.
  static std::shared_ptr<AlignedBuffer> Slice(std::shared_ptr<AlignedBuffer> parent, size_t offset, size_t size) {
    auto view = std::make_shared<AlignedBuffer>();
    view->data_ = parent->data_ + offset;
    view->size_ = size;
    view->parent_ = std::move(parent);
    return view;
  }

  ~AlignedBuffer() {
    if (parent_ == nullptr) std::free(data_);
  }
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), parent_(std::move(o.parent_)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      if (parent_ == nullptr) std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      parent_ = std::move(o.parent_);
    }
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // True for a Slice (the memory belongs to a parent buffer).
  bool is_view() const { return parent_ != nullptr; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

  static constexpr size_t RoundUp(size_t n) {
    return (n + kDirectIoAlignment - 1) / kDirectIoAlignment * kDirectIoAlignment;
  }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<AlignedBuffer> parent_;  // set for a Slice: the owner of data_
};

}  // namespace tapmap::pool
