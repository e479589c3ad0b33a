// On-disk format of a tapmap storage pool: the superblock. Defined here and in
// protocol/doc/pool_format.md only; `mapserver format`, `serve` and `fsck` all use it.
//
// A pool is a regular file or a block device, or a set of RADOS objects (below).
// Either way it is one byte address space:
//
//   [0, 4096)               superblock (this file)
//   [4096, data_offset)     zero, reserved
//   [data_offset, ...)      data area: total_blocks blocks of block_size bytes.
//                           Block b lives at byte data_offset + b * block_size.
//
// Every integer in the superblock is little-endian at a fixed offset:
//
//   offset size field
//        0    8 magic            "TAPMAPPL"
//        8    4 format_version   kPoolFormatVersion
//       12    4 block_size       power of two, 4 KiB .. 1 MiB
//       16   16 uuid             random, names the pool (the metadata store records it)
//       32    8 pool_bytes       size of the pool file/device when formatted
//       40    8 data_offset      kDataOffset (1 MiB), a multiple of block_size
//       48    8 total_blocks     (pool_bytes - data_offset) / block_size, >= 1
//       56    8 created_unix_seconds
//       64    8 object_bytes     0: a file/device pool; else a RADOS pool whose
//                                objects hold object_bytes of the address space each
//                                (power of two, >= block_size, <= kMaxObjectBytes)
//       72 4016 zero
//     4088    8 checksum         first 8 bytes (as a little-endian u64) of
//                                SHA-256(bytes [0, 4088))
//
// RADOS pools (location "rados:CEPHPOOL/PREFIX", protocol/pool_location.h): the
// superblock is the object RadosSuperblockObject(PREFIX) (exactly these 4096 bytes);
// byte `addr` of the address space (addr >= data_offset) is byte addr % object_bytes
// of the object RadosDataObject(PREFIX, addr / object_bytes). Objects are created by
// their first write; an absent object or a range past an object's end reads as zeros
// (the pool is sparse). [0, data_offset) is never stored.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tapmap::protocol {

inline constexpr char kPoolMagic[8] = {'T', 'A', 'P', 'M', 'A', 'P', 'P', 'L'};
inline constexpr uint32_t kPoolFormatVersion = 1;
inline constexpr size_t kSuperblockSize = 4096;
inline constexpr size_t kSuperblockChecksumOffset = 4088;
inline constexpr uint64_t kDataOffset = 1024 * 1024;
inline constexpr size_t kObjectBytesOffset = 64;
inline constexpr uint64_t kDefaultObjectBytes = 4ull << 20;
inline constexpr uint64_t kMaxObjectBytes = 128ull << 20;  // Ceph's default osd_max_object_size

using PoolUuid = std::array<uint8_t, 16>;

// "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
std::string FormatUuid(const PoolUuid& uuid);

struct Superblock {
  uint32_t format_version = kPoolFormatVersion;
  uint32_t block_size = 0;
  PoolUuid uuid{};
  uint64_t pool_bytes = 0;
  uint64_t data_offset = kDataOffset;
  uint64_t total_blocks = 0;
  uint64_t created_unix_seconds = 0;
  uint64_t object_bytes = 0;  // 0: file/device pool; else a RADOS pool's object size

  // Byte offset in the pool of block `block` (< total_blocks).
  uint64_t BlockOffset(uint64_t block) const { return data_offset + block * block_size; }
};

// RADOS object names of a pool whose location has prefix `prefix`:
// "PREFIX.superblock" and "PREFIX.data.%016llx" (index in lower-case hex, 16 digits).
std::string RadosSuperblockObject(std::string_view prefix);
std::string RadosDataObject(std::string_view prefix, uint64_t index);

// Serialises `sb` into exactly kSuperblockSize bytes (checksum included).
std::array<uint8_t, kSuperblockSize> EncodeSuperblock(const Superblock& sb);

// Parses and validates a superblock. kNotFound if the magic is absent (not a tapmap
// pool), kCorruption on a bad checksum or inconsistent fields, kNotSupported on an
// unknown format version.
Result<Superblock> DecodeSuperblock(const uint8_t* data, size_t size);

}  // namespace tapmap::protocol
