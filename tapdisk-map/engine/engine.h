// Engine: the tapdisk-map request engine, one per host process. It opens volumes for
// the front ends (BlockDeviceOpener) and owns what they share: the connection to the
// mapserver (MappingClient), the pool (PoolIo) and the data cache keyed by physical
// block.
//
//   boost::asio::io_context io;                       // owned by the daemon
//   EngineOptions opts;
//   opts.server = "unix:/run/tapmap/mapserver.sock";
//   opts.pool_path = "/dev/vg/pool";
//   auto engine = Engine::Create(io, opts, logger);   // Result<std::unique_ptr<Engine>>
//   (*engine)->Open("vm1", /*read_only=*/false, [](Result<std::shared_ptr<BlockDevice>> dev) {...});
//
// Lifetime: the io_context must outlive the engine. Before destroying the engine, drop
// every BlockDevice and call Shutdown() (which waits for their final commits); then
// stop the io_context threads, then destroy the engine.
//
// Threading: every method is thread-safe.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/logging.h"
#include "common/status.h"
#include "tapdisk-map/engine/block_device.h"
#include "tapdisk-map/engine/data_cache.h"
#include "tapdisk-map/engine/fenced_pool_io.h"
#include "tapdisk-map/engine/flattener.h"
#include "tapdisk-map/engine/mapping_client.h"
#include "tapdisk-map/engine/qos_limiter.h"
#include "tapdisk-map/engine/stats.h"
#include "tapdisk-map/engine/writer_volumes.h"
#include "tapdisk-map/pool/pool_io.h"

namespace tapmap::engine {

class Volume;
class OpenVolume;

struct EngineOptions {
  std::string server = "unix:/run/tapmap/mapserver.sock";  // mapserver address
  std::string host;                            // login name; "" = this machine's host name
  std::string secret_file = "/etc/tapmap/secret";
  // Mutual TLS to a TCP mapserver (protocol/tls.h: ca.crt, host.crt, host.key); "" =
  // the shared secret. With TLS the login name is the certificate's (`host` must be
  // "" or the same).
  std::string tls_dir;
  std::string pool_path;                       // the pool file or device (required)
  uint64_t cache_size_bytes = 0;               // data cache; 0 = DefaultCacheSize()
  pool::PoolIoKind pool_io = pool::PoolIoKind::kAuto;
  std::chrono::milliseconds unavailable_timeout{60000};  // I/O waits this long for the server
  // Lazy group commit: a written block's map commit starts at the latest this much
  // later (sooner on a flush or memory pressure); see VolumeContext.
  std::chrono::milliseconds commit_interval{200};
  uint64_t map_readahead_bytes = 64ull << 20;  // map fetched around a miss
  // Bound on written-but-uncommitted data kept in memory; copy-on-write writes wait
  // beyond it. 0 = max(256 MiB, cache_size_bytes / 4).
  uint64_t max_pinned_bytes = 0;
  // QoS limits of every volume that has none of its own (SetQos); zero = unlimited.
  QosLimits qos_default;
  // Makes each volume's QoS clock (null: the steady clock; tests inject a fake one).
  std::function<std::unique_ptr<QosClock>()> qos_clock;
};

// 1/8 of physical memory, at least 64 MiB.
uint64_t DefaultCacheSize();

class Engine final : public BlockDeviceOpener {
 public:
  // Opens the pool, checks its superblock, starts the mapping client (which connects
  // in the background). Fails on a bad option, an unreadable secret or pool.
  static Result<std::unique_ptr<Engine>> Create(boost::asio::io_context& io, EngineOptions options,
                                               const Logger& log);
  ~Engine() override;

  // Opens a volume (waits up to unavailable_timeout for the mapserver). The device
  // stays open while the front end holds it; dropping the last device of a volume
  // commits what is pending and closes the volume at the server.
  //
  // Front ends of this host share one open volume: a second Open of a volume that is
  // already open here (or being opened) gets a handle on the same Volume — so the
  // vbd of a PV disk and the NBD export of the same volume (an HVM guest's emulated
  // disk) coexist on the one read-write lease — read-only if asked so. Only a
  // read-write Open of a volume open read-only here opens it again, read-write.
  //
  // An Open of a volume whose last read-write front end here was just dropped waits
  // until that opener's final commit and close at the server are done (so it is never
  // refused busy by its own host's previous opener, and reads what was committed),
  // then opens it; after unavailable_timeout of waiting it fails with unavailable.
  void Open(const std::string& name, bool read_only, OpenDone done) override;

