// The engine's names for the mapping protocol's value types (defined once, with their
// Cap'n Proto conversions, in include/tapmap/proto/extent.h), and the engine's own
// RecallReason. Only mapping_client.cc converts to and from Cap'n Proto.
#pragma once

#include <cstdint>
#include <string>

#include "tapmap/proto/extent.h"

namespace tapmap::engine {

using tapmap::ByteRange;
using tapmap::Extent;
using tapmap::ExtentState;

enum class RecallReason : uint8_t { kSnapshot, kClone, kResize, kDelete, kDiscard };

std::string ExtentStateName(ExtentState state);

}  // namespace tapmap::engine
