// Volume: one open volume of the engine — the BlockDevice the front ends use (through
// OpenVolume, FrontHandle), and the VolumeEvents sink of the mapping client.
//
// Read path: map (cached per volume, fetched on demand with read-ahead) -> for each
// pool block: this host's uncommitted copy (pinned), a hole (zeros), the data cache
// (shared blocks; owned blocks of a rw opener), or a direct pool read (owned blocks
// seen by a read-only opener, which must not be cached).
//
// Write path (see doc/durability.md): an `owned` block is written in place. A `shared`
// block or a hole is copied on write: prepareWrite reserves a new block, the old
// content (or zeros) merged with the new data is written there, and the write is
// acknowledged with the new block PINNED in memory until a commit installs it. A
// group commit runs in the background for pending blocks — on a flush, on memory
// pressure, or at the latest commit_interval after a write — : fdatasync the pool,
// then one commit RPC for every pending block. If the server lost the
// reservations (restart, reconnection), the pinned copies are written to fresh
// reservations and committed again. Flush waits for a commit cycle that started
// after it (so covers every write acknowledged before it).
//
// Threading: every public method is thread-safe; completions are posted to the
// io_context. Volumes are always owned by std::shared_ptr (asynchronous steps keep
// their volume alive).
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/logging.h"
#include "tapdisk-map/engine/block_device.h"
#include "tapdisk-map/engine/commit_scheduler.h"
#include "tapdisk-map/engine/data_cache.h"
#include "tapdisk-map/engine/host_lease.h"
#include "tapdisk-map/engine/map_cache.h"
#include "tapdisk-map/engine/map_fetcher.h"
#include "tapdisk-map/engine/mapping_client.h"
#include "tapdisk-map/engine/pending_blocks.h"
#include "tapdisk-map/engine/qos_limiter.h"
#include "tapdisk-map/engine/range_lock.h"
#include "tapdisk-map/engine/stats.h"
#include "tapdisk-map/engine/waiter_list.h"
#include "tapdisk-map/engine/write_plan.h"
#include "tapdisk-map/pool/pool_io.h"

namespace tapmap::engine {

// What every volume of one engine shares.
//
// Ownership: the data cache and the counters are shared, so a volume outliving its
// engine (in a handler dropped at shutdown) never touches freed memory. The io_context
// and the pool are not owned: the io_context outlives everything built on it, and the
// pool's I/O threads and io_uring must be torn down by the engine before the
// io_context goes (shared ownership would let the last volume do it later, from a
// dropped handler); the engine stops the RPC thread, then the pool, so no volume
// issues pool I/O after that.
struct VolumeContext {
  boost::asio::io_context* io = nullptr;  // not owned: outlives the engine
  pool::PoolIo* pool = nullptr;           // not owned: the engine's, see above
  std::shared_ptr<DataCache> cache;
  // Shared so that a volume outliving its engine (in a handler dropped at shutdown)
  // never touches freed counters.
  std::shared_ptr<IoCounters> host_counters;
  std::shared_ptr<std::atomic<uint64_t>> pinned_bytes;  // host-wide total of pinned copies
  // This host's lease at the mapserver (null: never fenced, e.g. in unit tests).
  std::shared_ptr<HostLease> lease;
  uint32_t pool_id = 0;
  uint32_t block_size = 0;
  uint64_t pool_data_start = 0;  // physical offsets the server may hand out:
  uint64_t pool_data_end = 0;    //   [pool_data_start, pool_data_end)
  uint64_t map_readahead_bytes = 64ull << 20;
  // Copy-on-write writes wait while the host's pinned copies would exceed this
  // (0 = no bound); they fail with unavailable after unavailable_timeout.
  uint64_t max_pinned_bytes = 0;
  // Longest a written block waits before its commit starts when nothing asks for one
  // sooner (a flush, or pinned data past half of max_pinned_bytes). 0 = at once.
  std::chrono::milliseconds commit_interval{200};
  std::chrono::milliseconds unavailable_timeout{60000};
  // Makes each volume's QoS clock (null: MakeSteadyQosClock on io; tests inject a fake).
  std::function<std::unique_ptr<QosClock>()> qos_clock;
  Logger log{"engine"};
};

class Volume final : public VolumeEvents, public std::enable_shared_from_this<Volume> {
 public:
  Volume(const VolumeContext& context, std::string name, bool read_only);
  ~Volume() override;