  // Size, block size and read-only-ness of `name` as the mapserver reports them; opens
  // nothing and takes no lease (for NBD_OPT_INFO).
  void Describe(const std::string& name, DescribeDone done) override;

  // Calls `done` (on an io_context thread) once every volume whose BlockDevice was
  // dropped has finished its final commit and close.
  void Shutdown(std::function<void()> done);

  StatsSnapshot Stats() const;
  bool connected() const;

  // Sets the QoS limits of volume `name` (open or not) for this daemon's lifetime: its
  // open Volumes apply them to their next requests (waiters re-examined at once), and
  // later opens start with them. Replaces qos_default for that volume.
  void SetQos(const std::string& name, const QosLimits& limits);
  // The limits `name` has (or would get when opened).
  QosLimits Qos(const std::string& name) const;
  uint32_t block_size() const { return block_size_; }

  // Flattens volume `name` (flattener.h): opens it read-write here — sharing the open
  // of this host's front ends if it has one — and starts a Flattener; `started` gets
  // its first status. Fails read-only for a snapshot, unavailable if another host
  // holds the volume read-write (flatten it there), and like Open otherwise. A second
  // Flatten of a volume whose job is still running here answers that job's status.
  void Flatten(const std::string& name, Flattener::Options options,
               std::function<void(Result<FlattenStatus>)> started);
  // The running or last finished flatten job of `name` on this host; not-found if none.
  Result<FlattenStatus> FlattenStatusOf(const std::string& name) const;
  // Asks the running job of `name` to stop (Flattener::Cancel); not-found if none runs.
  Status CancelFlatten(const std::string& name);

 private:
  Engine(boost::asio::io_context& io, EngineOptions options, const Logger& log);
  // Creates the data cache on first login; checks the server's pool is ours.
  Status SetUpPool(const PoolInfo& info);

  boost::asio::io_context& io_;
  const EngineOptions options_;
  Logger log_;
  std::string pool_uuid_;     // from the superblock
  uint32_t block_size_ = 0;   // from the superblock
  uint64_t data_start_ = 0, data_end_ = 0;
  std::unique_ptr<pool::PoolIo> pool_;
  std::unique_ptr<MappingClient> client_;
  // The pool as volumes see it: no I/O while the host lease is fenced.
  std::unique_ptr<FencedPoolIo> fenced_pool_;
  std::shared_ptr<IoCounters> host_counters_;
  std::shared_ptr<std::atomic<uint64_t>> pinned_bytes_;

  mutable std::mutex mu_;
  std::shared_ptr<DataCache> cache_;  // shared with the volumes (VolumeContext)
  std::vector<std::weak_ptr<Volume>> volumes_;
  // The open volume of each name, shared by front ends (see Open).
  std::map<std::string, std::weak_ptr<OpenVolume>> open_;
  // Limits set by SetQos, by volume name (guarded by mu_).
  std::map<std::string, QosLimits> qos_;
  // Flatten jobs by volume name, running or the last finished one (guarded by mu_).
  std::map<std::string, std::shared_ptr<Flattener>> flattens_;
  // Opens in flight per name; later Opens of the name wait for the first.
  std::map<std::string, std::vector<std::pair<bool, OpenDone>>> opening_;
  // The read-write Volumes alive here; shared with their deleters, which may run after
  // the engine is gone.
  const std::shared_ptr<WriterVolumes> writers_ = std::make_shared<WriterVolumes>();

  // Serves `done` from open_ if it can; false if the caller must open the volume.
  bool OpenShared(const std::string& name, bool read_only, const OpenDone& done);
  // If a read-write Volume of `name` is still closing here, parks `done` until it has
  // closed (then Opens again) or unavailable_timeout passes (then fails it); true if
  // parked. Called under mu_, after OpenShared found nothing to share.
  bool WaitForClose(const std::string& name, bool read_only, const OpenDone& done);
  void OpenAtServer(const std::string& name, bool read_only, OpenDone done);
  void FinishOpening(const std::string& name);
};

}  // namespace tapmap::engine
