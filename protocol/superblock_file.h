// Reading and writing the superblock of a pool file or block device
// (layout: protocol/pool_format.h).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "protocol/pool_format.h"

namespace tapmap::protocol {

struct FormatOptions {
  std::string path;         // regular file (created if missing) or block device
  uint64_t size_bytes = 0;  // pool size; 0 = the block device's size (required for files)
  uint32_t block_size = 64 * 1024;
  bool force = false;  // overwrite an existing tapmap superblock
  // Regular files only: reserve the pool's space in the host filesystem (fallocate)
  // instead of leaving the file sparse. Writes then never fail for lack of host space
  // and cost no block allocation on the data path.
  bool preallocate = false;
};

// Writes a fresh superblock (new uuid) and fsyncs it. A regular file is created or
// resized to size_bytes: sparse, or preallocated with `preallocate` (kNoSpace if the
// host filesystem cannot hold it, kNotSupported if it cannot preallocate). Refuses (kAlreadyExists) to overwrite a valid or
// damaged tapmap superblock unless `force`. kInvalidArgument for a bad block size,
// a size too small for the data offset plus one block, or larger than the device.
Result<Superblock> FormatPool(const FormatOptions& options);

// Reads and validates the superblock of the pool at `path`; also checks that the
// file/device is at least as large as the superblock says.
Result<Superblock> ReadPoolSuperblock(const std::string& path);

}  // namespace tapmap::protocol
