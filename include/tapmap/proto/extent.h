// The mapping protocol's Extent and Range as plain C++ values, defined once for the
// server (mapserver) and the hosts (the engine, the CLI), with the one conversion to
// and from their Cap'n Proto form (mapping.capnp says what every field means). Code on
// either side works on these values; only the RPC layers convert.
#pragma once

#include <cstdint>
#include <vector>

#include "tapmap/proto/mapping.capnp.h"

namespace tapmap {

// mapping.capnp ExtentState, with the same numbering.
enum class ExtentState : uint8_t { kHole = 0, kOwned = 1, kShared = 2 };

// mapping.capnp Extent: bytes throughout.
struct Extent {
  uint64_t logical = 0;     // byte offset in the volume, block-aligned
  uint64_t length = 0;      // bytes, whole blocks, > 0
  uint64_t physical = 0;    // byte offset in the pool (0 for a hole)
  uint64_t generation = 0;  // allocation generation (0 for a hole)
  ExtentState state = ExtentState::kHole;

  uint64_t end() const { return logical + length; }
  bool operator==(const Extent&) const = default;
};

// mapping.capnp Range.
struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t end() const { return offset + length; }
  bool operator==(const ByteRange&) const = default;
};

// Conversions. A state the schema does not know (a newer peer) reads as a hole's.
ExtentState FromProto(proto::ExtentState state);
proto::ExtentState ToProto(ExtentState state);
Extent FromProto(proto::Extent::Reader extent);
void ToProto(const Extent& extent, proto::Extent::Builder out);
std::vector<Extent> FromProto(capnp::List<proto::Extent>::Reader list);
void ToProto(const std::vector<Extent>& extents, capnp::List<proto::Extent>::Builder out);
std::vector<ByteRange> FromProto(capnp::List<proto::Range>::Reader list);
void ToProto(const std::vector<ByteRange>& ranges, capnp::List<proto::Range>::Builder out);

}  // namespace tapmap
