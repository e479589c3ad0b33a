// GatedDevice: a BlockDevice decorator for the budget tests. While the gate is closed,
// reads and writes are held (not started), so requests stay in flight as long as the
// test wants; it also measures what the front end has handed it: the data bytes of
// reads and writes given to it and not yet completed (each sits in a private buffer
// of the front end), now and at most.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "tapdisk-map/engine/block_device.h"

namespace tapmap::testing {

class GatedDevice : public engine::BlockDevice {
 public:
  // Starts open.
  explicit GatedDevice(std::shared_ptr<engine::BlockDevice> inner) : inner_(std::move(inner)) {}

  const std::string& name() const override { return inner_->name(); }
  uint64_t size_bytes() const override { return inner_->size_bytes(); }
  uint32_t block_size() const override { return inner_->block_size(); }
  bool read_only() const override { return inner_->read_only(); }

  void Read(uint64_t offset, std::span<uint8_t> buffer, engine::IoDone done) override {
    Run(buffer.size(), [inner = inner_, offset, buffer](engine::IoDone d) { inner->Read(offset, buffer, std::move(d)); },
        std::move(done));
  }
  void Write(uint64_t offset, std::span<const uint8_t> data, bool fua, engine::IoDone done) override {
    Run(data.size(),
        [inner = inner_, offset, data, fua](engine::IoDone d) { inner->Write(offset, data, fua, std::move(d)); },
        std::move(done));
  }
  void Flush(engine::IoDone done) override { inner_->Flush(std::move(done)); }
  void Discard(uint64_t offset, uint64_t length, engine::IoDone done) override {
    inner_->Discard(offset, length, std::move(done));
  }
  void WriteZeroes(uint64_t offset, uint64_t length, engine::IoDone done) override {
    inner_->WriteZeroes(offset, length, std::move(done));
  }
  void SetResizeListener(std::function<void(uint64_t)> listener) override {
    inner_->SetResizeListener(std::move(listener));
  }

  // Holds reads and writes from now on.
  void Close() {
    std::lock_guard lock(mu_);
    open_ = false;
  }
  // Starts the held operations and lets later ones through.
  void Open() {
    std::vector<std::function<void()>> held;
    {
      std::lock_guard lock(mu_);
      open_ = true;
      held.swap(held_);
    }
    for (auto& start : held) start();
  }
  // Data bytes handed over and not completed: now, and the most at any time.
  uint64_t bytes() const {
    std::lock_guard lock(mu_);
    return bytes_;
  }
  uint64_t peak_bytes() const {
    std::lock_guard lock(mu_);
    return peak_;
  }

 private:
  void Run(uint64_t length, std::function<void(engine::IoDone)> op, engine::IoDone done) {
    auto finish = [this, length, done = std::move(done)](Status s) {
      {
        std::lock_guard lock(mu_);
        bytes_ -= length;
      }
      done(std::move(s));
    };
    std::function<void()> start = [op = std::move(op), finish = std::move(finish)]() { op(finish); };
    {
      std::lock_guard lock(mu_);
      bytes_ += length;
      peak_ = std::max(peak_, bytes_);
      if (!open_) {
        held_.push_back(std::move(start));
        return;
      }
    }
    start();
  }

  const std::shared_ptr<engine::BlockDevice> inner_;
  mutable std::mutex mu_;
  bool open_ = true;
  std::vector<std::function<void()>> held_;
  uint64_t bytes_ = 0, peak_ = 0;
};

}  // namespace tapmap::testing
