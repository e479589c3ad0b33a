#include "tapdisk-map/engine/flattener.h"

#include <algorithm>
#include <boost/asio/post.hpp>

#include "tapdisk-map/engine/volume.h"

namespace tapmap::engine {

const char* FlattenStateName(FlattenState state) {
  switch (state) {
    case FlattenState::kSurveying: return "surveying";
    case FlattenState::kCopying: return "copying";
    case FlattenState::kCommitting: return "committing";
    case FlattenState::kDone: return "done";
    case FlattenState::kFailed: return "failed";
    case FlattenState::kCancelled: return "cancelled";
  }
  return "unknown";
}

nlohmann::json FlattenStatusToJson(const FlattenStatus& s) {
  nlohmann::json j = {{"volume", s.volume},
                      {"state", FlattenStateName(s.state)},
                      {"pass", s.pass},
                      {"shared_bytes", s.shared_bytes},
                      {"done_bytes", s.done_bytes},
                      {"copied_bytes", s.copied_bytes},
                      {"rate", s.rate_bytes_per_second},
                      {"elapsed_seconds", s.elapsed_seconds}};
  if (!s.error.ok()) {
    j["error"] = {{"code", std::string(StatusCodeName(s.error.code()))}, {"message", s.error.message()}};
  }
  return j;
}

std::shared_ptr<Flattener> Flattener::Start(std::shared_ptr<BlockDevice> handle, std::shared_ptr<Volume> volume,
                                            Options options, const Logger& log,
                                            std::function<void(const FlattenStatus&)> finished) {
  std::shared_ptr<Flattener> job(
      new Flattener(std::move(handle), std::move(volume), options, log, std::move(finished)));
  boost::asio::post(job->volume_->io(), [job]() { job->BeginPass(); });
  return job;
}

Flattener::Flattener(std::shared_ptr<BlockDevice> handle, std::shared_ptr<Volume> volume, Options options,
                     const Logger& log, std::function<void(const FlattenStatus&)> finished)
    : handle_(std::move(handle)),
      volume_(std::move(volume)),
      options_(options),
      log_(log.WithContext("flatten", volume_->name())),
      finished_(std::move(finished)),
      pace_timer_(volume_->io()),
      start_(std::chrono::steady_clock::now()) {
  status_.volume = volume_->name();
  status_.rate_bytes_per_second = options_.rate_bytes_per_second;
}

FlattenStatus Flattener::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  FlattenStatus s = status_;
  if (!s.finished()) {
    s.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  return s;
}

void Flattener::Cancel() { cancel_.store(true); }

bool Flattener::Failed(const Status& s, const char* what) {
  if (s.ok()) return false;
  Finish(FlattenState::kFailed, s.WithContext(std::string(what) + " of " + volume_->name()));
  return true;
}

void Flattener::BeginPass() {
  if (volume_->remote() == nullptr) {
    Failed(Status::Internal("volume is not attached to its opener"), "flatten");
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_.state = FlattenState::kSurveying;
    status_.shared_bytes = 0;
    status_.done_bytes = 0;
  }
  survey_bytes_ = 0;
  Survey(0);
}

void Flattener::Survey(uint64_t offset) {
  auto self = shared_from_this();
  volume_->remote()->SharedRanges(offset, options_.ranges_per_page, [self](Result<SharedPage> page) {
    if (self->Failed(page.status(), "sharedRanges")) return;
    for (const ByteRange& r : page->ranges) self->survey_bytes_ += r.length;
    if (page->next_offset != 0) return self->Survey(page->next_offset);
    int pass = 0;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->status_.shared_bytes = self->survey_bytes_;
      pass = self->status_.pass;
    }
    if (self->survey_bytes_ == 0) return self->Finish(FlattenState::kDone, Status::Ok());
    if (pass > self->options_.max_passes) {
      return self->Finish(FlattenState::kFailed,
                          Status::Aborted(std::to_string(self->survey_bytes_) + " bytes of " + self->volume_->name() +
                                          " are still shared after " + std::to_string(pass - 1) +
                                          " passes (a snapshot or clone taken meanwhile shares them again); "
                                          "run flatten again"));
    }
    if (self->cancel_.load()) return self->Finish(FlattenState::kCancelled, Status::Ok());
    self->log_.Infof("pass %d: %llu bytes shared", pass, static_cast<unsigned long long>(self->survey_bytes_));
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->status_.state = FlattenState::kCopying;
    }
    self->pass_start_ = std::chrono::steady_clock::now();
    self->pass_copied_ = 0;
    self->CopyPage(0);
  });
}