  // Called once, when the server has opened the volume.
  void Attach(std::shared_ptr<RemoteVolume> remote, uint64_t size_bytes);

  // BlockDevice operations (same contracts as block_device.h).
  // The io_context completions are posted to.
  boost::asio::io_context& io() const { return *ctx_.io; }
  const std::string& name() const { return name_; }
  uint64_t size_bytes() const { return size_bytes_.load(); }
  uint32_t block_size() const { return ctx_.block_size; }
  bool read_only() const { return read_only_; }
  void Read(uint64_t offset, std::span<uint8_t> buffer, IoDone done);
  void Write(uint64_t offset, std::span<const uint8_t> data, bool fua, IoDone done);
  // BlockDevice::WriteShared: whole blocks at 4 KiB-aligned places of `payload` are
  // written, pinned and cached as slices of it, without a copy.
  void WriteShared(uint64_t offset, std::shared_ptr<pool::AlignedBuffer> payload, size_t length, bool fua,
                   IoDone done);
  void Flush(IoDone done);
  void Discard(uint64_t offset, uint64_t length, IoDone done);
  void WriteZeroes(uint64_t offset, uint64_t length, IoDone done);
  // BlockDevice::Allocation, from the map (fetched as a read would) and this host's
  // pending blocks (volume_allocation.cc).
  void Allocation(uint64_t offset, uint64_t length, size_t max_runs, AllocationDone done);
  // BlockDevice::ChangedSince, from the mapserver's diff and this host's pending
  // blocks (volume_changes.cc).
  void ChangedSince(const std::string& snapshot, uint64_t offset, uint64_t length, size_t max_runs,
                    ChangesDone done);
  // Flatten's step (flattener.h): every block of [offset, offset+length) that the map
  // says is `shared` (mapped, and referenced by another volume or written under an
  // earlier lease) gets a private copy — its content is read (through the cache) and
  // written to a fresh reservation, exactly as a copy-on-write write that changes no
  // byte would, pinned until the next commit like any write. Runs under the range
  // lock, so a front end's write to the same blocks is ordered wholly before or after
  // it, never lost. Holes, owned blocks and this host's pending blocks are left alone.
  // `done` gets the number of blocks copied. Fails read-only on a read-only opener,
  // unavailable on a standby one (another host holds the rw lease), invalid-argument
  // for a range that is not block-aligned (its end may be the volume's end) or lies
  // beyond the end.
  using CopyUpDone = std::function<void(Result<uint64_t>)>;
  void CopyUp(uint64_t offset, uint64_t length, CopyUpDone done);
  // The opener at the server (for Volume.sharedRanges); null before Attach.
  const std::shared_ptr<RemoteVolume>& remote() const { return remote_; }
  // Resize listeners, one per front-end handle (`owner` identifies it); nullptr
  // removes that handle's listener.
  void SetResizeListener(const void* owner, std::function<void(uint64_t)> listener);

  // Commits what is pending, then closes the opener at the server. The volume stays
  // alive until done.
  void Close(IoDone done);

  IoStats stats() const;
  // This volume's I/O limits, shared by its front ends (FrontHandle admits every
  // request through it). Unlimited until the engine sets them.
  QosLimiter& qos() const { return *qos_; }
  // Blocks written but not yet committed.
  size_t pending_blocks() const;

  // VolumeEvents.
  void OnRecall(std::vector<ByteRange> ranges, RecallReason reason, std::function<void()> done) override;
  void OnRevoke(std::string reason) override;
  void OnSizeChanged(uint64_t size_bytes) override;
  void OnReopened(uint64_t size_bytes, bool kept) override;
  void SuspendLease() override;
  void OnPromoted() override;
  // Called once after Attach when the server made this rw open a standby.
  void SetStandby();
  bool standby() const { return standby_.load(); }

 private:
  // Where a block's new bytes go inside it and which part of the write they are.
  struct Segment {
    size_t in_block;
    size_t length;
    std::span<const uint8_t> src;
  };
  struct WriteOp;
  struct ReadOp;

