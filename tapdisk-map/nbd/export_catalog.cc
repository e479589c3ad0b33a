#include "tapdisk-map/nbd/export_catalog.h"

#include <algorithm>

namespace tapmap::nbd {

ExportName ParseExportName(const std::string& name) {
  if (name.size() > kReadOnlySuffix.size() && name.ends_with(kReadOnlySuffix)) {
    return ExportName{name.substr(0, name.size() - kReadOnlySuffix.size()), true};
  }
  return ExportName{name, false};
}

void ExportCatalog::Describe(const std::string& name, DescribeDone done) {
  Open(name, [done = std::move(done)](Result<std::shared_ptr<engine::BlockDevice>> device) {
    if (!device.ok()) return done(device.status());
    std::shared_ptr<engine::BlockDevice> held = std::move(*device);
    ExportInfo info{held->size_bytes(), held->block_size(), held->read_only()};
    held.reset();  // released before the answer
    done(info);
  });
}

VolumeExports::VolumeExports(engine::BlockDeviceOpener& opener, Lister lister)
    : opener_(opener), lister_(std::move(lister)) {}

VolumeExports::~VolumeExports() = default;

void VolumeExports::Open(const std::string& name, OpenDone done) {
  std::shared_ptr<engine::BlockDevice> open;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Entry& entry = entries_[name];
    open = entry.device.lock();
    if (!open) {
      entry.waiters.push_back(std::move(done));
      if (entry.waiters.size() > 1) return;  // an open of this volume is in progress
    }
  }
  if (open) {
    done(std::move(open));
    return;
  }
  // `VOLUME@ro`: read-only. Otherwise writable if the volume allows it; a read-only
  // volume (snapshot) is opened read-only.
  const ExportName export_name = ParseExportName(name);
  if (export_name.read_only) {
    opener_.Open(export_name.volume, true, [this, name](Result<std::shared_ptr<engine::BlockDevice>> ro) {
      Finish(name, std::move(ro));
    });
    return;
  }
  opener_.Open(name, false, [this, name](Result<std::shared_ptr<engine::BlockDevice>> result) {
    if (!result.ok() && result.status().code() == StatusCode::kReadOnly) {
      opener_.Open(name, true, [this, name](Result<std::shared_ptr<engine::BlockDevice>> ro) {
        Finish(name, std::move(ro));
      });
      return;
    }
    Finish(name, std::move(result));
  });
}

void VolumeExports::Finish(const std::string& name,
                           Result<std::shared_ptr<engine::BlockDevice>> result) {
  std::vector<OpenDone> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Entry& entry = entries_[name];
    waiters.swap(entry.waiters);
    if (result.ok()) {
      entry.device = *result;
    } else {
      entries_.erase(name);
    }
  }
  for (OpenDone& waiter : waiters) waiter(result);
}

void VolumeExports::Describe(const std::string& name, DescribeDone done) {
  std::shared_ptr<engine::BlockDevice> open;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(name);
    if (it != entries_.end()) open = it->second.device.lock();
  }
  if (open) {
    done(ExportInfo{open->size_bytes(), open->block_size(), open->read_only()});
    return;
  }
  const ExportName export_name = ParseExportName(name);
  if (!export_name.read_only) return opener_.Describe(name, std::move(done));
  opener_.Describe(export_name.volume, [done = std::move(done)](Result<ExportInfo> info) {
    if (info.ok()) info->read_only = true;
    done(std::move(info));
  });
}

void VolumeExports::List(ListDone done) {
  if (lister_) {
    lister_(std::move(done));
    return;
  }
  done(OpenVolumeNames());
}

std::vector<std::string> VolumeExports::OpenVolumeNames() const {
  std::vector<std::string> names;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, entry] : entries_) {
    if (!entry.device.expired()) names.push_back(name);
  }
  return names;  // std::map keeps them sorted
}

std::vector<std::shared_ptr<engine::BlockDevice>> VolumeExports::OpenDevices() const {
  std::vector<std::shared_ptr<engine::BlockDevice>> devices;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, entry] : entries_) {
    if (auto device = entry.device.lock()) devices.push_back(std::move(device));
  }
  return devices;
}

SingleExport::SingleExport(ExportCatalog& inner, std::string name) : inner_(inner), name_(std::move(name)) {}

void SingleExport::Open(const std::string& name, OpenDone done) {
  if (!name.empty() && name != name_) {
    done(Status::NotFound("this socket exports only '" + name_ + "' (or the default export), not '" + name + "'"));
    return;
  }
  inner_.Open(name_, std::move(done));
}

void SingleExport::Describe(const std::string& name, DescribeDone done) {
  if (!name.empty() && name != name_) {
    done(Status::NotFound("this socket exports only '" + name_ + "' (or the default export), not '" + name + "'"));
    return;
  }
  inner_.Describe(name_, std::move(done));
}

void SingleExport::List(ListDone done) { done(std::vector<std::string>{name_}); }

}  // namespace tapmap::nbd