void Flattener::CopyPage(uint64_t offset) {
  auto self = shared_from_this();
  volume_->remote()->SharedRanges(offset, options_.ranges_per_page, [self](Result<SharedPage> page) {
    if (self->Failed(page.status(), "sharedRanges")) return;
    if (page->ranges.empty()) {
      if (page->next_offset != 0) return self->CopyPage(page->next_offset);
      return self->Commit();
    }
    const uint64_t first = page->ranges.front().offset;
    self->CopyRanges(std::move(page->ranges), 0, first, page->next_offset);
  });
}

void Flattener::CopyRanges(std::vector<ByteRange> ranges, size_t index, uint64_t at, uint64_t next_page) {
  if (cancel_.load()) return Commit();
  if (index == ranges.size()) {
    if (next_page != 0) return CopyPage(next_page);
    return Commit();
  }
  const ByteRange range = ranges[index];
  const uint64_t size = volume_->size_bytes();
  const uint64_t end = std::min(range.end(), size);  // a shrink meanwhile cut it
  if (at >= end) {
    const uint64_t next_at = index + 1 < ranges.size() ? ranges[index + 1].offset : 0;
    return CopyRanges(std::move(ranges), index + 1, next_at, next_page);
  }
  // Pace: the bytes gone through this pass never run ahead of the rate.
  if (options_.rate_bytes_per_second != 0) {
    auto due = pass_start_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double>(static_cast<double>(pass_copied_) /
                                                               static_cast<double>(options_.rate_bytes_per_second)));
    if (due > std::chrono::steady_clock::now()) {
      auto self = shared_from_this();
      pace_timer_.expires_at(due);
      pace_timer_.async_wait([self, ranges = std::move(ranges), index, at, next_page](
                                 const boost::system::error_code&) mutable {
        self->CopyRanges(std::move(ranges), index, at, next_page);
      });
      return;
    }
  }
  const uint64_t bs = volume_->block_size();
  const uint64_t chunk = std::max<uint64_t>(bs, (options_.chunk_bytes + bs - 1) / bs * bs);
  const uint64_t length = std::min(chunk, end - at);
  auto self = shared_from_this();
  volume_->CopyUp(at, length, [self, ranges = std::move(ranges), index, at, length, next_page](
                                  Result<uint64_t> copied) mutable {
    if (self->Failed(copied.status(), "copy-up")) return;
    self->pass_copied_ += length;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->status_.done_bytes = std::min(self->status_.shared_bytes, self->status_.done_bytes + length);
      self->status_.copied_bytes += *copied * self->volume_->block_size();
    }
    self->CopyRanges(std::move(ranges), index, at + length, next_page);
  });
}

void Flattener::Commit() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_.state = FlattenState::kCommitting;
  }
  auto self = shared_from_this();
  volume_->Flush([self](Status s) {
    if (self->Failed(s, "commit")) return;
    if (self->cancel_.load()) return self->Finish(FlattenState::kCancelled, Status::Ok());
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->status_.pass++;
    }
    self->BeginPass();
  });
}

void Flattener::Finish(FlattenState state, Status error) {
  FlattenStatus final_status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_.state = state;
    status_.error = std::move(error);
    status_.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (state == FlattenState::kDone) status_.done_bytes = status_.shared_bytes;
    final_status = status_;
  }
  if (state == FlattenState::kFailed) {
    log_.Warnf("failed after copying %llu bytes: %s", static_cast<unsigned long long>(final_status.copied_bytes),
               final_status.error.ToString().c_str());
  } else {
    log_.Infof("%s: %llu bytes copied in %.1f s", FlattenStateName(state),
               static_cast<unsigned long long>(final_status.copied_bytes), final_status.elapsed_seconds);
  }
  auto finished = std::move(finished_);
  finished_ = nullptr;
  handle_.reset();  // the volume may close now (its last front end gone)
  volume_.reset();
  if (finished) finished(final_status);
}

}  // namespace tapmap::engine
