// Engine-side copies of the mapping protocol's Extent and Range (see
// include/tapmap/proto/mapping.capnp for their meaning). The engine works on these
// plain values; only mapping_client.cc converts to and from Cap'n Proto.
#pragma once

#include <cstdint>
#include <string>

namespace tapmap::engine {

enum class ExtentState : uint8_t { kHole, kOwned, kShared };

struct Extent {
  uint64_t logical = 0;     // byte offset in the volume, block-aligned
  uint64_t length = 0;      // bytes, whole blocks, > 0
  uint64_t physical = 0;    // byte offset in the pool (0 for a hole)
  uint64_t generation = 0;  // allocation generation (0 for a hole)
  ExtentState state = ExtentState::kHole;

  uint64_t end() const { return logical + length; }
  bool operator==(const Extent&) const = default;
};

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t end() const { return offset + length; }
  bool operator==(const ByteRange&) const = default;
};

enum class RecallReason : uint8_t { kSnapshot, kClone, kResize, kDelete, kDiscard };

std::string ExtentStateName(ExtentState state);

}  // namespace tapmap::engine
