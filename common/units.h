// Byte and sector units shared by every program, and parsing of human sizes.
//
// Conventions used throughout tapmap:
//  - Offsets and lengths on the mapping protocol and in the engine are bytes (uint64_t).
//  - The Xen ring and NBD count 512-byte sectors whatever the disk's logical sector size.
//  - The pool is carved into blocks of one size per pool (a power of two, 4 KiB..1 MiB).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tapmap {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;
inline constexpr uint64_t kTiB = 1024 * kGiB;

inline constexpr uint32_t kSectorShift = 9;
inline constexpr uint32_t kSectorSize = 1u << kSectorShift;  // ring/NBD sector unit
inline constexpr uint32_t kPageSize = 4096;                  // Xen grant page size

inline constexpr uint64_t kMinBlockSize = 4 * kKiB;
inline constexpr uint64_t kMaxBlockSize = 1 * kMiB;
inline constexpr uint64_t kDefaultBlockSize = 64 * kKiB;

inline constexpr bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }
inline constexpr uint64_t AlignDown(uint64_t v, uint64_t align) { return v - v % align; }
// Caller guarantees no overflow (v + align - 1 fits in uint64_t).
inline constexpr uint64_t AlignUp(uint64_t v, uint64_t align) { return AlignDown(v + align - 1, align); }
inline constexpr bool IsAligned(uint64_t v, uint64_t align) { return v % align == 0; }

// True if [offset, offset+length) lies within [0, limit) without overflow.
inline constexpr bool RangeWithin(uint64_t offset, uint64_t length, uint64_t limit) {
  return offset <= limit && length <= limit - offset;
}

// Parses "4096", "64K", "64KiB", "10M", "2G", "1T" (binary multiples; case-insensitive).
// Rejects empty input, garbage, negative numbers and overflow with kInvalidArgument.
Result<uint64_t> ParseSize(std::string_view text);

// Formats a byte count for people: "64 KiB", "1.5 GiB", "512 B".
std::string FormatSize(uint64_t bytes);

}  // namespace tapmap
