// BufferRecycler: buffers come back when their last reference (slices included) is
// dropped, are handed out again for the same rounded size, and the store stays within
// its bound; buffers may outlive the recycler.
#include <catch2/catch.hpp>

#include <cstring>
#include <thread>
#include <vector>

#include "tapdisk-map/pool/buffer_recycler.h"

namespace tapmap::pool {
namespace {

TEST_CASE("buffer recycler: reuse after the last reference, slices included") {
  BufferRecycler recycler(8u << 20);
  auto a = recycler.Get(1 << 20);
  REQUIRE(a->size() == (1u << 20));
  CHECK(reinterpret_cast<uintptr_t>(a->data()) % kDirectIoAlignment == 0);
  uint8_t* memory = a->data();
  auto slice = AlignedBuffer::Slice(a, 64 * 1024, 64 * 1024);
  a.reset();
  CHECK(recycler.counters().retained_bytes == 0);  // the slice still holds it
  slice.reset();
  CHECK(recycler.counters().retained_bytes == (1u << 20));
  // Same rounded size: the same memory again; another size: a new buffer.
  auto b = recycler.Get((1 << 20) - 100);
  CHECK(b->data() == memory);
  CHECK(b->size() == (1u << 20));
  auto c = recycler.Get(100);
  CHECK(c->size() == BufferRecycler::kGranule);
  auto counters = recycler.counters();
  CHECK(counters.reused == 1);
  CHECK(counters.allocated == 2);
  CHECK(counters.retained_bytes == 0);
}

TEST_CASE("buffer recycler: keeps at most its bound, frees the rest") {
  BufferRecycler recycler(2u << 20);
  std::vector<std::shared_ptr<AlignedBuffer>> held;
  for (int i = 0; i < 4; ++i) held.push_back(recycler.Get(1 << 20));
  held.clear();
  auto counters = recycler.counters();
  CHECK(counters.retained_bytes == (2u << 20));
  CHECK(counters.dropped == 2);
}

TEST_CASE("buffer recycler: buffers returned from other threads and after the recycler is gone") {
  std::shared_ptr<AlignedBuffer> survivor;
  {
    BufferRecycler recycler(64u << 20);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&recycler] {
        for (int i = 0; i < 200; ++i) {
          auto buffer = recycler.Get(static_cast<size_t>(1 + i % 3) << 16);
          buffer->data()[0] = static_cast<uint8_t>(i);
        }
      });
    }
    for (auto& t : threads) t.join();
    auto counters = recycler.counters();
    CHECK(counters.reused + counters.allocated == 800);
    CHECK(counters.allocated <= 12);  // at most 4 threads x 3 sizes live at once
    survivor = recycler.Get(4096);
  }
  survivor->data()[0] = 1;
  survivor.reset();  // frees it (the recycler is gone): no crash, no leak under ASan
}

TEST_CASE("buffer recycler: large buffers are carved from huge-page slabs, small ones from the heap") {
  std::shared_ptr<AlignedBuffer> outlives;
  {
    BufferRecycler recycler(0);  // retains nothing: every Get allocates
    auto a = recycler.Get(1 << 20);
    auto b = recycler.Get(1 << 20);
    // Two 1 MiB buffers share one 2 MiB slab, aligned to a huge page.
    CHECK(reinterpret_cast<uintptr_t>(a->data()) % kHugePageBytes == 0);
    CHECK(b->data() == a->data() + (1u << 20));
    CHECK(recycler.counters().huge_page_slabs == 1);
    auto c = recycler.Get(768 * 1024);  // does not fit the rest of the slab: a new one
    CHECK(reinterpret_cast<uintptr_t>(c->data()) % kHugePageBytes == 0);
    CHECK(recycler.counters().huge_page_slabs == 2);
    auto big = recycler.Get(3u << 20);  // larger than a slab: its own mapping
    CHECK(big->huge_page_backed());
    CHECK(big->size() == (3u << 20));
    CHECK(reinterpret_cast<uintptr_t>(big->data()) % kHugePageBytes == 0);
    CHECK(recycler.counters().huge_page_slabs == 3);
    auto small = recycler.Get(64 * 1024);
    CHECK_FALSE(small->huge_page_backed());
    CHECK_FALSE(small->is_view());
    // All of every buffer is usable memory, and buffers of one slab do not overlap.
    for (auto* buf : {&a, &b, &c, &big, &small}) std::memset((*buf)->data(), 0x5a, (*buf)->size());
    std::memset(b->data(), 0x11, b->size());
    CHECK(a->data()[a->size() - 1] == 0x5a);
    CHECK(b->data()[0] == 0x11);
    // Dropping one buffer of a slab leaves the other intact; one held past the
    // recycler keeps its slab mapped.
    a.reset();
    CHECK(b->data()[b->size() - 1] == 0x11);
    outlives = std::move(b);
  }
  std::memset(outlives->data(), 0x22, outlives->size());
  CHECK(outlives->data()[12345] == 0x22);
  outlives.reset();  // the last reference to the slab: unmapped
}

}  // namespace
}  // namespace tapmap::pool
