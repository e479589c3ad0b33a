// The blkif ring ABIs: the layout of requests and responses in the shared ring
// depends on the guest's ABI, announced in the frontend's `protocol` node
// (xen/io/protocols.h). This header is the ONE place that defines them:
//  - kNative: the structs of xen/io/blkif.h as compiled for this host;
//  - kX86_32: 32-bit x86 guests (uint64_t aligned to 4 bytes in structs);
//  - kX86_64: 64-bit x86 guests (natural alignment).
// On an x86_64 host kNative and kX86_64 have the same layout; they are kept apart so
// that each protocol value maps to exactly one ring type, as with blkback.
//
// The ring macros of xen/io/ring.h are used on these types (DEFINE_RING_TYPES), and
// RingTypes<abi> (at the end) bundles each ABI's types for code templated over the
// ABI (the back end's BackRing, the tests' simulated front end). The macros need the
// memory barriers below, which the Xen libraries' headers do not provide to
// user space without xenctrl.h.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "common/status.h"

// The current interface (ring.h then uses xen_mb & co. rather than legacy mb()).
#ifndef __XEN_INTERFACE_VERSION__
#define __XEN_INTERFACE_VERSION__ 0x00040e00
#endif
#ifndef xen_mb
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#endif
#ifndef xen_rmb
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#endif
#ifndef xen_wmb
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#endif

extern "C" {
#include <xen/grant_table.h>
#include <xen/io/blkif.h>
#include <xen/io/protocols.h>
#include <xen/io/xenbus.h>
}

namespace tapmap::blkif {

enum class Abi : uint8_t { kNative, kX86_32, kX86_64 };

// The ABI selected by a frontend's `protocol` node; nullopt (node absent) means
// native, as blkif.h specifies. Unknown values: kNotSupported.
Result<Abi> AbiFromProtocol(std::optional<std::string_view> protocol);
// "native", "x86_32-abi", "x86_64-abi".
const char* AbiName(Abi abi);

// Segments per indirect page (the same in every ABI: 8-byte entries).
inline constexpr uint32_t kSegmentsPerIndirectPage = 4096 / sizeof(blkif_request_segment);

}  // namespace tapmap::blkif

