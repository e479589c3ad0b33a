#include "tapdisk-map/engine/engine.h"

#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <utility>

#include "protocol/auth.h"
#include "protocol/connection.h"
#include "protocol/pool_location.h"
#include "protocol/superblock_file.h"
#include "tapdisk-map/pool/rados_pool_io.h"
#include "tapdisk-map/engine/volume.h"

namespace tapmap::engine {

uint64_t DefaultCacheSize() {
  long pages = ::sysconf(_SC_PHYS_PAGES);
  long page_size = ::sysconf(_SC_PAGE_SIZE);
  uint64_t ram = pages > 0 && page_size > 0 ? uint64_t(pages) * uint64_t(page_size) : 0;
  return std::max<uint64_t>(ram / 8, 64ull << 20);
}

Engine::Engine(boost::asio::io_context& io, EngineOptions options, const Logger& log)
    : io_(io),
      options_(std::move(options)),
      log_(log),
      host_counters_(std::make_shared<IoCounters>()),
      pinned_bytes_(std::make_shared<std::atomic<uint64_t>>(0)) {}

Engine::~Engine() {
  writers_->Abandon();  // parked Opens are dropped, like callbacks of a stopped io_context
  client_.reset();  // stops the RPC thread first: no more events into volumes
  fenced_pool_.reset();
  pool_.reset();
}

Result<std::unique_ptr<Engine>> Engine::Create(boost::asio::io_context& io, EngineOptions options,
                                              const Logger& log) {
  if (options.pool_path.empty()) return Status::InvalidArgument("no pool path given");
  if (options.cache_size_bytes == 0) options.cache_size_bytes = DefaultCacheSize();
  if (options.max_pinned_bytes == 0) options.max_pinned_bytes = std::max<uint64_t>(256ull << 20, options.cache_size_bytes / 4);
  auto addresses = protocol::ParseServerAddressList(options.server);
  if (!addresses.ok()) return addresses.status().WithContext("--server");
  bool any_tcp = false;
  for (const auto& a : *addresses) any_tcp |= a.kind == protocol::ServerAddress::Kind::kTcp;
  std::shared_ptr<protocol::TlsConfig> tls;
  std::string secret;
  if (!options.tls_dir.empty() && any_tcp) {
    auto loaded = protocol::TlsConfig::LoadClient(options.tls_dir);
    if (!loaded.ok()) return loaded.status();
    tls = std::move(*loaded);
    if (!options.host.empty() && options.host != tls->name().host) {
      return Status::InvalidArgument("host name '" + options.host + "' differs from the name in " +
                                     options.tls_dir + "/host.crt (" + tls->name().host + ")");
    }
    options.host = tls->name().host;
  } else {
    auto read = protocol::ReadSecretFile(options.secret_file);
    if (!read.ok()) return read.status().WithContext("secret file " + options.secret_file);
    secret = std::move(*read);
  }
  if (options.host.empty()) options.host = protocol::LocalHostName();

  std::unique_ptr<Engine> engine(new Engine(io, options, log));
  auto sb = protocol::ReadPoolSuperblock(options.pool_path);
  if (!sb.ok()) return sb.status().WithContext("pool " + options.pool_path);
  engine->pool_uuid_ = protocol::FormatUuid(sb->uuid);
  engine->block_size_ = sb->block_size;
  engine->data_start_ = sb->data_offset;
  engine->data_end_ = sb->data_offset + sb->total_blocks * sb->block_size;

  auto location = protocol::ParsePoolLocation(options.pool_path);
  if (!location.ok()) return location.status();
  Result<std::unique_ptr<pool::PoolIo>> pool = Status::Internal("pool not opened");
  if (location->is_rados()) {
    auto cluster = rados::RadosCluster::Connect(location->rados);
    if (!cluster.ok()) return cluster.status().WithContext("pool " + options.pool_path);
    pool = pool::CreateRadosPoolIo(io, std::move(*cluster), {location->prefix, sb->object_bytes, sb->pool_bytes});
  } else {
    auto file = pool::PoolFile::Open(options.pool_path, false, log);
    if (!file.ok()) return file.status();
    pool = pool::CreatePoolIo(io, std::move(*file), options.pool_io, log);
  }
  if (!pool.ok()) return pool.status();
  engine->pool_ = std::move(*pool);
  log.Infof("pool %s (uuid %s, block size %u): %s I/O, %s", options.pool_path.c_str(),
            engine->pool_uuid_.c_str(), engine->block_size_, std::string(engine->pool_->kind()).c_str(),
            location->is_rados()       ? "durable when RADOS acknowledges a write"
            : engine->pool_->direct() ? "O_DIRECT"
                                      : "buffered (no O_DIRECT on this filesystem)");

  MappingClient::Options client_options;
  client_options.server = options.server;
  client_options.host = options.host;
  client_options.secret = std::move(secret);
  client_options.tls = std::move(tls);
  client_options.unavailable_timeout = options.unavailable_timeout;
  // Fencing on a RADOS pool (mapserver/pool_fencer.h): each login names the librados
  // client this host's pool I/O goes through; after a fence, a fresh one.
  pool::PoolIo* pool_io = engine->pool_.get();
  if (!pool_io->client_identity().empty()) {
    client_options.pool_identity = [pool_io]() { return pool_io->client_identity(); };
    client_options.renew_pool_identity = [pool_io]() { return pool_io->RenewClient(); };
  }
  auto client = MappingClient::Create(io, std::move(client_options), log.WithContext("server", options.server));
  if (!client.ok()) return client.status();
  engine->client_ = std::move(*client);
  engine->fenced_pool_ =
      std::make_unique<FencedPoolIo>(*engine->pool_, engine->client_->lease(), options.unavailable_timeout);
  return engine;
}

Status Engine::SetUpPool(const PoolInfo& info) {
  if (info.uuid != pool_uuid_ || info.block_size != block_size_) {
    return Status::Corruption("mapserver serves pool " + info.uuid + " (block size " +
                              std::to_string(info.block_size) + ") but " + options_.pool_path +
                              " is pool " + pool_uuid_ + " (block size " + std::to_string(block_size_) + ")");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!cache_) cache_ = std::make_shared<DataCache>(options_.cache_size_bytes, block_size_);
  return Status::Ok();
}

void Engine::Open(const std::string& name, bool read_only, OpenDone done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto in_flight = opening_.find(name);
    if (in_flight != opening_.end()) {
      in_flight->second.emplace_back(read_only, std::move(done));
      return;
    }
    if (OpenShared(name, read_only, done)) return;
    if (WaitForClose(name, read_only, done)) return;
    opening_[name];  // later Opens of `name` queue behind this one
  }
  OpenAtServer(name, read_only, std::move(done));
}

