#include "tests/support/memory_block_device.h"

#include <boost/asio/post.hpp>
#include <cstring>

#include "common/units.h"

namespace tapmap::testing {

MemoryBlockDevice::MemoryBlockDevice(boost::asio::io_context& io, std::string name,
                                     uint64_t size_bytes, bool read_only, uint32_t block_size)
    : io_(io), name_(std::move(name)), read_only_(read_only), block_size_(block_size),
      data_(size_bytes, 0) {}

uint64_t MemoryBlockDevice::size_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_.size();
}

Status MemoryBlockDevice::Check(uint64_t offset, uint64_t length, bool is_write) const {
  if (!fail_with_.ok()) return fail_with_;
  if (!IsAligned(offset, kSectorSize) || !IsAligned(length, kSectorSize)) {
    return Status::InvalidArgument("unaligned I/O at " + std::to_string(offset));
  }
  if (!RangeWithin(offset, length, data_.size())) {
    return Status::InvalidArgument("I/O beyond the end of " + name_);
  }
  if (is_write && read_only_) return Status::ReadOnly(name_ + " is read-only");
  return Status::Ok();
}

void MemoryBlockDevice::Complete(engine::IoDone done, Status status) {
  boost::asio::post(io_, [done = std::move(done), status = std::move(status)]() { done(status); });
}

void MemoryBlockDevice::Read(uint64_t offset, std::span<uint8_t> buffer, engine::IoDone done) {
  Status s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = Check(offset, buffer.size(), false);
    if (s.ok()) {
      std::memcpy(buffer.data(), data_.data() + offset, buffer.size());
      counters_.reads++;
      counters_.bytes_read += buffer.size();
    }
  }
  Complete(std::move(done), std::move(s));
}

void MemoryBlockDevice::Write(uint64_t offset, std::span<const uint8_t> data, bool fua,
                              engine::IoDone done) {
  Status s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = Check(offset, data.size(), true);
    if (s.ok()) {
      std::memcpy(data_.data() + offset, data.data(), data.size());
      counters_.writes++;
      counters_.bytes_written += data.size();
      if (fua) counters_.fua_writes++;
    }
  }
  Complete(std::move(done), std::move(s));
}

void MemoryBlockDevice::Flush(engine::IoDone done) {
  Status s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = fail_with_;
    if (s.ok()) counters_.flushes++;
  }
  Complete(std::move(done), std::move(s));
}

void MemoryBlockDevice::Discard(uint64_t offset, uint64_t length, engine::IoDone done) {
  Status s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = Check(offset, length, true);
    if (s.ok()) {
      std::memset(data_.data() + offset, 0, length);
      counters_.discards++;
    }
  }
  Complete(std::move(done), std::move(s));
}

void MemoryBlockDevice::WriteZeroes(uint64_t offset, uint64_t length, engine::IoDone done) {
  Status s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = Check(offset, length, true);
    if (s.ok()) {
      std::memset(data_.data() + offset, 0, length);
      counters_.write_zeroes++;
    }
  }
  Complete(std::move(done), std::move(s));
}

void MemoryBlockDevice::SetResizeListener(std::function<void(uint64_t)> listener) {
  std::lock_guard<std::mutex> lock(mu_);
  resize_listener_ = std::move(listener);
}

void MemoryBlockDevice::Resize(uint64_t new_size) {
  std::function<void(uint64_t)> listener;
  {
    std::lock_guard<std::mutex> lock(mu_);
    data_.resize(new_size, 0);
    listener = resize_listener_;
  }
  if (listener) boost::asio::post(io_, [listener, new_size]() { listener(new_size); });
}

std::vector<uint8_t> MemoryBlockDevice::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_;
}

MemoryBlockDevice::Counters MemoryBlockDevice::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

void MemoryBlockDevice::FailWith(Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_with_ = std::move(status);
}

}  // namespace tapmap::testing
