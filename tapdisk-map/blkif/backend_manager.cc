#include "tapdisk-map/blkif/backend_manager.h"

#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <charconv>
#include <map>
#include <set>

#include "tapdisk-map/blkif/vbd.h"

namespace tapmap::blkif {

namespace asio = boost::asio;
using xen::kNoTransaction;

const char* LayoutName(Layout layout) { return layout == Layout::kVbd3 ? "vbd3" : "vbd"; }

Result<Layout> ParseLayout(std::string_view name) {
  if (name == "vbd") return Layout::kVbd;
  if (name == "vbd3") return Layout::kVbd3;
  return Status::InvalidArgument("unknown vbd layout '" + std::string(name.substr(0, 16)) + "' (vbd or vbd3)");
}

namespace {

constexpr const char* kBackendToken[] = {"tapmap-be:vbd", "tapmap-be:vbd3"};
constexpr const char* kReleaseToken = "tapmap-release";

bool ParseU32(std::string_view text, uint32_t* out) {
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), *out, 10);
  return !text.empty() && ec == std::errc() && p == text.data() + text.size();
}

}  // namespace

class BackendManager::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(asio::io_context& io, xen::XenPlatform& platform, engine::BlockDeviceOpener& opener, BackendOptions options,
       Logger logger)
      : io_(io), strand_(asio::make_strand(io)), platform_(platform), opener_(opener), options_(std::move(options)),
        logger_(std::move(logger)), inflight_(InflightBudget::Create(options_.inflight_bytes_per_host)),
        grant_quota_(std::make_shared<PersistentGrantQuota>(options_.persistent_grants_per_host)) {}

  std::string Root(Layout layout) const {
    return "/local/domain/" + std::to_string(platform_.backend_domid) + "/backend/" + LayoutName(layout);
  }
  std::string BackendPath(const VbdKey& k) const {
    return Root(k.layout) + "/" + std::to_string(k.domid) + "/" + std::to_string(k.devid);
  }
  std::string Describe(const VbdKey& k) const {
    return std::string(LayoutName(k.layout)) + "/" + std::to_string(k.domid) + "/" + std::to_string(k.devid);
  }

  Status Start() {
    xen::XenStore& xs = *platform_.xenstore;
    int fd = dup(xs.watch_fd());
    if (fd < 0) return Status::FromErrno("dup xenstore watch fd", errno);
    watch_fd_ = std::make_unique<asio::posix::stream_descriptor>(strand_, fd);
    for (Layout l : {Layout::kVbd, Layout::kVbd3}) {
      TAPMAP_RETURN_IF_ERROR(xs.Watch(Root(l), kBackendToken[static_cast<int>(l)]));
    }
    // Fires when a domain dies (xenstored's special path): frontends may be gone.
    TAPMAP_RETURN_IF_ERROR(xs.Watch("@releaseDomain", kReleaseToken));
    auto self = shared_from_this();
    asio::post(strand_, [self] {
      self->ArmWatch();
      self->Rescan(Layout::kVbd);
      self->Rescan(Layout::kVbd3);
    });
    return Status::Ok();
  }

  void ArmWatch() {
    if (stopped_ || !watch_fd_) return;
    watch_fd_->async_wait(asio::posix::stream_descriptor::wait_read,
                          asio::bind_executor(strand_, [self = shared_from_this()](boost::system::error_code ec) {
                            if (ec || self->stopped_) return;
                            self->OnWatch();
                          }));
  }

  void OnWatch() {
    std::vector<xen::WatchEvent> events = platform_.xenstore->TakeWatchEvents();
    bool rescan[2] = {false, false};
    for (const xen::WatchEvent& e : events) {
      if (e.token == kReleaseToken) {
        for (auto& [k, v] : vbds_) ScheduleReconcile(k);
        continue;
      }
      for (Layout l : {Layout::kVbd, Layout::kVbd3}) {
        if (e.token == kBackendToken[static_cast<int>(l)]) {
          std::optional<VbdKey> key = KeyOf(l, e.path);
          if (key && vbds_.count(*key)) {
            ScheduleReconcile(*key);
          } else {
            rescan[static_cast<int>(l)] = true;  // a new device, or a directory removed
          }
        }
      }
      if (e.token.rfind("tapmap-fe:", 0) == 0) {
        for (auto& [k, v] : vbds_) {
          if (v->frontend_watch_token() == e.token) ScheduleReconcile(k);
        }
      }
    }
    for (Layout l : {Layout::kVbd, Layout::kVbd3}) {
      if (rescan[static_cast<int>(l)]) Rescan(l);
    }
    ArmWatch();
  }

  // The device a path under Root(layout) belongs to, if it names one.
  std::optional<VbdKey> KeyOf(Layout layout, const std::string& path) const {
    std::string root = Root(layout) + "/";
    if (path.rfind(root, 0) != 0) return std::nullopt;
    std::string_view rest(path);
    rest.remove_prefix(root.size());
    size_t slash = rest.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    VbdKey key;
    key.layout = layout;
    std::string_view devid = rest.substr(slash + 1);
    devid = devid.substr(0, devid.find('/'));
    if (!ParseU32(rest.substr(0, slash), &key.domid) || !ParseU32(devid, &key.devid)) return std::nullopt;
    return key;
  }

  // Looks at every device under Root(layout): takes on new ones of ours, and lets
  // known ones notice a removal.
  void Rescan(Layout layout) {
    if (stopped_) return;
    xen::XenStore& xs = *platform_.xenstore;
    for (auto& [k, v] : vbds_) {
      if (k.layout == layout) ScheduleReconcile(k);
    }
    auto domains = xs.Directory(kNoTransaction, Root(layout));
    if (!domains.ok()) return;
    for (const std::string& d : *domains) {
      auto devices = xs.Directory(kNoTransaction, Root(layout) + "/" + d);
      if (!devices.ok()) continue;
      for (const std::string& dev : *devices) {
        VbdKey key;
        key.layout = layout;
        if (!ParseU32(d, &key.domid) || !ParseU32(dev, &key.devid)) continue;
        if (vbds_.count(key) == 0) MaybeAdopt(key);
      }
    }
  }

  // Takes on a device found in xenstore if it is ours: its hotplug script is
  // block-tapmap and it awaits a backend, or a previous run of this daemon attached
  // it (tapmap-volume), in which case the volume is opened again.
  void MaybeAdopt(const VbdKey& key) {
    xen::XenStore& xs = *platform_.xenstore;
    std::string be = BackendPath(key);
    auto volume = xs.Read(kNoTransaction, be + "/tapmap-volume");
    if (volume.ok()) {
      auto mode = xs.Read(kNoTransaction, be + "/tapmap-mode");
      auto sector = xen::ReadUnsigned(xs, kNoTransaction, be + "/tapmap-sector-size");
      Vbd& vbd = Create(key);
      logger_.Infof("%s: re-attaching volume %s after a restart", Describe(key).c_str(), volume->c_str());
      AttachSpec spec;
      spec.key = key;
      spec.volume = *volume;
      spec.read_only = mode.ok() && *mode == "r";
      spec.sector_size = sector.ok() && (*sector == 512 || *sector == 4096) ? static_cast<uint32_t>(*sector) : 512;
      (void)vbd;
      OpenVolume(spec, [this, key](Result<VbdInfo> r) {
        if (!r.ok()) logger_.Errorf("%s: re-attach failed: %s", Describe(key).c_str(), r.status().ToString().c_str());
      });
      return;
    }
    auto script = xs.Read(kNoTransaction, be + "/script");
    if (!script.ok()) return;
    bool ours = false;
    for (const std::string& suffix : options_.script_suffixes) {
      if (script->size() >= suffix.size() && script->compare(script->size() - suffix.size(), suffix.size(), suffix) == 0) {
        ours = true;
      }
    }
    if (!ours) return;
    auto state = xen::ReadUnsigned(xs, kNoTransaction, be + "/state");
    auto online = xen::ReadUnsigned(xs, kNoTransaction, be + "/online");
    if (online.ok() && *online == 0) return;
    if (state.ok() && *state != XenbusStateInitialising && *state != XenbusStateInitWait) return;
    logger_.Infof("%s: taking on device (script %s)", Describe(key).c_str(), script->c_str());
    Create(key);
  }

  Vbd& Create(const VbdKey& key) {
    auto vbd = std::make_shared<Vbd>(io_, strand_, platform_, options_, inflight_, grant_quota_, key, BackendPath(key),
                                     logger_.WithContext("vbd", Describe(key)));
    Vbd& ref = *vbd;
    vbds_[key] = std::move(vbd);
    ScheduleReconcile(key);
    return ref;
  }

  // Coalesces reconciles of one device: many events, one pass.
  void ScheduleReconcile(const VbdKey& key) {
    if (!pending_.insert(key).second) return;
    asio::post(strand_, [self = shared_from_this(), key] {
      self->pending_.erase(key);
      self->DoReconcile(key);
    });
  }

  void DoReconcile(const VbdKey& key) {
    if (stopped_) return;
    auto it = vbds_.find(key);
    if (it == vbds_.end()) return;
    std::shared_ptr<Vbd> vbd = it->second;
    if (!platform_.xenstore->Read(kNoTransaction, vbd->backend_path()).ok()) {
      logger_.Infof("%s: backend directory removed; releasing the device", Describe(key).c_str());
      vbds_.erase(it);
      vbd->Shutdown([vbd] {});
      FlushAttachWaiters(key);  // an attach still waiting is answered: removed
      return;
    }
    vbd->Reconcile();
    FlushAttachWaiters(key);
  }

  void FlushAttachWaiters(const VbdKey& key) {
    auto it = vbds_.find(key);
    auto range = attach_waiters_.equal_range(key);
    if (range.first == range.second) return;
    std::vector<std::function<void(Result<VbdInfo>)>> ready;
    if (it == vbds_.end()) {
      for (auto w = range.first; w != range.second; ++w) ready.push_back(std::move(w->second));
      attach_waiters_.erase(key);
      for (auto& cb : ready) {
        asio::post(io_, [cb = std::move(cb), k = Describe(key)] { cb(Status::Aborted(k + " was removed")); });
      }
      return;
    }
    if (!it->second->attached() || !it->second->past_initwait()) return;
    VbdInfo info = it->second->Info();
    for (auto w = range.first; w != range.second; ++w) ready.push_back(std::move(w->second));
    attach_waiters_.erase(key);
    for (auto& cb : ready) asio::post(io_, [cb = std::move(cb), info] { cb(info); });
  }

  void OpenVolume(const AttachSpec& spec, std::function<void(Result<VbdInfo>)> done) {
    opening_.insert(spec.key);
    attach_waiters_.emplace(spec.key, std::move(done));
    auto self = shared_from_this();
    opener_.Open(spec.volume, spec.read_only, [self, spec](Result<std::shared_ptr<engine::BlockDevice>> dev) {
      asio::post(self->strand_, [self, spec, dev = std::move(dev)]() mutable {
        self->opening_.erase(spec.key);
        auto it = self->vbds_.find(spec.key);
        if (!dev.ok() || it == self->vbds_.end() || self->stopped_) {
          Status err = !dev.ok() ? dev.status().WithContext("open volume " + spec.volume)
                                 : Status::Aborted(self->Describe(spec.key) + " went away while opening");
          auto range = self->attach_waiters_.equal_range(spec.key);
          for (auto w = range.first; w != range.second; ++w) {
            asio::post(self->io_, [cb = std::move(w->second), err] { cb(err); });
          }
          self->attach_waiters_.erase(spec.key);
          return;
        }
        self->logger_.Infof("%s: volume %s opened %s", self->Describe(spec.key).c_str(), spec.volume.c_str(),
                            spec.read_only ? "read-only" : "read-write");
        it->second->SetDevice(std::move(*dev), spec);
        self->DoReconcile(spec.key);
      });
    });
  }

  void Attach(AttachSpec spec, std::function<void(Result<VbdInfo>)> done) {
    if (stopped_) return Reply(std::move(done), Status::Aborted("backend is stopping"));
    if (spec.sector_size != 512 && spec.sector_size != 4096) {
      return Reply(std::move(done), Status::InvalidArgument("sector size must be 512 or 4096"));
    }
    if (spec.volume.empty()) return Reply(std::move(done), Status::InvalidArgument("no volume given"));
    std::string be = BackendPath(spec.key);
    if (!platform_.xenstore->Read(kNoTransaction, be).ok()) {
      return Reply(std::move(done), Status::NotFound(be + " does not exist in xenstore"));
    }
    // The toolstack's `mode` wins over a read-write attach: a disk given to the guest
    // read-only (mode=r) is opened read-only.
    auto mode = platform_.xenstore->Read(kNoTransaction, be + "/mode");
    if (mode.ok() && *mode == "r") spec.read_only = true;
    auto it = vbds_.find(spec.key);
    if (it != vbds_.end() && (it->second->attached() || opening_.count(spec.key))) {
      Vbd& v = *it->second;
      if (opening_.count(spec.key) || (v.volume() == spec.volume && v.read_only() == spec.read_only)) {
        attach_waiters_.emplace(spec.key, std::move(done));
        FlushAttachWaiters(spec.key);
        return;
      }
      return Reply(std::move(done), Status::AlreadyExists(Describe(spec.key) + " is attached to volume " + v.volume()));
    }
    if (it == vbds_.end()) Create(spec.key);
    OpenVolume(spec, std::move(done));
  }

  void Detach(const VbdKey& key, std::function<void(Status)> done) {
    auto it = vbds_.find(key);
    if (it == vbds_.end()) return Reply(std::move(done), Status::NotFound(Describe(key) + " is not served"));
    std::shared_ptr<Vbd> vbd = it->second;
    vbds_.erase(it);
    auto self = shared_from_this();
    vbd->Detach([self, vbd, key, done = std::move(done)]() mutable {
      self->logger_.Infof("%s: detached", self->Describe(key).c_str());
      self->FlushAttachWaiters(key);
      self->Reply(std::move(done), Status::Ok());
    });
  }

  void Pause(const VbdKey& key, std::function<void(Status)> done) {
    auto it = vbds_.find(key);
    if (it == vbds_.end()) return Reply(std::move(done), Status::NotFound(Describe(key) + " is not served"));
    auto io = &io_;
    it->second->Pause([io, done = std::move(done)](Status s) mutable {
      asio::post(*io, [done = std::move(done), s = std::move(s)] { done(s); });
    });
  }

  void Resume(const VbdKey& key, std::function<void(Status)> done) {
    auto it = vbds_.find(key);
    if (it == vbds_.end()) return Reply(std::move(done), Status::NotFound(Describe(key) + " is not served"));
    it->second->Resume();
    Reply(std::move(done), Status::Ok());
  }

  std::vector<VbdInfo> List() const {
    std::vector<VbdInfo> out;
    for (auto& [k, v] : vbds_) out.push_back(v->Info());
    return out;
  }

  void Stop(std::function<void()> done) {
    stopped_ = true;
    if (watch_fd_) {
      boost::system::error_code ec;
      watch_fd_->cancel(ec);
      watch_fd_.reset();
    }
    for (Layout l : {Layout::kVbd, Layout::kVbd3}) {
      (void)platform_.xenstore->Unwatch(Root(l), kBackendToken[static_cast<int>(l)]);
    }
    (void)platform_.xenstore->Unwatch("@releaseDomain", kReleaseToken);
    auto vbds = std::move(vbds_);
    vbds_.clear();
    for (auto& [k, cbs] : attach_waiters_) {
      asio::post(io_, [cb = std::move(cbs)] { cb(Status::Aborted("backend is stopping")); });
    }
    attach_waiters_.clear();
    auto remaining = std::make_shared<size_t>(vbds.size() + 1);
    auto shared_done = std::make_shared<std::function<void()>>(std::move(done));
    auto finish = [this, remaining, shared_done] {
      if (--*remaining == 0) asio::post(io_, [shared_done] { (*shared_done)(); });
    };
    for (auto& [k, v] : vbds) {
      auto vbd = v;
      vbd->Shutdown([vbd, finish] { finish(); });
    }
    finish();
  }

  template <typename Cb, typename V>
  void Reply(Cb done, V value) {
    asio::post(io_, [done = std::move(done), value = std::move(value)]() mutable { done(std::move(value)); });
  }

  asio::io_context& io_;
  Vbd::Strand strand_;
  xen::XenPlatform& platform_;
  engine::BlockDeviceOpener& opener_;
  const BackendOptions options_;
  Logger logger_;
  const std::shared_ptr<InflightBudget> inflight_;  // every disk's requests
  const std::shared_ptr<PersistentGrantQuota> grant_quota_;  // every ring's persistent grants
  std::unique_ptr<asio::posix::stream_descriptor> watch_fd_;
  std::map<VbdKey, std::shared_ptr<Vbd>> vbds_;
  std::set<VbdKey> pending_;
  std::set<VbdKey> opening_;
  std::multimap<VbdKey, std::function<void(Result<VbdInfo>)>> attach_waiters_;
  bool stopped_ = false;
};

