// Reading and writing the superblock of a pool file or block device
// (layout: mapserver/pool_format.h).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "mapserver/pool_format.h"

namespace tapmap::mapserver {

struct FormatOptions {
  std::string path;         // regular file (created if missing) or block device
  uint64_t size_bytes = 0;  // pool size; 0 = the block device's size (required for files)
  uint32_t block_size = 64 * 1024;
  bool force = false;  // overwrite an existing tapmap superblock
};

// Writes a fresh superblock (new uuid) and fsyncs it. A regular file is created or
// resized (sparse) to size_bytes. Refuses (kAlreadyExists) to overwrite a valid or
// damaged tapmap superblock unless `force`. kInvalidArgument for a bad block size,
// a size too small for the data offset plus one block, or larger than the device.
Result<Superblock> FormatPool(const FormatOptions& options);

// Reads and validates the superblock of the pool at `path`; also checks that the
// file/device is at least as large as the superblock says.
Result<Superblock> ReadPoolSuperblock(const std::string& path);

}  // namespace tapmap::mapserver