namespace {
// An Open parked until the volume's previous read-write opener here has closed; the
// first of "closed" and "timed out" takes `done`.
struct ParkedOpen {
  explicit ParkedOpen(boost::asio::io_context& io, BlockDeviceOpener::OpenDone d) : timer(io), done(std::move(d)) {}
  BlockDeviceOpener::OpenDone Take() {
    std::lock_guard<std::mutex> lock(mu);
    return std::exchange(done, nullptr);
  }
  boost::asio::steady_timer timer;
  std::mutex mu;
  BlockDeviceOpener::OpenDone done;
};
}  // namespace

bool Engine::WaitForClose(const std::string& name, bool read_only, const OpenDone& done) {
  // OpenShared found no live open to share, so a read-write Volume of `name` still
  // alive here has lost its last front end: its final commit and close are in flight.
  auto parked = std::make_shared<ParkedOpen>(io_, done);
  bool waiting = writers_->WaitForEnd(name, [this, parked, name, read_only]() {
    OpenDone resume = parked->Take();
    if (!resume) return;  // timed out meanwhile
    // Runs where the Volume was destroyed: hand off, never re-enter the engine here.
    boost::asio::post(io_, [this, name, read_only, resume = std::move(resume)]() { Open(name, read_only, resume); });
  });
  if (!waiting) return false;
  log_.Debugf("open of %s waits for its previous read-write opener here to finish closing", name.c_str());
  const auto timeout = options_.unavailable_timeout;
  parked->timer.expires_after(timeout);
  // The timer is never cancelled (a resume may run on any thread); a late expiry finds
  // `done` taken and does nothing.
  parked->timer.async_wait([parked, name, timeout, log = log_](const boost::system::error_code& ec) {
    if (ec) return;
    OpenDone fail = parked->Take();
    if (!fail) return;
    Status s = Status::Unavailable("volume '" + name + "' is still closing on this host (final commit and close " +
                                   "at the mapserver) after " + std::to_string(timeout.count()) + " ms");
    log.Warnf("open of %s: %s", name.c_str(), s.ToString().c_str());
    fail(s);
  });
  return true;
}

bool Engine::OpenShared(const std::string& name, bool read_only, const OpenDone& done) {
  auto it = open_.find(name);
  if (it == open_.end()) return false;
  std::shared_ptr<OpenVolume> open = it->second.lock();
  if (!open) {
    open_.erase(it);
    return false;
  }
  if (!read_only && open->volume()->read_only()) return false;  // needs its own rw open
  auto handle = std::make_shared<FrontHandle>(std::move(open), read_only);
  boost::asio::post(io_, [done, handle]() { done(std::shared_ptr<BlockDevice>(handle)); });
  return true;
}