  Status CheckIo(uint64_t offset, uint64_t length, bool is_write) const;
  // Whether requests may start now: the host lease is valid (not fenced) and this
  // opener's lease is not in doubt (SuspendLease). Cheap: checked on every request.
  bool Usable() const {
    return !suspended_.load(std::memory_order_acquire) && (ctx_.lease == nullptr || ctx_.lease->Valid());
  }
  // Calls go(Ok) once Usable(), or go(error) after unavailable_timeout or on revocation.
  void WaitUsable(std::chrono::steady_clock::time_point deadline, std::function<void(Status)> go);
  void ExpireSuspended();
  // Writes of a standby: go(Ok) once promoted, an error at the deadline or revocation.
  void WaitPromoted(std::function<void(Status)> go);
  void ExpireStandby();
  void ReadUsable(uint64_t offset, std::span<uint8_t> buffer, IoDone done);
  // Allocation once Usable(); `attempts` bounds re-mapping after recalls.
  void AllocationUsable(uint64_t offset, uint64_t length, size_t max_runs, int attempts, AllocationDone done);
  void Complete(IoDone done, Status status);
  void Count(std::atomic<uint64_t> IoCounters::*field, uint64_t n);
  BlockKey KeyOf(const Extent& block_extent) const;
  Status CheckPhysical(uint64_t physical, uint64_t length) const;
  bool Cacheable(const Extent& e) const;

  // Makes sure maps of [offset, offset+length) are cached, fetching what is missing.
  void EnsureMapped(uint64_t offset, uint64_t length, std::function<void(Status)> done);

  void ReadBlock(std::shared_ptr<ReadOp> op, uint64_t seg_start, uint64_t seg_len);
  void LoadBlock(uint64_t physical, DataCache::LoadDone loaded);
  void GetBlock(const Extent& block_extent, std::function<void(Result<BlockData>)> done);

  // Write and WriteShared (`payload` null for Write).
  void StartWrite(uint64_t offset, std::span<const uint8_t> data, std::shared_ptr<pool::AlignedBuffer> payload,
                  bool fua, IoDone done);
  void AdmitWrite(std::shared_ptr<WriteOp> op);
  void WriteLocked(std::shared_ptr<WriteOp> op);
  void PlanWrite(std::shared_ptr<WriteOp> op);
  void ExecuteWrite(std::shared_ptr<WriteOp> op);
  Segment SegmentOf(const WriteOp& op, const BlockWrite& w) const;
  // A whole new block: `base` (the old content, or null for zeros) with the segment
  // written over it.
  BlockData BuildBlock(const Segment& seg, const uint8_t* base) const;
  // The segment as a slice of the op's shared payload when it lies 4 KiB-aligned in
  // it (no copy); null otherwise.
  BlockData SliceOfPayload(const WriteOp& op, const Segment& seg) const;
  // Writes the built blocks `run` (consecutive, contiguous in the pool) as one I/O.
  void WriteRun(std::shared_ptr<WriteOp> op, std::vector<size_t> run);
  void WriteOneBlock(std::shared_ptr<WriteOp> op, size_t index);
  // Records a block write's outcome: pending map, cache, the op's join.
  void BlockStored(std::shared_ptr<WriteOp> op, size_t index, Status status);
  void BlockWritten(std::shared_ptr<WriteOp> op, Status status);
  // Keeps the cache coherent with a block just written at `target`: caches `content`,
  // or drops the key when content is a view of a larger buffer.
  void CacheWritten(const Extent& target, const BlockData& content);
  void FinishWrite(std::shared_ptr<WriteOp> op);

  // After a write: starts a commit cycle now if pinned data is past half its bound,
  // else makes sure one starts within commit_interval.
  void ScheduleCommit();
  void KickCommit();
  void RunCycle(uint64_t cycle, int attempt);
  void Reprepare(std::vector<uint64_t> blocks, std::function<void(Status)> done);
  void CycleDone(uint64_t cycle, const std::vector<Extent>& batch);
  void CycleFailed(uint64_t cycle, Status status);

  const VolumeContext ctx_;
  const std::string name_;
  const bool read_only_;
  Logger log_;
  std::atomic<uint64_t> size_bytes_{0};
  std::shared_ptr<RemoteVolume> remote_;
  std::shared_ptr<MapCache> map_;        // shared with fetcher_
  std::shared_ptr<MapFetcher> fetcher_;  // fills map_ on demand
  RangeLock locks_;
  IoCounters counters_;
  const std::shared_ptr<QosLimiter> qos_;
  boost::asio::steady_timer retry_timer_;
  boost::asio::steady_timer commit_timer_;  // guarded by mu_