BackendManager::BackendManager(asio::io_context& io, xen::XenPlatform& platform, engine::BlockDeviceOpener& opener,
                               BackendOptions options, Logger logger)
    : impl_(std::make_shared<Impl>(io, platform, opener, std::move(options), std::move(logger))) {}

BackendManager::~BackendManager() = default;

Status BackendManager::Start() { return impl_->Start(); }

void BackendManager::Stop(std::function<void()> done) {
  asio::post(impl_->strand_, [impl = impl_, done = std::move(done)]() mutable { impl->Stop(std::move(done)); });
}

void BackendManager::Attach(AttachSpec spec, std::function<void(Result<VbdInfo>)> done) {
  asio::post(impl_->strand_, [impl = impl_, spec = std::move(spec), done = std::move(done)]() mutable {
    impl->Attach(std::move(spec), std::move(done));
  });
}

void BackendManager::Detach(VbdKey key, std::function<void(Status)> done) {
  asio::post(impl_->strand_, [impl = impl_, key, done = std::move(done)]() mutable {
    impl->Detach(key, std::move(done));
  });
}

void BackendManager::Pause(VbdKey key, std::function<void(Status)> done) {
  asio::post(impl_->strand_, [impl = impl_, key, done = std::move(done)]() mutable {
    impl->Pause(key, std::move(done));
  });
}

void BackendManager::Resume(VbdKey key, std::function<void(Status)> done) {
  asio::post(impl_->strand_, [impl = impl_, key, done = std::move(done)]() mutable {
    impl->Resume(key, std::move(done));
  });
}

HostStatus BackendManager::Host() const {
  return HostStatus{impl_->inflight_->usage(), impl_->grant_quota_->usage()};
}

void BackendManager::List(std::function<void(std::vector<VbdInfo>)> done) {
  asio::post(impl_->strand_, [impl = impl_, done = std::move(done)]() mutable {
    auto list = impl->List();
    asio::post(impl->io_, [done = std::move(done), list = std::move(list)] { done(list); });
  });
}

}  // namespace tapmap::blkif
