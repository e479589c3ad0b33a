// RadosPoolFencer: PoolFencer on a RADOS pool — `osd blocklist add` of each client
// address (librados Rados::blocklist_add, for kBlocklistSeconds), then waits for the
// latest OSD map, so that every OSD refuses the blocklisted clients before the
// promise resolves. The librados calls block, so each Fence runs on a thread of its
// own and hands the outcome back to the event loop (kj cross-thread fulfiller);
// fences are rare (a host lost), threads are joined at destruction.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/logging.h"
#include "common/status.h"
#include "mapserver/pool_fencer.h"
#include "rados/rados_cluster.h"

namespace tapmap::mapserver {

class RadosPoolFencer final : public PoolFencer {
 public:
  // How long a blocklist entry lasts. A blocklisted client is never used again (a host
  // that fenced itself logs in under a new librados client); the entry only has to
  // outlive every operation of the old one still in flight, which librados gives up on
  // after its op timeout (rados_osd_op_timeout, seconds).
  static constexpr uint32_t kBlocklistSeconds = 3600;

  // Connects to the pool's cluster (its own client, for monitor commands).
  static Result<std::unique_ptr<RadosPoolFencer>> Create(const rados::RadosOptions& options, Logger log);
  ~RadosPoolFencer() override;

  kj::Promise<void> Fence(std::vector<std::string> clients) override;

 private:
  RadosPoolFencer(std::unique_ptr<rados::RadosCluster> cluster, Logger log)
      : cluster_(std::move(cluster)), log_(std::move(log)) {}

  std::unique_ptr<rados::RadosCluster> cluster_;
  Logger log_;
  std::mutex mu_;
  std::vector<std::thread> threads_;  // guarded by mu_
};

}  // namespace tapmap::mapserver