// ---------------------------------------------------------------------------------
// x86_32 layouts: at most 4-byte alignment.
#pragma pack(push, 4)
struct blkif_x86_32_request {
  uint8_t operation;
  uint8_t nr_segments;
  blkif_vdev_t handle;
  uint64_t id;
  blkif_sector_t sector_number;
  struct blkif_request_segment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
};
struct blkif_x86_32_request_discard {
  uint8_t operation;
  uint8_t flag;
  blkif_vdev_t handle;
  uint64_t id;
  blkif_sector_t sector_number;
  uint64_t nr_sectors;
};
struct blkif_x86_32_request_indirect {
  uint8_t operation;
  uint8_t indirect_op;
  uint16_t nr_segments;
  uint64_t id;
  blkif_sector_t sector_number;
  blkif_vdev_t handle;
  uint16_t pad1;
  grant_ref_t indirect_grefs[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
  uint64_t pad2;  // blkif.h pads the i386 struct to 64 bytes
};
struct blkif_x86_32_response {
  uint64_t id;
  uint8_t operation;
  int16_t status;
};
#pragma pack(pop)

// x86_64 layouts: natural alignment.
struct blkif_x86_64_request {
  uint8_t operation;
  uint8_t nr_segments;
  blkif_vdev_t handle;
  uint64_t __attribute__((aligned(8))) id;
  blkif_sector_t sector_number;
  struct blkif_request_segment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
};
struct blkif_x86_64_request_discard {
  uint8_t operation;
  uint8_t flag;
  blkif_vdev_t handle;
  uint64_t __attribute__((aligned(8))) id;
  blkif_sector_t sector_number;
  uint64_t nr_sectors;
};
struct blkif_x86_64_request_indirect {
  uint8_t operation;
  uint8_t indirect_op;
  uint16_t nr_segments;
  uint64_t __attribute__((aligned(8))) id;
  blkif_sector_t sector_number;
  blkif_vdev_t handle;
  grant_ref_t indirect_grefs[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
};
struct blkif_x86_64_response {
  uint64_t __attribute__((aligned(8))) id;
  uint8_t operation;
  int16_t status;
};

extern "C" {
DEFINE_RING_TYPES(blkif_x86_32, struct blkif_x86_32_request, struct blkif_x86_32_response);
DEFINE_RING_TYPES(blkif_x86_64, struct blkif_x86_64_request, struct blkif_x86_64_response);
}

// The layouts guests use (offsets as the i386 / x86_64 compilers lay them out).
static_assert(sizeof(blkif_x86_32_request) == 108);
static_assert(offsetof(blkif_x86_32_request, id) == 4);
static_assert(offsetof(blkif_x86_32_request, seg) == 20);
static_assert(sizeof(blkif_x86_32_request_discard) == 28);
static_assert(offsetof(blkif_x86_32_request_indirect, indirect_grefs) == 24);
static_assert(sizeof(blkif_x86_32_request_indirect) == 64);
static_assert(sizeof(blkif_x86_32_response) == 12);
static_assert(sizeof(blkif_x86_64_request) == 112);
static_assert(offsetof(blkif_x86_64_request, seg) == 24);
static_assert(sizeof(blkif_x86_64_request_discard) == 32);
static_assert(offsetof(blkif_x86_64_request_indirect, indirect_grefs) == 28);
static_assert(sizeof(blkif_x86_64_request_indirect) == 64);
static_assert(sizeof(blkif_x86_64_response) == 16);

// ---------------------------------------------------------------------------------
// RingTypes: the types of one ABI's ring, as the ring.h macros need them, for code
// written once as a template over the ABI. Both ends of a ring take their types from
// here (BackRing in back_ring.cc, SimBlkfront's front end in the tests), so they
// cannot disagree on which struct is whose.
namespace tapmap::blkif {

// The bundle, from the types blkif.h (or the layouts above) and DEFINE_RING_TYPES give
// one ABI.
template <Abi A, typename SharedRingT, typename BackPrivateRingT, typename FrontPrivateRingT, typename RequestT,
          typename DiscardT, typename IndirectT, typename ResponseT>
struct RingTypeBundle {
  static constexpr Abi kAbi = A;
  using SharedRing = SharedRingT;              // the shared page(s)
  using BackPrivateRing = BackPrivateRingT;    // the back end's private indices
  using FrontPrivateRing = FrontPrivateRingT;  // the front end's private indices
  using Request = RequestT;                    // one request slot
  using Discard = DiscardT;                    // the slot as BLKIF_OP_DISCARD lays it out
  using Indirect = IndirectT;                  // the slot as BLKIF_OP_INDIRECT lays it out
  using Response = ResponseT;                  // one response slot
};

template <Abi A>
struct RingTypes;

template <>
struct RingTypes<Abi::kNative>
    : RingTypeBundle<Abi::kNative, blkif_sring, blkif_back_ring, blkif_front_ring, blkif_request,
                     blkif_request_discard, blkif_request_indirect, blkif_response> {};

template <>
struct RingTypes<Abi::kX86_32>
    : RingTypeBundle<Abi::kX86_32, blkif_x86_32_sring, blkif_x86_32_back_ring, blkif_x86_32_front_ring,
                     blkif_x86_32_request, blkif_x86_32_request_discard, blkif_x86_32_request_indirect,
                     blkif_x86_32_response> {};

template <>
struct RingTypes<Abi::kX86_64>
    : RingTypeBundle<Abi::kX86_64, blkif_x86_64_sring, blkif_x86_64_back_ring, blkif_x86_64_front_ring,
                     blkif_x86_64_request, blkif_x86_64_request_discard, blkif_x86_64_request_indirect,
                     blkif_x86_64_response> {};

// Calls `f(RingTypes<abi>{})` and returns what it returns: the one place a run-time
// ABI becomes its compile-time types. `f` must return the same type for every ABI.
template <typename F>
decltype(auto) WithRingTypes(Abi abi, F&& f) {
  switch (abi) {
    case Abi::kX86_32: return f(RingTypes<Abi::kX86_32>{});
    case Abi::kX86_64: return f(RingTypes<Abi::kX86_64>{});
    case Abi::kNative: break;
  }
  return f(RingTypes<Abi::kNative>{});
}

}  // namespace tapmap::blkif
