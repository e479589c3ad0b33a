// MemoryCatalog: an ExportCatalog of MemoryBlockDevices, for tests of the NBD layer
// without the engine (unit tests and the nbd_memory_server test program).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "tapdisk-map/nbd/export_catalog.h"
#include "tests/support/memory_block_device.h"

namespace tapmap::nbd::testing {

class MemoryCatalog : public ExportCatalog {
 public:
  // Adds (or replaces) an export. `io` must outlive the device.
  std::shared_ptr<tapmap::testing::MemoryBlockDevice> Add(boost::asio::io_context& io,
                                                          const std::string& name, uint64_t size,
                                                          bool read_only = false) {
    auto device = std::make_shared<tapmap::testing::MemoryBlockDevice>(io, name, size, read_only);
    std::lock_guard<std::mutex> lock(mu_);
    devices_[name] = device;
    return device;
  }

  void Open(const std::string& name, OpenDone done) override {
    std::shared_ptr<engine::BlockDevice> device;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = devices_.find(name);
      if (it != devices_.end()) device = it->second;
    }
    if (!device) {
      done(Status::NotFound("no volume named '" + name + "'"));
      return;
    }
    done(std::move(device));
  }

  void List(ListDone done) override {
    std::vector<std::string> names;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [name, device] : devices_) names.push_back(name);
    }
    done(std::move(names));
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<tapmap::testing::MemoryBlockDevice>> devices_;
};

}  // namespace tapmap::nbd::testing