void Engine::FinishOpening(const std::string& name) {
  std::vector<std::pair<bool, OpenDone>> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = opening_.find(name);
    if (it == opening_.end()) return;
    waiters = std::move(it->second);
    opening_.erase(it);
  }
  // Each waiter now finds the volume open (or opens it itself, e.g. after a failure).
  for (auto& [read_only, done] : waiters) Open(name, read_only, std::move(done));
}

void Engine::OpenAtServer(const std::string& name, bool read_only, OpenDone done) {
  client_->GetPoolInfo([this, name, read_only, done](Result<PoolInfo> info) {
    if (!info.ok()) {
      done(info.status().WithContext("open " + name));
      return FinishOpening(name);
    }
    Status s = SetUpPool(*info);
    if (!s.ok()) {
      log_.Errorf("%s", s.ToString().c_str());
      done(s);
      return FinishOpening(name);
    }
    VolumeContext ctx;
    ctx.io = &io_;
    ctx.pool = fenced_pool_.get();
    ctx.lease = client_->lease();
    {
      std::lock_guard<std::mutex> lock(mu_);
      ctx.cache = cache_;
    }
    ctx.host_counters = host_counters_;
    ctx.pinned_bytes = pinned_bytes_;
    ctx.pool_id = 0;
    ctx.block_size = block_size_;
    ctx.pool_data_start = data_start_;
    ctx.pool_data_end = data_end_;
    ctx.map_readahead_bytes = options_.map_readahead_bytes;
    ctx.max_pinned_bytes = options_.max_pinned_bytes;
    ctx.unavailable_timeout = options_.unavailable_timeout;
    ctx.commit_interval = options_.commit_interval;
    ctx.qos_clock = options_.qos_clock;
    ctx.log = log_;
    std::shared_ptr<Volume> volume;
    if (read_only) {
      volume = std::make_shared<Volume>(ctx, name, true);
    } else {
      // Counted from now until destroyed: after its final commit and server close.
      writers_->Add(name);
      volume = std::shared_ptr<Volume>(new Volume(ctx, name, false), [writers = writers_, name](Volume* v) {
        delete v;
        writers->Remove(name);
      });
    }
    client_->Open(name, read_only, volume, [this, name, volume, done](Result<MappingClient::OpenResult> r) {
      if (!r.ok()) {
        done(r.status().WithContext("open " + volume->name()));
        return FinishOpening(name);
      }
      volume->Attach(r->first, r->second.size_bytes);
      if (r->second.standby) volume->SetStandby();
      auto open = std::make_shared<OpenVolume>(volume);
      {
        std::lock_guard<std::mutex> lock(mu_);
        volumes_.erase(std::remove_if(volumes_.begin(), volumes_.end(), [](auto& w) { return w.expired(); }),
                       volumes_.end());
        volumes_.push_back(volume);
        auto limits = qos_.find(name);
        volume->qos().SetLimits(limits == qos_.end() ? options_.qos_default : limits->second);
        // A read-write open supersedes a read-only one for later sharers.
        auto current = open_.find(name);
        std::shared_ptr<OpenVolume> existing = current == open_.end() ? nullptr : current->second.lock();
        if (!existing || existing->volume()->read_only()) open_[name] = open;
      }
      log_.Infof("opened volume %s (%s, %llu bytes)", volume->name().c_str(), volume->read_only() ? "ro" : "rw",
                 static_cast<unsigned long long>(volume->size_bytes()));
      done(std::shared_ptr<BlockDevice>(std::make_shared<FrontHandle>(std::move(open), volume->read_only())));
      FinishOpening(name);
    });
  });
}

void Engine::Shutdown(std::function<void()> done) {
  // Volumes alive only through their own pending work are closing; poll until gone.
  // A flatten job holds its volume open: it is asked to stop (it commits what it
  // copied, then lets the volume go).
  bool any;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [name, job] : flattens_) job->Cancel();
    volumes_.erase(std::remove_if(volumes_.begin(), volumes_.end(), [](auto& w) { return w.expired(); }),
                   volumes_.end());
    any = !volumes_.empty();
  }
  if (!any) return boost::asio::post(io_, std::move(done));
  auto timer = std::make_shared<boost::asio::steady_timer>(io_, std::chrono::milliseconds(20));
  timer->async_wait([this, timer, done](const boost::system::error_code&) { Shutdown(done); });
}

