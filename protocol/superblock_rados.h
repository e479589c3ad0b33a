// The superblock of a RADOS pool: one object, RadosSuperblockObject(prefix), holding
// the same 4096 bytes as a file pool's first block (protocol/pool_format.h). Callers
// normally go through FormatPool / ReadPoolSuperblock (superblock_file.h), which
// dispatch here for "rados:" locations.
#pragma once

#include "common/status.h"
#include "protocol/pool_format.h"
#include "protocol/pool_location.h"
#include "protocol/superblock_file.h"

namespace tapmap::protocol {

// Writes a fresh superblock object for `location` (a RADOS location); contract as
// FormatPool's. Without options.force the write is an atomic exclusive create: an
// existing superblock object (valid, damaged or foreign) is kAlreadyExists, untouched.
Result<Superblock> FormatRadosPool(const PoolLocation& location, const FormatOptions& options);

// Reads and validates the superblock object of `location`. kNotFound if it does not
// exist, kUnavailable if the cluster cannot be reached within the location's timeout.
Result<Superblock> ReadRadosPoolSuperblock(const PoolLocation& location);

}  // namespace tapmap::protocol
