// BlockDevice: what a front end (the NBD export, a blkif ring) sees of an open volume.
// It is the one interface between the front ends and the engine (mapping client, data
// cache, pool I/O); both front ends use the same engine through it.
//
// Threading: every method is thread-safe. Completion callbacks are never invoked
// inline from the call that started the operation; they are posted to the engine's
// boost::asio::io_context and run on one of its threads.
//
// Units and validation: offsets and lengths are bytes, multiples of 512, and must lie
// within size_bytes(). Front ends validate untrusted input first; the engine checks
// again and fails the operation with invalid-argument rather than trusting them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "tapdisk-map/pool/aligned_buffer.h"

namespace tapmap::engine {

// Called exactly once with the outcome of an operation.
using IoDone = std::function<void(Status)>;

// One run of BlockDevice::Allocation's answer: `length` bytes, all holes (never
// written, discarded or zeroed whole: they read as zeros) or not.
struct AllocationRun {
  uint64_t length = 0;
  bool hole = false;
};
using AllocationDone = std::function<void(Result<std::vector<AllocationRun>>)>;

// One run of BlockDevice::ChangedSince's answer: `length` bytes, changed since the
// snapshot or not.
struct ChangeRun {
  uint64_t length = 0;
  bool changed = false;
};
using ChangesDone = std::function<void(Result<std::vector<ChangeRun>>)>;

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;

  virtual const std::string& name() const = 0;
  // Current size; may grow or shrink while open (online resize): ask each time.
  virtual uint64_t size_bytes() const = 0;
  // The pool's block size: I/O aligned to it avoids read-modify-write.
  virtual uint32_t block_size() const = 0;
  virtual bool read_only() const = 0;
  // A writable device whose volume another host still holds rw: reads go, writes wait
  // (live migration's destination; mapserver/doc/leases.md "Standby").
  virtual bool standby() const { return false; }

  // Reads [offset, offset + buffer.size()) into `buffer`, which must stay valid until
  // `done` runs. Holes read as zeros.
  virtual void Read(uint64_t offset, std::span<uint8_t> buffer, IoDone done) = 0;

  // Writes `data` (valid until `done` runs) at `offset`. Completion means the data
  // will be seen by later reads on this host and survives the loss of the mapserver
  // connection, but — like a disk with a volatile write cache — is durable across a
  // host crash only after a later Flush completes. `fua` (force unit access) makes
  // this write itself durable before `done`.
  virtual void Write(uint64_t offset, std::span<const uint8_t> data, bool fua, IoDone done) = 0;

  // Write of the first `length` bytes of `payload`, a buffer the caller hands over:
  // the device may keep it (or slices of it) after `done` instead of copying — whole
  // pool blocks of a 4 KiB-aligned write are then written to the pool, pinned until
  // commit and cached straight from the caller's buffer. The caller must not modify
  // `payload` after the call. The default copies nothing either: it calls Write and
  // keeps `payload` alive until `done`.
  virtual void WriteShared(uint64_t offset, std::shared_ptr<pool::AlignedBuffer> payload, size_t length, bool fua,
                           IoDone done) {
    std::span<const uint8_t> data(payload->data(), length);
    Write(offset, data, fua, [payload = std::move(payload), done = std::move(done)](Status s) { done(std::move(s)); });
  }

  // Completes when every write completed before the call is durable: data on stable
  // pool storage and its maps committed at the mapserver.
  virtual void Flush(IoDone done) = 0;

  // The range may read back as zeros or old data afterwards; whole pool blocks inside
  // it are unmapped and their space returned.
  virtual void Discard(uint64_t offset, uint64_t length, IoDone done) = 0;

  // The range reads back as zeros afterwards; whole blocks become holes.
  virtual void WriteZeroes(uint64_t offset, uint64_t length, IoDone done) = 0;

  // Which parts of [offset, offset + length) are holes (NBD base:allocation): runs in
  // order from `offset`, each nonempty, adjacent runs differing, at most `max_runs` of
  // them (>= 1), covering a prefix of the range (the whole range unless max_runs cut
  // it short). A run reported as a hole reads as zeros; everything this host wrote
  // and acknowledged (committed or not) is reported as data. Answers "no hole" when in
  // doubt. The default answers at once (inline, unlike the other operations): the whole
  // range is data, which is always a correct answer.
  virtual void Allocation(uint64_t offset, uint64_t length, size_t max_runs, AllocationDone done) {
    (void)offset;
    (void)max_runs;
    done(std::vector<AllocationRun>{AllocationRun{length, false}});
  }

  // Which parts of [offset, offset + length) differ from volume `snapshot` (an earlier
  // snapshot of the same version set), in runs as Allocation's. A run reported as
  // unchanged reads as in `snapshot`; what this host wrote and has not committed is
  // changed. Answers "changed" when in doubt. The default answers at once (inline):
  // the whole range changed, which is always a correct answer.
  virtual void ChangedSince(const std::string& snapshot, uint64_t offset, uint64_t length, size_t max_runs,
                            ChangesDone done) {
    (void)snapshot;
    (void)offset;
    (void)max_runs;
    done(std::vector<ChangeRun>{ChangeRun{length, true}});
  }

  // `listener` is called (on an engine thread) with the new size after an online
  // resize. Replaces any previous listener; pass nullptr to remove it.
  virtual void SetResizeListener(std::function<void(uint64_t new_size)> listener) = 0;
};

// Opens volumes by name for front ends. Implemented by the engine.
class BlockDeviceOpener {
 public:
  virtual ~BlockDeviceOpener() = default;
  using OpenDone = std::function<void(Result<std::shared_ptr<BlockDevice>>)>;
  // Opens volume `name`, read-only or read-write. One host holds a volume's
  // read-write lease at a time cluster-wide (another host's rw open fails with busy);
  // front ends of the same host share the host's open volume. `done` is posted like
  // an IoDone.
  virtual void Open(const std::string& name, bool read_only, OpenDone done) = 0;

  // What Open(name, false) would serve — size, block size, whether the volume can only
  // be opened read-only — for a client that only asks (NBD_OPT_INFO).
  struct Description {
    uint64_t size_bytes = 0;
    uint32_t block_size = 0;
    bool read_only = false;
  };
  using DescribeDone = std::function<void(Result<Description>)>;
  // Describes volume `name` without taking its read-write lease and without leaving
  // anything open. `done` is posted like an IoDone; errors as for Open (not-found...).
  // The default opens the volume read-only and releases it at once; an opener that can
  // ask without opening (the engine) overrides it.
  virtual void Describe(const std::string& name, DescribeDone done) {
    Open(name, true, [done = std::move(done)](Result<std::shared_ptr<BlockDevice>> device) {
      if (!device.ok()) return done(device.status());
      done(Description{(*device)->size_bytes(), (*device)->block_size(), (*device)->read_only()});
    });
  }
};

}  // namespace tapmap::engine
