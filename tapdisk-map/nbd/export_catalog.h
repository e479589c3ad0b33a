// ExportCatalog: what the NBD server may export, by name. An export name is a volume
// name; opening one yields the engine's BlockDevice for it.
//
// VolumeExports is the catalog tapdisk-map uses: it opens volumes through the engine's
// BlockDeviceOpener and shares one open BlockDevice among all connections to the same
// volume (so several NBD connections, e.g. a multi-conn client, use one rw lease and one
// cache, and a flush on any connection covers writes made on all of them). A volume
// that is read-only (a snapshot) is opened read-only. A volume stays open while at
// least one connection holds its device.
//
// Export names: `VOLUME` opens the volume read-write if it is writable (this host
// then holds its rw lease), `VOLUME@ro` opens it read-only (no lease: any number of
// hosts may read a volume another host writes; see mapping.capnp ExtentState for
// what such a reader sees). Volume names cannot contain '@'.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "tapdisk-map/engine/block_device.h"

namespace tapmap::nbd {

// An NBD export name split into the volume and the mode asked for.
struct ExportName {
  std::string volume;
  bool read_only = false;  // the name ended in kReadOnlySuffix
};
inline constexpr std::string_view kReadOnlySuffix = "@ro";
ExportName ParseExportName(const std::string& name);

class ExportCatalog {
 public:
  virtual ~ExportCatalog() = default;
  using OpenDone = std::function<void(Result<std::shared_ptr<engine::BlockDevice>>)>;
  using ListDone = std::function<void(Result<std::vector<std::string>>)>;

  // Opens export `name`. `done` runs exactly once, possibly inline, possibly on another
  // thread. Errors: not-found for an unknown name; others as the engine reports them.
  virtual void Open(const std::string& name, OpenDone done) = 0;

  // The names a client may open (for NBD_OPT_LIST). Same calling rules as Open.
  virtual void List(ListDone done) = 0;

  // What Open(name) would serve — size, block size, read-only — for NBD_OPT_INFO,
  // which only asks: it must take no read-write lease and leave nothing open, so that
  // the client's NBD_OPT_GO right after finds the volume free. Same calling rules and
  // errors as Open. The default opens the export and releases it before `done`
  // (right for catalogs without leases, e.g. test doubles).
  using ExportInfo = engine::BlockDeviceOpener::Description;
  using DescribeDone = std::function<void(Result<ExportInfo>)>;
  virtual void Describe(const std::string& name, DescribeDone done);
};

class VolumeExports : public ExportCatalog {
 public:
  // Lists the volumes that exist (e.g. asks the mapserver). If null, List returns the
  // volumes currently open here.
  using Lister = std::function<void(ListDone)>;

  // `opener` must outlive this object. Thread-safe.
  explicit VolumeExports(engine::BlockDeviceOpener& opener, Lister lister = nullptr);
  ~VolumeExports() override;

  void Open(const std::string& name, OpenDone done) override;
  void List(ListDone done) override;
  // From the open device if a connection holds the volume, else from the opener's
  // Describe (the engine asks the mapserver): no lease is taken.
  void Describe(const std::string& name, DescribeDone done) override;

  // The volumes open now (held by at least one connection), sorted by name.
  std::vector<std::string> OpenVolumeNames() const;
  // The devices open now (to flush them all at shutdown).
  std::vector<std::shared_ptr<engine::BlockDevice>> OpenDevices() const;

 private:
  struct Entry {
    std::weak_ptr<engine::BlockDevice> device;
    std::vector<OpenDone> waiters;  // non-empty while an open is in progress
  };
  void Finish(const std::string& name, Result<std::shared_ptr<engine::BlockDevice>> result);

  engine::BlockDeviceOpener& opener_;
  Lister lister_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

// SingleExport: a view of another catalog that offers one export only, under its own
// name and as NBD's default export (the empty name); any other name is not-found.
// What a per-device NBD socket serves (NbdServer::Listen with a default export).
class SingleExport : public ExportCatalog {
 public:
  // `inner` must outlive this object.
  SingleExport(ExportCatalog& inner, std::string name);

  void Open(const std::string& name, OpenDone done) override;
  void List(ListDone done) override;
  void Describe(const std::string& name, DescribeDone done) override;

 private:
  ExportCatalog& inner_;
  const std::string name_;
};

}  // namespace tapmap::nbd
