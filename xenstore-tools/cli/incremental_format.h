// The tapmap incremental file: what `tapmap volume export --since SNAP NAME FILE` writes
// and `tapmap volume import --diff FILE NAME` applies. Defined here once; the document
// is xenstore-tools/README.md "Incremental file format".
//
//   "tapmap-incremental 1\n"                     magic line (21 bytes)
//   {"from": ..., "extents": [...], ...}\n        header: one line of JSON
//   zero bytes up to the next multiple of 4096   (data_offset)
//   the bytes of every data extent, in the order the header lists them
//
// Header fields: "from", "to" (volume names), "from_size_bytes", "size_bytes" (the
// size of `to`), "created_unix_seconds", "data_bytes" (sum of the data extents'
// lengths) and "extents": [[offset, length, "data" | "zero"], ...] — every extent of
// `to` whose mapping differs from `from`, sorted, non-overlapping, 512-aligned, inside
// size_bytes. "zero" extents read as zeros in `to` and carry no bytes. The file is
// exactly data_offset + data_bytes long (a shorter one is truncated, refused).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace tapmap::cli {

inline constexpr char kIncrementalMagic[] = "tapmap-incremental 1\n";
inline constexpr uint64_t kIncrementalAlignment = 4096;
// A header line longer than this is refused (about 10 million extents).
inline constexpr uint64_t kMaxIncrementalHeaderBytes = 512ull << 20;

struct IncrementalExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool zero = false;
};

struct IncrementalHeader {
  std::string from;
  std::string to;
  uint64_t from_size_bytes = 0;
  uint64_t size_bytes = 0;
  uint64_t created_unix_seconds = 0;
  std::vector<IncrementalExtent> extents;

  uint64_t data_bytes() const;  // sum of the data extents' lengths
  uint64_t zero_bytes() const;  // sum of the zero extents' lengths
};

// Checks the extent rules above; kInvalidArgument naming the first bad extent.
Status ValidateIncremental(const IncrementalHeader& header);

// The magic line, the header line and the padding: write this at offset 0, the data
// at offset returned.size().
std::string EncodeIncrementalHeader(const IncrementalHeader& header);

struct IncrementalFile {
  IncrementalHeader header;
  uint64_t data_offset = 0;  // where the first data extent's bytes start
};

// Reads and checks the header of the file open as `fd` (`path` for messages),
// including the file's length. kCorruption for anything that is not a well-formed
// incremental file.
Result<IncrementalFile> ReadIncrementalFile(int fd, const std::string& path);

}  // namespace tapmap::cli
