// TempMetaDir: a scratch metadata directory (under $TMPDIR, default /tmp), removed with
// everything in it when the object goes; e.g. fsck loads a RADOS pool's metadata
// (checkpoint + journal) into one to check it.
#pragma once

#include <stdlib.h>

#include <cerrno>
#include <filesystem>
#include <memory>
#include <string>

#include "common/status.h"

namespace tapmap::mapserver {

class TempMetaDir {
 public:
  static Result<std::unique_ptr<TempMetaDir>> Make() {
    const char* tmp = ::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/mapserver-meta.XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) return Status::FromErrno("create a directory like " + pattern, errno);
    return std::unique_ptr<TempMetaDir>(new TempMetaDir(pattern));
  }
  ~TempMetaDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempMetaDir(const TempMetaDir&) = delete;
  TempMetaDir& operator=(const TempMetaDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  explicit TempMetaDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace tapmap::mapserver
