#include "mapserver/rados_pool_fencer.h"

#include <kj/async.h>

#include "protocol/remote_status.h"

namespace tapmap::mapserver {

Result<std::unique_ptr<RadosPoolFencer>> RadosPoolFencer::Create(const rados::RadosOptions& options, Logger log) {
  auto cluster = rados::RadosCluster::Connect(options);
  if (!cluster.ok()) return cluster.status().WithContext("fencing client of pool " + options.pool);
  return std::unique_ptr<RadosPoolFencer>(new RadosPoolFencer(std::move(*cluster), std::move(log)));
}

RadosPoolFencer::~RadosPoolFencer() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
}

kj::Promise<void> RadosPoolFencer::Fence(std::vector<std::string> clients) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  // (Held through a shared_ptr: kj::Own's destructor may throw, a std::thread's
  // callable's may not.)
  auto fulfiller = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(kj::mv(paf.fulfiller));
  std::thread worker([this, clients = std::move(clients), fulfiller]() {
    Status s = Status::Ok();
    for (const std::string& client : clients) {
      int r = cluster_->rados().blocklist_add(client, kBlocklistSeconds);
      if (r < 0) {
        s = rados::RadosStatus(r, "blocklist " + client);
        break;
      }
      log_.Infof("blocklisted pool client %s for %u s", client.c_str(), kBlocklistSeconds);
    }
    if (s.ok()) {
      // The OSDs refuse a blocklisted client once they have the OSD map that says so.
      int r = cluster_->rados().wait_for_latest_osdmap();
      if (r < 0) s = rados::RadosStatus(r, "waiting for the OSD map with the blocklist");
    }
    if (s.ok()) {
      (*fulfiller)->fulfill();
    } else {
      (*fulfiller)->reject(protocol::ToException(s));
    }
  });
  std::lock_guard<std::mutex> lock(mu_);
  threads_.push_back(std::move(worker));
  return kj::mv(paf.promise);
}

}  // namespace tapmap::mapserver
