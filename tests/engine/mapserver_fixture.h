// A real mapserver for engine integration tests: `mapserver format` + `serve` on a
// unix socket in a temp dir (killable with -9 and restartable), an admin session to
// create/snapshot/clone volumes, and an Engine factory pointing at it.
//
// Compiled with TAPMAP_TEST_RADOS_POOL (tests/rados: rados_engine_integration_test) the
// pool is a RADOS pool in a one-node Ceph cluster of the fixture's own instead of a file.
#pragma once

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <kj/async-io.h>
#include <memory>
#include <cstring>
#include <string>
#include <thread>

#include "protocol/connection.h"
#include "protocol/remote_status.h"
#include "tapdisk-map/engine/engine.h"
#include "tests/engine/test_util.h"
#include "tests/support/child_process.h"
#include "tests/support/wait_until.h"
#ifdef TAPMAP_TEST_RADOS_POOL
#include "tests/rados/ceph_cluster.h"
#endif

namespace tapmap::testing {

class MapserverFixture {
 public:
  explicit MapserverFixture(std::string pool_size = "512M", std::string block_size = "64K")
      : dir_("tapmap-engine-it") {
    {
      std::ofstream f(secret_path());
      f << "engine test secret\n";
    }
    ::chmod(secret_path().c_str(), 0600);
    std::ofstream(dir_ / "tapmap.conf") << "# empty: defaults only\n";
    std::string out;
    int rc = RunCommand({std::string(TAPMAP_BIN_DIR) + "/mapserver", "format", "--pool", pool_path(), "--meta",
                         dir_ / "meta", "--size", pool_size, "--block-size", block_size},
                        &out);
    INFO(out);
    REQUIRE(rc == 0);
    Start();
  }
  ~MapserverFixture() { admin_ = nullptr; }

  void Start() {
    ::unlink(socket_path().c_str());
    server_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{std::string(TAPMAP_BIN_DIR) + "/mapserver", "serve", "--pool", pool_path(),
                                 "--meta", dir_ / "meta", "--listen", "unix:" + socket_path(), "--secret-file",
                                 secret_path(), "--config", dir_ / "tapmap.conf"},
        dir_ / "mapserver.log");
    REQUIRE(WaitForPath(socket_path(), std::chrono::seconds(30)));
    // The socket file appears at bind(); wait until the server accepts connections.
    REQUIRE(WaitUntil([&] { return Connectable(); }, std::chrono::seconds(30), std::chrono::milliseconds(10)));
  }
  bool Connectable() const {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path().c_str(), sizeof(addr.sun_path) - 1);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(fd);
    return ok;
  }
  void Kill9() {
    admin_ = nullptr;
    server_->Signal(SIGKILL);
    server_->Wait(std::chrono::seconds(30));
    server_.reset();
  }

#ifdef TAPMAP_TEST_RADOS_POOL
  std::string pool_path() const { return ceph_.Location("engine-it"); }
#else
  std::string pool_path() const { return dir_ / "pool"; }
#endif
  std::string socket_path() const { return dir_ / "ms.sock"; }
  std::string secret_path() const { return dir_ / "secret"; }
  std::string log_path() const { return dir_ / "mapserver.log"; }

  engine::EngineOptions EngineOptions(uint64_t cache = 64ull << 20) const {
    engine::EngineOptions o;
    o.server = "unix:" + socket_path();
    o.host = "testhost";
    o.secret_file = secret_path();
    o.pool_path = pool_path();
    o.cache_size_bytes = cache;
    o.unavailable_timeout = std::chrono::seconds(60);
    return o;
  }

  // Admin calls on this thread's KJ loop.
  proto::Session::Client Session() {
    if (!admin_) {
      auto addr = protocol::ParseServerAddress("unix:" + socket_path());
      REQUIRE(addr.ok());
      auto conn = protocol::Connection::ConnectBlocking(io_, *addr, "admin", "engine test secret");
      INFO(conn.status().ToString());
      REQUIRE(conn.ok());
      admin_ = kj::mv(*conn);
    }
    return admin_->session();
  }
  void Create(const std::string& name, uint64_t size) {
    auto req = Session().createRequest();
    req.setName(name);
    req.setSizeBytes(size);
    Check(req.send());
  }
  void Snapshot(const std::string& source, const std::string& name) {
    auto req = Session().snapshotRequest();
    req.setSource(source);
    req.setName(name);
    Check(req.send());
  }
  void Resize(const std::string& name, uint64_t size) {
    auto req = Session().resizeRequest();
    req.setName(name);
    req.setSizeBytes(size);
    req.setAllowShrink(false);
    Check(req.send());
  }
  void Clone(const std::string& source, const std::string& name) {
    auto req = Session().cloneRequest();
    req.setSource(source);
    req.setName(name);
    Check(req.send());
  }

 private:
  template <typename P>
  void Check(P&& promise) {
    Status s = protocol::RunCatching([&] { promise.wait(io_.waitScope); });
    INFO(s.ToString());
    REQUIRE(s.ok());
  }

#ifdef TAPMAP_TEST_RADOS_POOL
  CephCluster ceph_;  // first in, last out: the daemons and engines use it
#endif
  tapmap::testing::TempDir dir_;
  std::unique_ptr<ChildProcess> server_;
  kj::AsyncIoContext io_ = kj::setupAsyncIo();
  kj::Own<protocol::Connection> admin_;
};

// Synchronous wrappers over the asynchronous BlockDevice API.
inline std::shared_ptr<engine::BlockDevice> OpenDevice(engine::Engine& e, const std::string& name, bool ro) {
  Waiter<Result<std::shared_ptr<engine::BlockDevice>>> w;
  e.Open(name, ro, w.Callback());
  auto r = w.Wait();
  INFO(name << ": " << r.status().ToString());
  REQUIRE(r.ok());
  return *r;
}
inline Status ReadSync(engine::BlockDevice& d, uint64_t off, std::vector<uint8_t>& buf) {
  Waiter<Status> w;
  d.Read(off, buf, w.Callback());
  return w.Wait();
}
inline Status WriteSync(engine::BlockDevice& d, uint64_t off, const std::vector<uint8_t>& buf, bool fua = false) {
  Waiter<Status> w;
  d.Write(off, buf, fua, w.Callback());
  return w.Wait();
}
inline Status FlushSync(engine::BlockDevice& d) {
  Waiter<Status> w;
  d.Flush(w.Callback());
  return w.Wait();
}
inline void ShutdownSync(engine::Engine& e) {
  Waiter<bool> w;
  e.Shutdown([&w]() { w.Set(true); });
  w.Wait();
}

// Deterministic content: byte i of the volume written in round `round`.
inline uint8_t Pattern(uint64_t offset, uint32_t round) {
  uint64_t x = (offset / 512) * 2654435761u + round * 40503u + (offset % 512);
  return static_cast<uint8_t>(x ^ (x >> 8) ^ (x >> 16));
}
inline std::vector<uint8_t> PatternBuf(uint64_t off, size_t len, uint32_t round) {
  std::vector<uint8_t> b(len);
  for (size_t i = 0; i < len; i++) b[i] = Pattern(off + i, round);
  return b;
}

}  // namespace tapmap::testing
