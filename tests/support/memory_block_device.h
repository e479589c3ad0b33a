// MemoryBlockDevice: a RAM-backed BlockDevice for unit tests of the front ends (NBD,
// blkif) in isolation from the engine. It honours the BlockDevice contract (bounds
// checks, completion posted to the io_context, resize listener) and counts calls so a
// test can assert what reached the device. Integration tests use the real engine.
#pragma once

#include <boost/asio/io_context.hpp>
#include <mutex>
#include <vector>

#include "tapdisk-map/engine/block_device.h"

namespace tapmap::testing {

class MemoryBlockDevice : public engine::BlockDevice {
 public:
  // `io` must outlive this device.
  MemoryBlockDevice(boost::asio::io_context& io, std::string name, uint64_t size_bytes,
                    bool read_only = false, uint32_t block_size = 65536);

  const std::string& name() const override { return name_; }
  uint64_t size_bytes() const override;
  uint32_t block_size() const override { return block_size_; }
  bool read_only() const override { return read_only_; }

  void Read(uint64_t offset, std::span<uint8_t> buffer, engine::IoDone done) override;
  void Write(uint64_t offset, std::span<const uint8_t> data, bool fua, engine::IoDone done) override;
  void Flush(engine::IoDone done) override;
  void Discard(uint64_t offset, uint64_t length, engine::IoDone done) override;
  void WriteZeroes(uint64_t offset, uint64_t length, engine::IoDone done) override;
  void SetResizeListener(std::function<void(uint64_t)> listener) override;

  // Test controls.
  void Resize(uint64_t new_size);  // notifies the listener (posted)
  std::vector<uint8_t> Snapshot() const;
  struct Counters {
    uint64_t reads = 0, writes = 0, flushes = 0, discards = 0, write_zeroes = 0, fua_writes = 0;
    uint64_t bytes_read = 0, bytes_written = 0;
  };
  Counters counters() const;
  // When set, every operation fails with this status (to test error propagation).
  void FailWith(Status status);

 private:
  Status Check(uint64_t offset, uint64_t length, bool is_write) const;  // requires mu_
  void Complete(engine::IoDone done, Status status);

  boost::asio::io_context& io_;
  const std::string name_;
  const bool read_only_;
  const uint32_t block_size_;
  mutable std::mutex mu_;
  std::vector<uint8_t> data_;
  Counters counters_;
  Status fail_with_;
  std::function<void(uint64_t)> resize_listener_;
};

}  // namespace tapmap::testing