StatsSnapshot Engine::Stats() const {
  StatsSnapshot s;
  s.host = host_counters_->Snapshot();
  s.pinned_bytes = pinned_bytes_->load();
  s.connected = client_->connected();
  HostLease::Figures lease = client_->lease()->figures();
  s.lease_state = ToString(lease.state);
  s.lease_ms = lease.lease_ms;
  s.lease_ms_since_renewal = lease.ms_since_renewal;
  s.lease_renewals = lease.renewals;
  s.lease_fences = lease.fences;
  s.lease_waiting = lease.waiting;
  s.pool_io = std::string(pool_->kind());
  s.pool_direct = pool_->direct();
  std::lock_guard<std::mutex> lock(mu_);
  if (cache_) {
    DataCacheCounters c = cache_->counters();
    s.cache_bytes = c.bytes;
    s.cache_capacity_bytes = c.capacity_bytes;
  } else {
    s.cache_capacity_bytes = options_.cache_size_bytes;
  }
  for (const auto& w : volumes_) {
    auto v = w.lock();
    if (!v) continue;
    s.volumes_open++;
    IoStats vs = v->stats();
    IoStats& slot = s.volumes[v->name()];
    QosStats q = v->qos().stats();
    if (!q.limits.unlimited() || q.throttled_read_ops + q.throttled_write_ops > 0) s.qos[v->name()] = q;
#define TAPMAP_X(name, help) slot.name += vs.name;
    TAPMAP_IO_STATS_FIELDS(TAPMAP_X)
#undef TAPMAP_X
  }
  // Bytes the physical-location cache saved: logical reads not paid for in pool reads.
  auto eliminated = [](IoStats& st) {
    st.io_eliminated_bytes = st.logical_bytes_read > st.pool_bytes_read ? st.logical_bytes_read - st.pool_bytes_read : 0;
  };
  eliminated(s.host);
  for (auto& [name, st] : s.volumes) eliminated(st);
  return s;
}

void Engine::Describe(const std::string& name, DescribeDone done) {
  client_->Describe(name, [this, name, done](Result<VolumeOpenInfo> info) {
    if (!info.ok()) return done(info.status().WithContext("describe " + name));
    done(Description{info->size_bytes, block_size_, info->read_only});
  });
}

void Engine::SetQos(const std::string& name, const QosLimits& limits) {
  std::vector<std::shared_ptr<Volume>> open;
  {
    std::lock_guard<std::mutex> lock(mu_);
    qos_[name] = limits;
    for (const auto& w : volumes_) {
      auto v = w.lock();
      if (v && v->name() == name) open.push_back(std::move(v));
    }
  }
  // Outside mu_: released waiters start their requests inline.
  for (const auto& v : open) v->qos().SetLimits(limits);
  log_.Infof("qos of %s: %s", name.c_str(), QosLimitsToJson(limits).dump().c_str());
}

QosLimits Engine::Qos(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = qos_.find(name);
  return it == qos_.end() ? options_.qos_default : it->second;
}

bool Engine::connected() const { return client_->connected(); }

void Engine::Flatten(const std::string& name, Flattener::Options options,
                     std::function<void(Result<FlattenStatus>)> started) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = flattens_.find(name);
    if (it != flattens_.end() && !it->second->status().finished()) {
      FlattenStatus status = it->second->status();
      boost::asio::post(io_, [started, status]() { started(status); });
      return;
    }
  }
  Open(name, false, [this, name, options, started](Result<std::shared_ptr<BlockDevice>> device) {
    if (!device.ok()) return started(device.status().WithContext("flatten " + name));
    auto* handle = dynamic_cast<FrontHandle*>(device->get());
    if (handle == nullptr) return started(Status::Internal("flatten " + name + ": not an engine volume"));
    if (handle->standby()) {
      return started(Status::Unavailable("flatten " + name + ": the volume is open read-write on another host; "
                                         "flatten it there"));
    }
    std::shared_ptr<Volume> volume = handle->volume();
    std::shared_ptr<Flattener> job;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = flattens_.find(name);
      if (it != flattens_.end() && !it->second->status().finished()) {
        job = it->second;  // another request started one meanwhile
      } else {
        job = Flattener::Start(std::move(*device), std::move(volume), options, log_);
        flattens_[name] = job;
      }
    }
    started(job->status());
  });
}

Result<FlattenStatus> Engine::FlattenStatusOf(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = flattens_.find(name);
  if (it == flattens_.end()) return Status::NotFound("no flatten of '" + name + "' has run on this host");
  return it->second->status();
}

Status Engine::CancelFlatten(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = flattens_.find(name);
  if (it == flattens_.end() || it->second->status().finished()) {
    return Status::NotFound("no flatten of '" + name + "' is running on this host");
  }
  it->second->Cancel();
  return Status::Ok();
}

}  // namespace tapmap::engine
