// OutputFile: the file a `volume export` writes, claimed before the copy starts and
// removed again unless the export succeeded — no partial export is left behind.
//
// Without overwrite the file is created with O_EXCL, so an existing file (or one
// created concurrently) is never touched. With overwrite an existing regular file is
// truncated and, on failure, removed too (its old content is gone either way); an
// existing non-regular file (a block device) is written in place and never removed.
#pragma once

#include <string>

#include "common/status.h"
#include "common/unique_fd.h"

namespace tapmap::cli {

class OutputFile {
 public:
  // kAlreadyExists ("use --force") if `path` exists and !overwrite; kInvalidArgument
  // for a directory; the OS error otherwise.
  static Result<OutputFile> Claim(const std::string& path, bool overwrite);

  OutputFile(OutputFile&& other) noexcept;
  OutputFile& operator=(OutputFile&&) = delete;
  OutputFile(const OutputFile&) = delete;
  // Removes the file unless Keep() was called (see above).
  ~OutputFile();

  const std::string& path() const { return path_; }
  // The open file (read-write), until Close().
  int fd() const { return fd_.get(); }
  // Closes the descriptor (e.g. before a helper rewrites the file); the claim stays.
  void Close() { fd_.Reset(); }
  // The export succeeded: keep the file.
  void Keep() { keep_ = true; }

 private:
  OutputFile(std::string path, UniqueFd fd, bool removable)
      : path_(std::move(path)), fd_(std::move(fd)), removable_(removable) {}

  std::string path_;
  UniqueFd fd_;
  bool removable_ = false;  // a regular file this export created or truncated
  bool keep_ = false;
};

}  // namespace tapmap::cli
