// Test fixture: a real mapserver (MappingService + Server) listening on a unix socket
// in a temporary directory, and clients connecting to it through the client library,
// all on this thread's KJ event loop.
#pragma once

#include <kj/async-io.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "protocol/connection.h"
#include "protocol/remote_status.h"
#include "mapserver/mapping_service.h"
#include "mapserver/server.h"
#include "store_fixture.h"

namespace tapmap::mapserver::testing {

inline constexpr const char* kSecret = "correct horse battery staple";

// A MapCallback that records what it is told; it can be told to stall recalls.
class RecordingCallback final : public proto::MapCallback::Server {
 public:
  struct Recall {
    std::vector<ByteRange> ranges;
    proto::RecallReason reason;
  };
  struct Log {
    std::vector<Recall> recalls;
    std::vector<std::string> revokes;
    std::vector<uint64_t> sizes;
    std::vector<uint64_t> promotions;  // lease epochs
    bool stall_recalls = false;
  };
  explicit RecordingCallback(std::shared_ptr<Log> log) : log_(std::move(log)) {}

  kj::Promise<void> recall(RecallContext context) override {
    Recall r;
    for (auto range : context.getParams().getRanges()) {
      r.ranges.push_back(ByteRange{range.getOffset(), range.getLength()});
    }
    r.reason = context.getParams().getReason();
    log_->recalls.push_back(r);
    if (log_->stall_recalls) return kj::NEVER_DONE;
    return kj::READY_NOW;
  }
  kj::Promise<void> revoke(RevokeContext context) override {
    log_->revokes.push_back(context.getParams().getReason().cStr());
    return kj::READY_NOW;
  }
  kj::Promise<void> sizeChanged(SizeChangedContext context) override {
    log_->sizes.push_back(context.getParams().getSizeBytes());
    return kj::READY_NOW;
  }
  kj::Promise<void> promoted(PromotedContext context) override {
    log_->promotions.push_back(context.getParams().getLeaseEpoch());
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<Log> log_;
};

class RpcFixture {
 public:
  // `fencer` (not owned; may be null): the service's PoolFencer (ServiceOptions::fencer).
  explicit RpcFixture(uint64_t blocks = 4096, uint32_t block_size = 4096, std::string listen = "",
                      PoolFencer* fencer = nullptr)
      : store_(blocks, block_size), io_(kj::setupAsyncIo()), fencer_(fencer) {
    Start(listen.empty() ? "unix:" + meta_parent() + "/sock" : listen);
  }

  // A restart of the server: every connection and all in-memory state go; the metadata
  // (and so the durable lease records) stays. Listens at the same address again.
  void Restart() {
    server_.reset();
    service_.reset();
    store_.Reopen();
    Start(address_.ToString());
  }
  ~RpcFixture() {
    server_.reset();
    service_.reset();
  }

  kj::AsyncIoContext& io() { return io_; }
  kj::WaitScope& ws() { return io_.waitScope; }
  StoreFixture& store() { return store_; }
  MappingService& service() { return *service_; }
  Server& server() { return *server_; }
  const protocol::ServerAddress& address() const { return address_; }

  kj::Own<protocol::Connection> Connect(const std::string& host = "host1",
                              const std::string& secret = kSecret, uint64_t instance = 0,
                              const std::string& pool_client = "") {
    auto conn = protocol::Connection::ConnectBlocking(io_, address_, protocol::ClientAuth{host, secret, nullptr, pool_client},
                                                      instance);
    INFO(conn.status().ToString());
    REQUIRE(conn.ok());
    return kj::mv(*conn);
  }

  // Runs the event loop until `pred` holds (true) or `timeout` passes (false).
  bool WaitUntil(const std::function<bool()>& pred, kj::Duration timeout = 10 * kj::SECONDS) {
    auto deadline = io_.provider->getTimer().now() + timeout;
    while (!pred()) {
      if (io_.provider->getTimer().now() >= deadline) return false;
      io_.provider->getTimer().afterDelay(5 * kj::MILLISECONDS).wait(io_.waitScope);
    }
    return true;
  }

  // The host lease time of the fixture's server (instances expire 1.1x after).
  static constexpr kj::Duration kLeaseTime = 1 * kj::SECONDS;

  // Runs the event loop a little (lets fire-and-forget calls land).
  void Spin() {
    for (int i = 0; i < 20; ++i) {
      io_.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(io_.waitScope);
    }
  }

 private:
  void Start(const std::string& listen) {
    ServiceOptions options;
    options.callback_timeout = 300 * kj::MILLISECONDS;
    options.lease_time = kLeaseTime;
    options.fencer = fencer_;
    options.fence_retry = 20 * kj::MILLISECONDS;
    service_ = std::make_unique<MappingService>(store_.store(), kSecret, io_.provider->getTimer(),
                                                Logger("mapserver", LogLevel::kError), options);
    ServerLimits limits;
    limits.login_timeout = 500 * kj::MILLISECONDS;
    server_ = std::make_unique<Server>(io_, *service_, Logger("mapserver", LogLevel::kError), limits);
    auto address = protocol::ParseServerAddress(listen);
    REQUIRE(address.ok());
    REQUIRE(server_->Listen(*address, io_.waitScope).ok());
    address_ = *protocol::ParseServerAddress(server_->bound_address());
  }

  std::string meta_parent() const {
    std::string m = store_.meta_dir();
    return m.substr(0, m.rfind('/'));
  }

  StoreFixture store_;
  kj::AsyncIoContext io_;
  PoolFencer* fencer_;
  std::unique_ptr<MappingService> service_;
  std::unique_ptr<Server> server_;
  protocol::ServerAddress address_;
};

// The Status a promise settles with.
template <typename T>
Status StatusOf(kj::Promise<T>&& promise, kj::WaitScope& ws) {
  return protocol::RunCatching([&] { promise.wait(ws); });
}

}  // namespace tapmap::mapserver::testing
