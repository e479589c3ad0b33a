#include "tapdisk-map/pool/pool_io.h"

#include "tapdisk-map/pool/pool_io_impl.h"

namespace tapmap::pool {

PoolIoCounters PoolIo::counters() const {
  PoolIoCounters c;
  c.read_ops = read_ops_.load(std::memory_order_relaxed);
  c.write_ops = write_ops_.load(std::memory_order_relaxed);
  c.sync_ops = sync_ops_.load(std::memory_order_relaxed);
  c.bytes_read = bytes_read_.load(std::memory_order_relaxed);
  c.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  return c;
}

Status PoolIo::CheckAligned(uint64_t offset, const void* data, size_t length) {
  if (offset % kDirectIoAlignment != 0 || length % kDirectIoAlignment != 0 ||
      reinterpret_cast<uintptr_t>(data) % kDirectIoAlignment != 0 || length == 0) {
    return Status::InvalidArgument("pool I/O not aligned to " + std::to_string(kDirectIoAlignment) +
                                   ": offset " + std::to_string(offset) + " length " +
                                   std::to_string(length));
  }
  return Status::Ok();
}

Result<std::unique_ptr<PoolIo>> CreatePoolIo(boost::asio::io_context& io, PoolFile file,
                                            PoolIoKind kind, const Logger& log,
                                            unsigned queue_depth, unsigned threads) {
  if (kind == PoolIoKind::kThreads) return internal::CreateThreadPoolIo(io, std::move(file), threads);
  // io_uring setup failing leaves `file` untouched, so the fallback can still use it.
  auto uring = internal::CreateUringPoolIo(io, file, queue_depth);
  if (uring.ok() || kind == PoolIoKind::kUring) return uring;
  log.Warnf("io_uring unavailable (%s); pool I/O falls back to %u threads",
            uring.status().ToString().c_str(), threads);
  return internal::CreateThreadPoolIo(io, std::move(file), threads);
}

}  // namespace tapmap::pool
