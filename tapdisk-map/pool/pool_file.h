// PoolFile: the storage pool (a file or block device shared with the mapserver) opened
// for the data path. Hosts read and write the pool directly at the physical offsets
// the mapserver hands out; this class only owns the descriptor and knows how it was
// opened.
//
// O_DIRECT is used when the filesystem supports it (the data cache is ours; the page
// cache would only double the memory used and hide I/O errors until fsync). On a
// filesystem without O_DIRECT (tmpfs) the file is opened buffered instead; direct()
// then says false and a warning is logged — correctness is unchanged because every
// durability point is an fdatasync.
#pragma once

#include <cstdint>
#include <string>

#include "common/logging.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace tapmap::pool {

class PoolFile {
 public:
  // Opens `path` read-write (read-only if `read_only`). Fails with not-found /
  // permission-denied / io-error naming the path.
  static Result<PoolFile> Open(const std::string& path, bool read_only, const Logger& log);

  PoolFile(PoolFile&&) = default;
  PoolFile& operator=(PoolFile&&) = default;

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  bool direct() const { return direct_; }
  bool read_only() const { return read_only_; }
  // Size of the file or device in bytes at open time.
  uint64_t size_bytes() const { return size_bytes_; }
  // True for a regular file, false for a block device.
  bool regular_file() const { return regular_file_; }
  // A second PoolFile on the same open file (dup of the descriptor).
  Result<PoolFile> Dup() const;

 private:
  PoolFile(UniqueFd fd, std::string path, bool direct, bool read_only, uint64_t size, bool regular)
      : fd_(std::move(fd)), path_(std::move(path)), direct_(direct), read_only_(read_only),
        size_bytes_(size), regular_file_(regular) {}

  UniqueFd fd_;
  std::string path_;
  bool direct_;
  bool read_only_;
  uint64_t size_bytes_;
  bool regular_file_;
};

}  // namespace tapmap::pool
