#include "protocol/superblock_file.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <openssl/rand.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <vector>

#include "common/unique_fd.h"
#include "common/units.h"
#include "protocol/pool_location.h"
#include "protocol/superblock_rados.h"

namespace tapmap::protocol {
namespace {

Result<uint64_t> DeviceOrFileSize(int fd, const std::string& path, bool* is_block) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno("stat " + path, errno);
  *is_block = S_ISBLK(st.st_mode);
  if (*is_block) {
    uint64_t size = 0;
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0)
      return Status::FromErrno("BLKGETSIZE64 " + path, errno);
    return size;
  }
  if (!S_ISREG(st.st_mode))
    return Status::InvalidArgument(path + " is neither a file nor a block device");
  return static_cast<uint64_t>(st.st_size);
}

Status ReadFully(int fd, uint8_t* buf, size_t size, uint64_t offset, const std::string& path,
                 size_t* got) {
  *got = 0;
  while (*got < size) {
    ssize_t n = ::pread(fd, buf + *got, size - *got, static_cast<off_t>(offset + *got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("read " + path, errno);
    }
    if (n == 0) break;
    *got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

Result<Superblock> NewSuperblock(uint32_t block_size, uint64_t size, uint64_t object_bytes) {
  Superblock sb;
  sb.block_size = block_size;
  if (RAND_bytes(sb.uuid.data(), static_cast<int>(sb.uuid.size())) != 1) {
    return Status::Internal("cannot generate a pool uuid");
  }
  sb.uuid[6] = static_cast<uint8_t>((sb.uuid[6] & 0x0f) | 0x40);  // RFC 4122 v4
  sb.uuid[8] = static_cast<uint8_t>((sb.uuid[8] & 0x3f) | 0x80);
  sb.pool_bytes = size;
  sb.data_offset = kDataOffset;
  sb.total_blocks = (size - kDataOffset) / block_size;
  sb.created_unix_seconds = static_cast<uint64_t>(std::time(nullptr));
  sb.object_bytes = object_bytes;
  return sb;
}

Result<Superblock> FormatPool(const FormatOptions& options) {
  const std::string& path = options.path;
  auto location = ParsePoolLocation(path);
  if (!location.ok()) return location.status();
  if (location->is_rados()) return FormatRadosPool(*location, options);
  if (!IsPowerOfTwo(options.block_size) || options.block_size < kMinBlockSize ||
      options.block_size > kMaxBlockSize) {
    return Status::InvalidArgument("block size must be a power of two in 4K..1M, not " +
                                   std::to_string(options.block_size));
  }
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Status::FromErrno("open pool " + path, errno);
  bool is_block = false;
  auto current = DeviceOrFileSize(fd.get(), path, &is_block);
  if (!current.ok()) return current.status();

  std::array<uint8_t, kSuperblockSize> old{};
  size_t got = 0;
  TAPMAP_RETURN_IF_ERROR(ReadFully(fd.get(), old.data(), old.size(), 0, path, &got));
  if (got == old.size() && !options.force) {
    auto existing = DecodeSuperblock(old.data(), old.size());
    if (existing.ok()) {
      return Status::AlreadyExists(path + " already holds tapmap pool " +
                                   FormatUuid(existing->uuid) + " (use --force to overwrite)");
    }
    if (existing.status().code() != StatusCode::kNotFound) {
      return Status::AlreadyExists(path + " holds a damaged tapmap superblock (" +
                                   existing.status().message() + "; use --force to overwrite)");
    }
  }

  uint64_t size = options.size_bytes;
  if (is_block) {
    if (size == 0) size = *current;
    if (size > *current) {
      return Status::InvalidArgument("size " + FormatSize(size) + " exceeds device " + path + " (" +
                                     FormatSize(*current) + ")");
    }
  } else if (size == 0) {
    return Status::InvalidArgument("--size is required for a pool file");
  }
  if (size < kDataOffset + options.block_size) {
    return Status::InvalidArgument("pool size " + FormatSize(size) + " is too small (minimum " +
                                   FormatSize(kDataOffset + options.block_size) + ")");
  }
  if (!is_block && ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return Status::FromErrno("resize pool file " + path, errno);
  }
  if (!is_block && options.preallocate) {
    int err = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(size));  // returns the error
    if (err == ENOSPC) return Status::NoSpace("no room to preallocate " + FormatSize(size) + " for " + path);
    if (err == EOPNOTSUPP || err == EINVAL) {
      return Status::NotSupported("the filesystem of " + path + " cannot preallocate; format without --preallocate");
    }
    if (err != 0) return Status::FromErrno("preallocate pool file " + path, err);
  }

  auto fresh = NewSuperblock(options.block_size, size, 0);
  if (!fresh.ok()) return fresh.status();
  const Superblock& sb = *fresh;

  // Zero the reserved area too, then the superblock, then make it durable.
  std::vector<uint8_t> head(kDataOffset, 0);
  auto encoded = EncodeSuperblock(sb);
  std::copy(encoded.begin(), encoded.end(), head.begin());
  size_t done = 0;
  while (done < head.size()) {
    ssize_t n =
        ::pwrite(fd.get(), head.data() + done, head.size() - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("write superblock to " + path, errno);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return Status::FromErrno("fsync " + path, errno);
  return sb;
}

Result<Superblock> ReadPoolSuperblock(const std::string& path) {
  auto location = ParsePoolLocation(path);
  if (!location.ok()) return location.status();
  if (location->is_rados()) return ReadRadosPoolSuperblock(*location);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno("open pool " + path, errno);
  bool is_block = false;
  auto size = DeviceOrFileSize(fd.get(), path, &is_block);
  if (!size.ok()) return size.status();
  std::array<uint8_t, kSuperblockSize> buf{};
  size_t got = 0;
  TAPMAP_RETURN_IF_ERROR(ReadFully(fd.get(), buf.data(), buf.size(), 0, path, &got));
  auto sb = DecodeSuperblock(buf.data(), got);
  if (!sb.ok()) return sb.status().WithContext("pool " + path);
  if (sb->object_bytes != 0) {
    return Status::Corruption("pool " + path + ": its superblock describes a RADOS pool (object size " +
                              std::to_string(sb->object_bytes) + ")");
  }
  if (*size < sb->pool_bytes) {
    return Status::Corruption("pool " + path + " is " + FormatSize(*size) +
                              ", smaller than its superblock says (" + FormatSize(sb->pool_bytes) +
                              ")");
  }
  return sb;
}

}  // namespace tapmap::protocol