  mutable std::mutex mu_;
  PendingBlocks pending_;  // blocks written, not yet committed (pinned)
  CommitScheduler commits_;  // when cycles run, which flushes they answer
  bool closing_ = false;
  Status revoked_;
  std::map<const void*, std::function<void(uint64_t)>> resize_listeners_;  // guarded by mu_
  // Requests waiting while the opener's lease is in doubt (SuspendLease .. OnReopened).
  std::atomic<bool> suspended_{false};
  WaiterList suspended_waiters_;  // guarded by mu_
  // A standby rw opener (live migration: another host holds the lease) reads like a
  // read-only one; its writes wait for OnPromoted.
  std::atomic<bool> standby_{false};
  std::atomic<bool> promoted_{false};  // OnPromoted ran (possibly before SetStandby)
  WaiterList standby_waiters_;  // guarded by mu_
};

// The open volume behind front-end handles: closes the Volume (committing what is
// pending) when the last FrontHandle using it is dropped.
class OpenVolume {
 public:
  explicit OpenVolume(std::shared_ptr<Volume> volume) : volume_(std::move(volume)) {}
  ~OpenVolume();
  OpenVolume(const OpenVolume&) = delete;
  OpenVolume& operator=(const OpenVolume&) = delete;
  const std::shared_ptr<Volume>& volume() const { return volume_; }

 private:
  std::shared_ptr<Volume> volume_;
};

// The BlockDevice handed to one front end. Several front ends of this host (the vbd
// of a PV disk and the NBD export an HVM guest's emulated disk boots from) share one
// OpenVolume, and so one mapping, one lease and one write path; each handle has its
// own mode (a read-only handle of a read-write volume refuses writes) and its own
// resize listener.
class FrontHandle final : public BlockDevice {
 public:
  FrontHandle(std::shared_ptr<OpenVolume> open, bool read_only)
      : open_(std::move(open)), volume_(open_->volume().get()), read_only_(read_only || volume_->read_only()) {}
  ~FrontHandle() override { volume_->SetResizeListener(this, nullptr); }

  const std::string& name() const override { return volume_->name(); }
  uint64_t size_bytes() const override { return volume_->size_bytes(); }
  uint32_t block_size() const override { return volume_->block_size(); }
  bool read_only() const override { return read_only_; }
  bool standby() const override { return !read_only_ && volume_->standby(); }
  // Reads, writes, discards and write-zeroes pass the volume's QoS limiter first (the
  // one place both front ends enter); flushes are never held.
  void Read(uint64_t offset, std::span<uint8_t> buffer, IoDone done) override;
  void Write(uint64_t offset, std::span<const uint8_t> data, bool fua, IoDone done) override;
  void WriteShared(uint64_t offset, std::shared_ptr<pool::AlignedBuffer> payload, size_t length, bool fua,
                   IoDone done) override;
  void Flush(IoDone done) override { volume_->Flush(std::move(done)); }
  void Discard(uint64_t offset, uint64_t length, IoDone done) override;
  void WriteZeroes(uint64_t offset, uint64_t length, IoDone done) override;
  // Metadata only: not held by the QoS limiter.
  void Allocation(uint64_t offset, uint64_t length, size_t max_runs, AllocationDone done) override {
    volume_->Allocation(offset, length, max_runs, std::move(done));
  }
  void ChangedSince(const std::string& snapshot, uint64_t offset, uint64_t length, size_t max_runs,
                    ChangesDone done) override {
    volume_->ChangedSince(snapshot, offset, length, max_runs, std::move(done));
  }
  void SetResizeListener(std::function<void(uint64_t)> listener) override {
    volume_->SetResizeListener(this, std::move(listener));
  }

  const std::shared_ptr<Volume>& volume() const { return open_->volume(); }
  const std::shared_ptr<OpenVolume>& open_volume() const { return open_; }

 private:
  // Refuses a write through a read-only handle (as the Volume does for its own mode).
  bool RefuseWrite(IoDone& done);

  std::shared_ptr<OpenVolume> open_;
  Volume* const volume_;  // owned through open_
  const bool read_only_;
};

}  // namespace tapmap::engine
