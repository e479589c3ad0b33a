// MemoryVolumeOpener: a BlockDeviceOpener over named MemoryBlockDevices, for unit
// tests of front ends that open volumes by name (the blkif backend manager). Honours
// the opener contract: results are posted, unknown names fail with kNotFound, a write
// open of a volume created read-only fails with kReadOnly, and a second concurrent
// read-write open fails with kBusy (released when the device is dropped).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <map>
#include <memory>
#include <mutex>

#include "tests/support/memory_block_device.h"

namespace tapmap::testing {

class MemoryVolumeOpener : public engine::BlockDeviceOpener {
 public:
  explicit MemoryVolumeOpener(boost::asio::io_context& io) : io_(io) {}

  // Creates volume `name`; returns it for the test to inspect.
  std::shared_ptr<MemoryBlockDevice> Add(const std::string& name, uint64_t size_bytes, bool read_only = false) {
    auto d = std::make_shared<MemoryBlockDevice>(io_, name, size_bytes, read_only);
    std::lock_guard lock(mu_);
    volumes_[name] = d;
    return d;
  }

  void Open(const std::string& name, bool read_only, OpenDone done) override {
    Result<std::shared_ptr<engine::BlockDevice>> result = Status::NotFound("no volume " + name);
    {
      std::lock_guard lock(mu_);
      auto it = volumes_.find(name);
      if (it != volumes_.end()) {
        if (!read_only && it->second->read_only()) {
          result = Status::ReadOnly(name + " is read-only");
        } else if (!read_only && !writers_[name].expired()) {
          result = Status::Busy(name + " is open read-write elsewhere");
        } else {
          // A handle sharing the device; its lifetime marks the rw open.
          std::shared_ptr<engine::BlockDevice> handle(it->second, it->second.get());
          auto token = std::make_shared<int>(0);
          // (released when the last handle goes, not when the control block does: a
          // weak_ptr to the handle must not keep the volume busy)
          std::shared_ptr<engine::BlockDevice> tracked(handle.get(), [handle, token](engine::BlockDevice*) mutable {
            token.reset();
            handle.reset();
          });
          if (!read_only) writers_[name] = token;
          result = tracked;
          opens_++;
        }
      }
    }
    boost::asio::post(io_, [done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
  }

  // Number of successful opens so far.
  int opens() {
    std::lock_guard lock(mu_);
    return opens_;
  }
  // True while some read-write handle of `name` is alive.
  bool OpenForWrite(const std::string& name) {
    std::lock_guard lock(mu_);
    return !writers_[name].expired();
  }

 private:
  boost::asio::io_context& io_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<MemoryBlockDevice>> volumes_;
  std::map<std::string, std::weak_ptr<int>> writers_;
  int opens_ = 0;
};

}  // namespace tapmap::testing
