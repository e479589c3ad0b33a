// BackRing against hand-laid bytes: the wire layouts of the three ABIs are checked
// byte by byte here, independently of the structs in ring_abi.h that SimBlkfront
// shares with the back end.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "tapdisk-map/blkif/back_ring.h"

namespace tapmap::blkif {
namespace {

constexpr size_t kHeader = 64;  // req_prod, req_event, rsp_prod, rsp_event, pad

template <typename T>
void Put(std::vector<uint8_t>& page, size_t offset, T value) {
  std::memcpy(page.data() + offset, &value, sizeof value);
}
template <typename T>
T Get(const std::vector<uint8_t>& page, size_t offset) {
  T v;
  std::memcpy(&v, page.data() + offset, sizeof v);
  return v;
}

struct Layout {
  Abi abi;
  size_t slot;         // bytes per slot
  size_t id;           // offset of id in a read/write request
  size_t sector;       // offset of sector_number
  size_t seg;          // offset of seg[0]
  size_t ind_grefs;    // offset of indirect_grefs in an indirect request
  size_t ind_sector;   // offset of sector_number in an indirect request
  size_t rsp_size;     // response bytes
  size_t rsp_status;   // offset of status in a response
};

TEST_CASE("blkif back ring: request and response layouts of each ABI") {
  auto l = GENERATE(Layout{Abi::kX86_32, 108, 4, 12, 20, 24, 12, 12, 10},
                    Layout{Abi::kX86_64, 112, 8, 16, 24, 28, 16, 16, 10},
                    Layout{Abi::kNative, 112, 8, 16, 24, 28, 16, 16, 10});
  CAPTURE(AbiName(l.abi));
  std::vector<uint8_t> page(4096, 0xee);  // garbage everywhere a guest could write
  Put<uint32_t>(page, 0, 3);   // req_prod: three requests
  Put<uint32_t>(page, 8, 0);   // rsp_prod
  // Slot 0: a 2-segment write.
  size_t s0 = kHeader;
  page[s0] = BLKIF_OP_WRITE;
  page[s0 + 1] = 2;
  Put<uint16_t>(page, s0 + 2, 51712);
  Put<uint64_t>(page, s0 + l.id, 0x1122334455667788ull);
  Put<uint64_t>(page, s0 + l.sector, 4096);
  Put<uint32_t>(page, s0 + l.seg, 77);
  page[s0 + l.seg + 4] = 1;
  page[s0 + l.seg + 5] = 6;
  Put<uint32_t>(page, s0 + l.seg + 8, 78);
  page[s0 + l.seg + 12] = 0;
  page[s0 + l.seg + 13] = 7;
  // Slot 1: an indirect read of 300 segments.
  size_t s1 = kHeader + l.slot;
  page[s1] = BLKIF_OP_INDIRECT;
  page[s1 + 1] = BLKIF_OP_READ;
  Put<uint16_t>(page, s1 + 2, 300);
  Put<uint64_t>(page, s1 + l.id, 42);
  Put<uint64_t>(page, s1 + l.ind_sector, 8);
  Put<uint32_t>(page, s1 + l.ind_grefs, 500);
  Put<uint32_t>(page, s1 + l.ind_grefs + 4, 501);
  // Slot 2: a discard.
  size_t s2 = kHeader + 2 * l.slot;
  page[s2] = BLKIF_OP_DISCARD;
  page[s2 + 1] = 0;
  Put<uint64_t>(page, s2 + l.id, 43);
  Put<uint64_t>(page, s2 + l.sector, 100);
  Put<uint64_t>(page, s2 + l.sector + 8, 2048);

  auto ring = BackRing::Attach(l.abi, page.data(), 1);
  CHECK(ring->size() == 32);
  std::vector<RingRequest> got;
  auto n = ring->Fetch(16, &got);
  REQUIRE(n.ok());
  REQUIRE(*n == 3);
  CHECK(got[0].operation == BLKIF_OP_WRITE);
  CHECK(got[0].nr_segments == 2);
  CHECK(got[0].handle == 51712);
  CHECK(got[0].id == 0x1122334455667788ull);
  CHECK(got[0].sector_number == 4096);
  CHECK(got[0].segments[0].gref == 77);
  CHECK(got[0].segments[0].first_sect == 1);
  CHECK(got[0].segments[0].last_sect == 6);
  CHECK(got[0].segments[1].gref == 78);
  CHECK(got[0].segments[1].last_sect == 7);
  CHECK(got[1].operation == BLKIF_OP_INDIRECT);
  CHECK(got[1].indirect_op == BLKIF_OP_READ);
  CHECK(got[1].nr_segments == 300);
  CHECK(got[1].id == 42);
  CHECK(got[1].sector_number == 8);
  CHECK(got[1].indirect_grefs[0] == 500);
  CHECK(got[1].indirect_grefs[1] == 501);
  CHECK(got[2].operation == BLKIF_OP_DISCARD);
  CHECK(got[2].id == 43);
  CHECK(got[2].sector_number == 100);
  CHECK(got[2].nr_sectors == 2048);

  // Responses: id, operation, status at their offsets, padding zeroed.
  ring->PutResponse(0x1122334455667788ull, BLKIF_OP_WRITE, BLKIF_RSP_ERROR);
  ring->PutResponse(42, BLKIF_OP_INDIRECT, BLKIF_RSP_OKAY);
  Put<uint32_t>(page, 12, 1);  // rsp_event: the guest wants an event at the first response
  CHECK(ring->PushResponses());
  CHECK(Get<uint32_t>(page, 8) == 2);  // rsp_prod published
  CHECK(Get<uint64_t>(page, kHeader) == 0x1122334455667788ull);
  CHECK(page[kHeader + 8] == BLKIF_OP_WRITE);
  CHECK(Get<int16_t>(page, kHeader + l.rsp_status) == BLKIF_RSP_ERROR);
  for (size_t b = 9; b < l.rsp_size; ++b) {
    if (b == l.rsp_status || b == l.rsp_status + 1) continue;
    CHECK(page[kHeader + b] == 0);  // no stale guest bytes in the padding
  }
  CHECK(Get<uint64_t>(page, kHeader + l.slot) == 42);
  // Nothing more requested: the final check re-arms req_event.
  CHECK_FALSE(ring->FinalCheckForRequests());
  CHECK(Get<uint32_t>(page, 4) == 4);  // req_event = req_cons + 1
}

TEST_CASE("blkif back ring: notification only when the guest asked for it") {
  std::vector<uint8_t> page(4096, 0);
  Put<uint32_t>(page, 0, 2);
  page[kHeader] = BLKIF_OP_READ;
  page[kHeader + 112] = BLKIF_OP_READ;
  auto ring = BackRing::Attach(Abi::kNative, page.data(), 1);
  std::vector<RingRequest> got;
  REQUIRE(*ring->Fetch(16, &got) == 2);
  Put<uint32_t>(page, 12, 2);  // rsp_event: notify once the 2nd response is out
  ring->PutResponse(1, BLKIF_OP_READ, 0);
  CHECK_FALSE(ring->PushResponses());
  ring->PutResponse(2, BLKIF_OP_READ, 0);
  CHECK(ring->PushResponses());
}

TEST_CASE("blkif back ring: a producer more than a ring ahead is reported, never read") {
  std::vector<uint8_t> page(4096, 0);
  auto ring = BackRing::Attach(Abi::kX86_32, page.data(), 1);
  Put<uint32_t>(page, 0, 33);  // 33 > 32 slots ahead of responses at 0
  std::vector<RingRequest> got;
  auto n = ring->Fetch(64, &got);
  CHECK(n.status().code() == StatusCode::kCorruption);
  CHECK(got.empty());
  // Exactly a ring's worth is fine; fetching stops at the slots available.
  Put<uint32_t>(page, 0, 32);
  n = ring->Fetch(64, &got);
  REQUIRE(n.ok());
  CHECK(*n == 32);
  // Wrapping indices work: resume from a ring whose indices are near 2^32.
  std::vector<uint8_t> page2(4096, 0);
  Put<uint32_t>(page2, 8, 0xfffffffeu);  // rsp_prod
  Put<uint32_t>(page2, 0, 0x00000003u);  // req_prod wrapped: 5 new requests
  auto ring2 = BackRing::Attach(Abi::kX86_64, page2.data(), 1);
  std::vector<RingRequest> got2;
  n = ring2->Fetch(64, &got2);
  REQUIRE(n.ok());
  CHECK(*n == 5);
}

TEST_CASE("blkif back ring: multi-page rings have the power-of-two slot counts") {
  for (uint32_t order = 0; order <= 4; ++order) {
    std::vector<uint8_t> pages(4096u << order, 0);
    CHECK(BackRing::Attach(Abi::kNative, pages.data(), 1u << order)->size() == 32u << order);
    CHECK(BackRing::Attach(Abi::kX86_32, pages.data(), 1u << order)->size() == 32u << order);
  }
}

}  // namespace
}  // namespace tapmap::blkif
