// RadosCluster: one connection to a Ceph cluster and an I/O context on one of its
// pools (librados::Rados + librados::IoCtx), with explicit client timeouts, so that a
// missing or stopped cluster fails operations after RadosOptions::timeout_seconds
// instead of blocking forever (librados's defaults are 300 s to connect and no bound
// at all on operations).
//
// RAII: the destructor closes the I/O context and shuts the client down (which joins
// librados's threads; callers finish or wait for their asynchronous operations first).
// Thread-safe as librados is: any thread may use ioctx() concurrently.
#pragma once

#include <rados/librados.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "rados/rados_options.h"

namespace tapmap::rados {

// A librados return code (negative errno) as a Status naming `context`: ETIMEDOUT
// and the connection errors are kUnavailable, ENOENT kNotFound, EEXIST kAlreadyExists,
// ENOSPC/EDQUOT kNoSpace, anything else kIoError.
Status RadosStatus(int r, std::string_view context);

class RadosCluster {
 public:
  // Connects and opens `options.pool`. kUnavailable if the cluster cannot be reached
  // within the timeout, kNotFound if the pool does not exist, kInvalidArgument for a
  // bad option (an unreadable conf file, a zero timeout).
  static Result<std::unique_ptr<RadosCluster>> Connect(const RadosOptions& options);
  ~RadosCluster();
  RadosCluster(const RadosCluster&) = delete;
  RadosCluster& operator=(const RadosCluster&) = delete;

  librados::IoCtx& ioctx() { return ioctx_; }
  // The client itself (blocklisting, OSD map waits, its instance id).
  librados::Rados& rados() { return rados_; }
  const RadosOptions& options() const { return options_; }

  // Synchronous whole-object helpers (superblocks, small metadata):
  // Reads up to `max_bytes` from the start of `oid`; kNotFound if it does not exist.
  Result<std::vector<uint8_t>> ReadObject(const std::string& oid, size_t max_bytes);
  // Replaces `oid`'s content with `data`. With `exclusive`, fails with kAlreadyExists
  // if the object exists (an atomic create), leaving it untouched.
  Status WriteObject(const std::string& oid, const std::vector<uint8_t>& data, bool exclusive);

 private:
  explicit RadosCluster(RadosOptions options) : options_(std::move(options)) {}

  RadosOptions options_;
  librados::Rados rados_;
  bool connected_ = false;
  librados::IoCtx ioctx_;
};

}  // namespace tapmap::rados
