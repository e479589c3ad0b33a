#include "xenstore-tools/cli/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace tapmap::cli {

Result<OutputFile> OutputFile::Claim(const std::string& path, bool overwrite) {
  if (path.empty()) return Status::InvalidArgument("no destination file given");
  struct stat st {};
  bool exists = ::stat(path.c_str(), &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) return Status::InvalidArgument(path + " is a directory");
  if (exists && !overwrite) {
    return Status::AlreadyExists(path + " exists (use --force to overwrite it)");
  }
  bool regular = !exists || S_ISREG(st.st_mode);
  int flags = O_RDWR | O_CLOEXEC | O_CREAT | (overwrite ? 0 : O_EXCL) | (regular ? O_TRUNC : 0);
  UniqueFd fd(::open(path.c_str(), flags, 0644));
  if (!fd) {
    if (errno == EEXIST) return Status::AlreadyExists(path + " exists (use --force to overwrite it)");
    return Status::FromErrno("create " + path, errno);
  }
  if (::fstat(fd.get(), &st) == 0) regular = S_ISREG(st.st_mode);
  return OutputFile(path, std::move(fd), regular);
}

OutputFile::OutputFile(OutputFile&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::move(other.fd_)),
      removable_(other.removable_),
      keep_(other.keep_) {
  other.removable_ = false;
}

OutputFile::~OutputFile() {
  fd_.Reset();
  if (!keep_ && removable_) ::unlink(path_.c_str());
}

}  // namespace tapmap::cli
