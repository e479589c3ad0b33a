// PoolIo: asynchronous reads, writes and data syncs on the pool. For a pool file or
// device: UringPoolIo (io_uring, the default) and ThreadPoolIo (blocking pread/pwrite
// on worker threads; the fallback where io_uring is unavailable, and the baseline the
// engine bench compares against). For a pool in RADOS: RadosPoolIo (rados_pool_io.h,
// librados aio).
//
// Contract common to all:
//  - Buffers, offsets and lengths must be multiples of kDirectIoAlignment
//    (aligned_buffer.h); a violation fails the operation with invalid-argument.
//  - The buffer must stay valid until `done` runs.
//  - `done` runs exactly once, on a thread running the io_context given at creation,
//    never inline from Read/Write/Sync.
//  - Short transfers are continued until complete; reading past the end of the pool
//    fails with io-error.
//  - Thread-safe: any thread may start operations.
//  - Destroying the PoolIo with operations in flight waits for the kernel to finish
//    them and drops their callbacks uncalled; owners drain I/O before destroying.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "common/logging.h"
#include "common/status.h"
#include "tapdisk-map/pool/aligned_buffer.h"
#include "tapdisk-map/pool/pool_file.h"

namespace tapmap::pool {

using PoolDone = std::function<void(Status)>;

// Totals since creation; read with counters().
struct PoolIoCounters {
  uint64_t read_ops = 0;
  uint64_t write_ops = 0;
  uint64_t sync_ops = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
};

class PoolIo {
 public:
  virtual ~PoolIo() = default;

  virtual void Read(uint64_t offset, std::span<uint8_t> buffer, PoolDone done) = 0;
  virtual void Write(uint64_t offset, std::span<const uint8_t> data, PoolDone done) = 0;
  // Writes `pieces` back to back starting at `offset` (each piece aligned), as one
  // operation where the implementation can (pwritev): a run of blocks that are
  // contiguous in the pool but not in memory costs one I/O, not one per block.
  // Counts as one write. The default issues one Write per piece and joins them.
  virtual void WriteV(uint64_t offset, std::vector<std::span<const uint8_t>> pieces, PoolDone done);
  // Makes every write completed before the call stable (fdatasync).
  virtual void Sync(PoolDone done) = 0;

  // "io_uring", "threads", "io_uring+threads" or "rados".
  virtual std::string_view kind() const = 0;
  // True if the pool was opened with O_DIRECT (false for RADOS: no page cache involved).
  virtual bool direct() const = 0;
  virtual PoolIoCounters counters() const;

  // Fencing (mapserver/pool_fencer.h): the identity under which this object's I/O
  // reaches the pool now — a RADOS pool's librados client address — or "" where the
  // pool cannot fence a host (a file or block device). RenewClient replaces that
  // identity by a fresh one (a new librados client; the old one may have been
  // blocklisted); a no-op where there is none.
  virtual std::string client_identity() const { return ""; }
  virtual Status RenewClient() { return Status::Ok(); }

 protected:
  // Validates alignment; returns invalid-argument naming the bad value.
  static Status CheckAligned(uint64_t offset, const void* data, size_t length);
  void CountRead(uint64_t bytes) { read_ops_++; bytes_read_ += bytes; }
  void CountWrite(uint64_t bytes) { write_ops_++; bytes_written_ += bytes; }
  void CountSync() { sync_ops_++; }

 private:
  std::atomic<uint64_t> read_ops_{0}, write_ops_{0}, sync_ops_{0}, bytes_read_{0}, bytes_written_{0};
};

// kAuto: io_uring (reads and syncs; writes too on a block device, to threads on a
// regular file); kUring / kThreads: that mechanism for everything.
enum class PoolIoKind { kAuto, kUring, kThreads };

// Creates a PoolIo on `file` (whose ownership it takes) completing on `io`, which must
// outlive the returned object. kAuto uses io_uring (falling back to threads with a
// warning); on a regular file it sends writes to the thread pool instead, because
// io_uring serialises O_DIRECT writes to one regular file that it must hand to its
// workers (allocating writes on ext4/xfs), which makes them slower than threads
// (see bench/engine). `queue_depth` bounds operations submitted to the kernel at once (more are
// queued); `threads` is the worker count of the thread implementation.
Result<std::unique_ptr<PoolIo>> CreatePoolIo(boost::asio::io_context& io, PoolFile file,
                                            PoolIoKind kind, const Logger& log,
                                            unsigned queue_depth = 128, unsigned threads = 8);

}  // namespace tapmap::pool
