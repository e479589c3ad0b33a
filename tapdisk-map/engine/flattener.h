// Flattener: detaches an open read-write volume from everything it shares blocks with
// (`tapmap volume flatten`, rbd's flatten): every committed block the volume shares
// with another volume — its golden image, the snapshot it was cloned from, a sibling —
// gets a private copy, online, while front ends keep using the volume.
//
//   auto job = Flattener::Start(handle, volume, {.rate_bytes_per_second = 64 << 20}, log);
//   job->status();   // at any time, from any thread
//   job->Cancel();   // stops after the current chunk; what was copied is committed
//
// How (one pass):
//   1. survey: page through Volume.sharedRanges (mapserver, committed state, metadata
//      only) to learn how many bytes are shared (the progress bar's 100 %);
//   2. copy: page through it again and Volume::CopyUp each range in chunks of
//      chunk_bytes, paced so that the bytes copied never run ahead of
//      rate_bytes_per_second since the pass began (a burst of one chunk at most);
//      CopyUp takes the range lock, so a guest write is never lost or overtaken;
//   3. commit: Volume::Flush installs every copy (one durable commit at the server).
// Then the survey is repeated: a flattened volume has no shared range left, and the job
// is done. A snapshot or clone of the volume taken meanwhile shares blocks again; after
// max_passes passes the job fails saying how much is still shared (running flatten
// again copies it). A cancelled or failed job leaves a consistent volume: copies
// written are committed (or, on a failure to commit, left to the volume's next commit);
// running flatten again continues with what is still shared.
//
// "Shares nothing" is what Volume.sharedRanges says: no committed block of the volume
// nor any map node above one is referenced from another volume. So flattening a clone
// that has snapshots of its own also copies the blocks it shares with them.
//
// Threading: Start, status and Cancel are thread-safe; the work runs on the volume's
// io_context.
#pragma once

#include <atomic>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/logging.h"
#include "common/status.h"
#include "tapdisk-map/engine/block_device.h"
#include "tapdisk-map/engine/mapping_client.h"

namespace tapmap::engine {

class Volume;

enum class FlattenState { kSurveying, kCopying, kCommitting, kDone, kFailed, kCancelled };

// "surveying", "copying", "committing", "done", "failed", "cancelled".
const char* FlattenStateName(FlattenState state);

struct FlattenStatus {
  std::string volume;
  FlattenState state = FlattenState::kSurveying;
  int pass = 1;                 // 1.. (a pass = survey, copy, commit)
  uint64_t shared_bytes = 0;    // what this pass's survey found shared
  uint64_t done_bytes = 0;      // of shared_bytes, gone through in this pass
  uint64_t copied_bytes = 0;    // blocks copied by every pass so far (bytes)
  uint64_t rate_bytes_per_second = 0;  // 0 = unbounded
  double elapsed_seconds = 0;
  Status error;                 // kFailed: why
  bool finished() const {
    return state == FlattenState::kDone || state == FlattenState::kFailed || state == FlattenState::kCancelled;
  }
};

// The control protocol's FlattenStatus (tapdisk-map/control/PROTOCOL.md).
nlohmann::json FlattenStatusToJson(const FlattenStatus& status);

class Flattener : public std::enable_shared_from_this<Flattener> {
 public:
  struct Options {
    uint64_t rate_bytes_per_second = 64ull << 20;  // copy rate bound; 0 = none
    uint64_t chunk_bytes = 1ull << 20;             // one CopyUp (rounded up to blocks)
    uint32_t ranges_per_page = 1024;               // sharedRanges page size
    int max_passes = 3;
  };

  // Starts flattening `volume`, a read-write, non-standby opener; `handle` (the front
  // end handle it was opened through) is held until the job ends, so the volume stays
  // open. `finished` (may be null) is called once, on the io_context, with the final
  // status.
  static std::shared_ptr<Flattener> Start(std::shared_ptr<BlockDevice> handle, std::shared_ptr<Volume> volume,
                                          Options options, const Logger& log,
                                          std::function<void(const FlattenStatus&)> finished = nullptr);

  FlattenStatus status() const;
  // Asks the job to stop after the chunk in progress or the pacing wait before the
  // next one (then it commits and ends cancelled). No effect on a finished job.
  void Cancel();

 private:
  Flattener(std::shared_ptr<BlockDevice> handle, std::shared_ptr<Volume> volume, Options options, const Logger& log,
            std::function<void(const FlattenStatus&)> finished);

  void BeginPass();
  void Survey(uint64_t offset);
  void CopyPage(uint64_t offset);
  void CopyRanges(std::vector<ByteRange> ranges, size_t index, uint64_t at, uint64_t next_page);
  void Commit();
  void Finish(FlattenState state, Status error);
  // Fails the job with `s` (with context) if it is an error; true if it was.
  bool Failed(const Status& s, const char* what);

  // Both released when the job ends: a finished job (kept for its status) must not keep
  // the volume alive, or the next open of it here would wait for it to close.
  std::shared_ptr<BlockDevice> handle_;
  std::shared_ptr<Volume> volume_;
  const Options options_;
  Logger log_;
  std::function<void(const FlattenStatus&)> finished_;
  boost::asio::steady_timer pace_timer_;
  const std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point pass_start_;
  uint64_t pass_copied_ = 0;     // bytes gone through this pass (paced against the rate)
  uint64_t survey_bytes_ = 0;    // being summed by Survey
  std::atomic<bool> cancel_{false};

  mutable std::mutex mu_;
  FlattenStatus status_;  // guarded by mu_
};

}  // namespace tapmap::engine
