// Reading and writing the superblock of a pool: a file or block device, or a RADOS
// pool (layout: protocol/pool_format.h; locations: protocol/pool_location.h). The
// functions below take a location text and dispatch on its kind.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "protocol/pool_format.h"

namespace tapmap::protocol {

struct FormatOptions {
  std::string path;         // location: regular file (created if missing), block device
                            // or rados:CEPHPOOL/PREFIX (protocol/pool_location.h)
  uint64_t size_bytes = 0;  // pool size; 0 = the block device's size (required otherwise)
  uint32_t block_size = 64 * 1024;
  bool force = false;  // overwrite an existing tapmap superblock
  // Regular files only: reserve the pool's space in the host filesystem (fallocate)
  // instead of leaving the file sparse. Writes then never fail for lack of host space
  // and cost no block allocation on the data path.
  bool preallocate = false;
  // RADOS pools only: bytes of the address space per object (power of two, a multiple
  // of block_size, <= kMaxObjectBytes). File pools record 0.
  uint64_t object_bytes = kDefaultObjectBytes;
};

// Writes a fresh superblock (new uuid) and fsyncs it. A regular file is created or
// resized to size_bytes: sparse, or preallocated with `preallocate` (kNoSpace if the
// host filesystem cannot hold it, kNotSupported if it cannot preallocate). Refuses (kAlreadyExists) to overwrite a valid or
// damaged tapmap superblock unless `force`. kInvalidArgument for a bad block size,
// a size too small for the data offset plus one block, or larger than the device.
// A RADOS pool: writes only the superblock object, with an exclusive create unless
// `force` (no data objects: the pool starts sparse); --size is required, a bad
// object size is kInvalidArgument and `preallocate` kNotSupported.
Result<Superblock> FormatPool(const FormatOptions& options);

// Reads and validates the superblock of the pool at location `path`; for a file or
// device also checks that it is at least as large as the superblock says. A file
// superblock recording an object size, or a RADOS one recording none, is kCorruption.
Result<Superblock> ReadPoolSuperblock(const std::string& path);

// A fresh superblock (random uuid, now) for a pool of `size` bytes; used by both kinds.
Result<Superblock> NewSuperblock(uint32_t block_size, uint64_t size, uint64_t object_bytes);

}  // namespace tapmap::protocol
