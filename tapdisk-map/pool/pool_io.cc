#include "tapdisk-map/pool/pool_io.h"

#include <mutex>
#include <optional>

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

void PoolIo::WriteV(uint64_t offset, std::vector<std::span<const uint8_t>> pieces, PoolDone done) {
  if (pieces.empty()) return Write(offset, {}, std::move(done));  // fails: zero length
  struct Join {
    size_t left;
    Status status;
    PoolDone done;
    std::mutex mu;
  };
  auto join = std::make_shared<Join>();
  join->left = pieces.size();
  join->done = std::move(done);
  uint64_t at = offset;
  for (std::span<const uint8_t> piece : pieces) {
    Write(at, piece, [join](Status s) {
      PoolDone finished;
      Status result;
      {
        std::lock_guard<std::mutex> lock(join->mu);
        if (!s.ok() && join->status.ok()) join->status = std::move(s);
        if (--join->left != 0) return;
        finished = std::move(join->done);
        result = join->status;
      }
      finished(std::move(result));
    });
    at += piece.size();
  }
}

namespace {

// Reads and syncs on io_uring, writes on threads (kAuto on a regular file).
class HybridPoolIo final : public PoolIo {
 public:
  HybridPoolIo(std::unique_ptr<PoolIo> reads, std::unique_ptr<PoolIo> writes)
      : reads_(std::move(reads)), writes_(std::move(writes)) {}
  void Read(uint64_t offset, std::span<uint8_t> buffer, PoolDone done) override {
    reads_->Read(offset, buffer, std::move(done));
  }
  void Write(uint64_t offset, std::span<const uint8_t> data, PoolDone done) override {
    writes_->Write(offset, data, std::move(done));
  }
  void WriteV(uint64_t offset, std::vector<std::span<const uint8_t>> pieces, PoolDone done) override {
    writes_->WriteV(offset, std::move(pieces), std::move(done));
  }
  // Writes complete only once pwrite returned, so a sync through the other
  // descriptor of the same file covers them.
  void Sync(PoolDone done) override { reads_->Sync(std::move(done)); }
  std::string_view kind() const override { return "io_uring+threads"; }
  bool direct() const override { return reads_->direct(); }
  PoolIoCounters counters() const override {
    PoolIoCounters r = reads_->counters(), w = writes_->counters();
    r.write_ops += w.write_ops;
    r.bytes_written += w.bytes_written;
    r.sync_ops += w.sync_ops;
    return r;
  }

 private:
  std::unique_ptr<PoolIo> reads_;
  std::unique_ptr<PoolIo> writes_;
};

}  // namespace

Result<std::unique_ptr<PoolIo>> CreatePoolIo(boost::asio::io_context& io, PoolFile file,
                                            PoolIoKind kind, const Logger& log,
                                            unsigned queue_depth, unsigned threads) {
  if (kind == PoolIoKind::kThreads) return internal::CreateThreadPoolIo(io, std::move(file), threads);
  // io_uring setup failing leaves `file` untouched, so the fallback can still use it.
  std::optional<PoolFile> write_file;
  if (kind == PoolIoKind::kAuto && file.regular_file()) {
    auto dup = file.Dup();
    if (!dup.ok()) return dup.status();
    write_file.emplace(std::move(*dup));
  }
  auto uring = internal::CreateUringPoolIo(io, file, queue_depth);
  if (uring.ok() && write_file) {
    return std::unique_ptr<PoolIo>(new HybridPoolIo(
        std::move(*uring), internal::CreateThreadPoolIo(io, std::move(*write_file), threads)));
  }
  if (uring.ok() || kind == PoolIoKind::kUring) return uring;
  log.Warnf("io_uring unavailable (%s); pool I/O falls back to %u threads",
            uring.status().ToString().c_str(), threads);
  return internal::CreateThreadPoolIo(io, std::move(file), threads);
}

}  // namespace tapmap::pool
