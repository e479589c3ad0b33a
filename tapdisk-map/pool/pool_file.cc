#include "tapdisk-map/pool/pool_file.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cerrno>

namespace tapmap::pool {
namespace {

Status OpenError(const std::string& path, int err) {
  std::string context = "open pool " + path;
  if (err == ENOENT) return Status::NotFound(context + ": no such file");
  if (err == EACCES || err == EPERM) return Status::PermissionDenied(context + ": permission denied");
  return Status::FromErrno(context, err);
}

}  // namespace

Result<PoolFile> PoolFile::Open(const std::string& path, bool read_only, const Logger& log) {
  const int access = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  bool direct = true;
  int fd = ::open(path.c_str(), access | O_DIRECT);
  if (fd < 0 && errno == EINVAL) {
    // The filesystem refuses O_DIRECT (tmpfs, some FUSE filesystems).
    direct = false;
    fd = ::open(path.c_str(), access);
  }
  if (fd < 0) return OpenError(path, errno);
  UniqueFd owned(fd);

  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno("stat pool " + path, errno);
  uint64_t size = 0;
  if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) return Status::FromErrno("size of pool device " + path, errno);
  } else if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
  } else {
    return Status::InvalidArgument("pool " + path + " is neither a regular file nor a block device");
  }
  if (!direct) {
    log.Warnf("pool %s: filesystem does not support O_DIRECT; using buffered I/O", path.c_str());
  }
  return PoolFile(std::move(owned), path, direct, read_only, size, S_ISREG(st.st_mode));
}

Result<PoolFile> PoolFile::Dup() const {
  int fd = ::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("dup pool descriptor", errno);
  return PoolFile(UniqueFd(fd), path_, direct_, read_only_, size_bytes_, regular_file_);
}

}  // namespace tapmap::pool
