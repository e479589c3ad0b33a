// RadosPoolIo against a real one-node Ceph cluster: what it writes reads back, across
// object boundaries too; holes read as zeros; Sync waits for the writes started before
// it; 64 operations in flight; a stopped cluster fails operations within the client
// timeout instead of hanging; destruction with operations in flight drops their
// callbacks.
#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "protocol/pool_format.h"
#include "protocol/pool_location.h"
#include "rados/rados_cluster.h"
#include "tapdisk-map/pool/rados_pool_io.h"
#include "tests/engine/test_util.h"
#include "tests/rados/ceph_cluster.h"

namespace tapmap::pool {
namespace {

using tapmap::testing::CephCluster;
using tapmap::testing::IoThreads;
using tapmap::testing::Waiter;

constexpr uint64_t kObjectBytes = 64 * 1024;  // small, so that I/O crosses objects
constexpr uint64_t kPoolBytes = 64ull << 20;
using Clock = std::chrono::steady_clock;

std::unique_ptr<rados::RadosCluster> Connect(const CephCluster& cluster, const std::string& prefix,
                                             unsigned timeout = 10) {
  auto location = protocol::ParsePoolLocation(cluster.Location(prefix, timeout));
  REQUIRE(location.ok());
  auto connected = rados::RadosCluster::Connect(location->rados);
  INFO(connected.status().ToString());
  REQUIRE(connected.ok());
  return std::move(*connected);
}

std::unique_ptr<PoolIo> Open(boost::asio::io_context& io, const CephCluster& cluster, const std::string& prefix,
                             unsigned timeout = 10) {
  auto pool = CreateRadosPoolIo(io, Connect(cluster, prefix, timeout), {prefix, kObjectBytes, kPoolBytes});
  REQUIRE(pool.ok());
  return std::move(*pool);
}

Status RunRead(PoolIo& pool, uint64_t offset, std::span<uint8_t> buffer) {
  Waiter<Status> w;
  pool.Read(offset, buffer, w.Callback());
  return w.Wait();
}
Status RunWrite(PoolIo& pool, uint64_t offset, std::span<const uint8_t> data) {
  Waiter<Status> w;
  pool.Write(offset, data, w.Callback());
  return w.Wait();
}
Status RunSync(PoolIo& pool) {
  Waiter<Status> w;
  pool.Sync(w.Callback());
  return w.Wait();
}

void Fill(AlignedBuffer& buffer, uint32_t seed) {
  std::mt19937 rng(seed);
  for (size_t i = 0; i < buffer.size(); ++i) buffer.data()[i] = static_cast<uint8_t>(rng());
}

bool AllBytes(const uint8_t* p, size_t n, uint8_t value) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != value) return false;
  }
  return true;
}

TEST_CASE("RadosPoolIo reads back what it wrote, across objects, and reads holes as zeros") {
  CephCluster cluster;
  IoThreads threads;
  auto pool = Open(threads.io(), cluster, "rt");
  CHECK(pool->kind() == "rados");

  AlignedBuffer block(4096), back(4096);
  Fill(block, 1);
  REQUIRE(RunWrite(*pool, protocol::kDataOffset, block.span()).ok());
  REQUIRE(RunRead(*pool, protocol::kDataOffset, back.span()).ok());
  CHECK(std::memcmp(block.data(), back.data(), 4096) == 0);

  // 160 KiB from 60 KiB into an object: 4 KiB + 64 KiB + 64 KiB + 28 KiB in 4 objects.
  const uint64_t at = protocol::kDataOffset + 4 * kObjectBytes + 60 * 1024;
  AlignedBuffer big(160 * 1024), big_back(160 * 1024);
  Fill(big, 2);
  REQUIRE(RunWrite(*pool, at, big.span()).ok());
  REQUIRE(RunRead(*pool, at, big_back.span()).ok());
  CHECK(std::memcmp(big.data(), big_back.data(), big.size()) == 0);
  // The bytes sit where the layout says: object (at / object_bytes), offset at % object_bytes.
  auto direct = Connect(cluster, "rt");
  auto second = direct->ReadObject(protocol::RadosDataObject("rt", at / kObjectBytes + 1), kObjectBytes);
  REQUIRE(second.ok());
  REQUIRE(second->size() == kObjectBytes);
  CHECK(std::memcmp(second->data(), big.data() + 4096, kObjectBytes) == 0);

  // Holes: the rest of the first object and a never-written object read as zeros.
  AlignedBuffer hole(3 * kObjectBytes);
  std::memset(hole.data(), 0xAA, hole.size());
  REQUIRE(RunRead(*pool, protocol::kDataOffset + 4096, hole.span()).ok());
  CHECK(AllBytes(hole.data(), hole.size(), 0));
  AlignedBuffer absent(kObjectBytes);
  std::memset(absent.data(), 0xAA, absent.size());
  REQUIRE(RunRead(*pool, kPoolBytes - kObjectBytes, absent.span()).ok());
  CHECK(AllBytes(absent.data(), absent.size(), 0));

  // WriteV across an object boundary, pieces not contiguous in memory.
  AlignedBuffer a(8192), b(kObjectBytes);
  Fill(a, 3);
  Fill(b, 4);
  const uint64_t v_at = protocol::kDataOffset + 10 * kObjectBytes - 8192;
  Waiter<Status> wv;
  pool->WriteV(v_at, {a.span(), b.span()}, wv.Callback());
  REQUIRE(wv.Wait().ok());
  AlignedBuffer v_back(8192 + kObjectBytes);
  REQUIRE(RunRead(*pool, v_at, v_back.span()).ok());
  CHECK(std::memcmp(v_back.data(), a.data(), 8192) == 0);
  CHECK(std::memcmp(v_back.data() + 8192, b.data(), kObjectBytes) == 0);

  PoolIoCounters c = pool->counters();
  CHECK(c.write_ops == 3);
  CHECK(c.bytes_written == 4096 + big.size() + 8192 + kObjectBytes);
  CHECK(c.read_ops == 5);
}

TEST_CASE("RadosPoolIo rejects unaligned and out-of-range I/O, never calling back inline") {
  CephCluster cluster;
  boost::asio::io_context io;  // not running: any callback must wait for io.run()
  auto pool = Open(io, cluster, "bad");
  AlignedBuffer buffer(8192);
  std::vector<Status> results;
  auto record = [&](Status s) { results.push_back(std::move(s)); };
  pool->Read(protocol::kDataOffset + 100, buffer.span(), record);
  pool->Write(protocol::kDataOffset, buffer.span().subspan(0, 1000), record);
  pool->Read(kPoolBytes - 4096, buffer.span(), record);  // runs past the end
  pool->WriteV(protocol::kDataOffset, {}, record);
  CHECK(results.empty());
  io.run();
  REQUIRE(results.size() == 4);
  CHECK(results[0].code() == StatusCode::kInvalidArgument);
  CHECK(results[1].code() == StatusCode::kInvalidArgument);
  CHECK(results[2].code() == StatusCode::kIoError);
  CHECK(results[3].code() == StatusCode::kInvalidArgument);
}

TEST_CASE("RadosPoolIo Sync waits for the writes started before it, and only those") {
  CephCluster cluster;
  IoThreads threads(1);  // one thread: callbacks run in the order they were posted
  auto pool = Open(threads.io(), cluster, "sync");
  AlignedBuffer data(kObjectBytes);
  Fill(data, 5);

  // No write in flight: Sync completes even while the OSD is frozen.
  REQUIRE(RunWrite(*pool, protocol::kDataOffset, data.span()).ok());
  cluster.Pause();
  auto t0 = Clock::now();
  CHECK(RunSync(*pool).ok());
  CHECK(Clock::now() - t0 < std::chrono::seconds(2));

  // A write stalled by the frozen OSD holds back a later Sync until it completes.
  std::atomic<int> order{0};
  std::atomic<int> write_done_at{0}, sync_done_at{0};
  pool->Write(protocol::kDataOffset + kObjectBytes, data.span(), [&](Status s) {
    CHECK(s.ok());
    write_done_at = ++order;
  });
  Waiter<Status> synced;
  pool->Sync([&](Status s) {
    sync_done_at = ++order;
    synced.Set(std::move(s));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(sync_done_at == 0);  // still waiting for the write
  cluster.Resume();
  CHECK(synced.Wait().ok());
  CHECK(write_done_at == 1);
  CHECK(sync_done_at == 2);
  CHECK(pool->counters().sync_ops == 2);
}

TEST_CASE("RadosPoolIo keeps 64 operations in flight") {
  CephCluster cluster;
  IoThreads threads;
  auto pool = Open(threads.io(), cluster, "qd");
  constexpr int kDepth = 64;
  constexpr size_t kSize = 16 * 1024;
  std::vector<AlignedBuffer> out, in;
  for (int i = 0; i < kDepth; ++i) {
    out.emplace_back(kSize);
    in.emplace_back(kSize);
    Fill(out.back(), 100 + i);
  }
  // Scattered offsets, several per object, some straddling two objects.
  auto offset = [](int i) { return protocol::kDataOffset + uint64_t(i) * 52 * 1024; };
  std::vector<Waiter<Status>> writes(kDepth), syncs(1), reads(kDepth);
  auto t0 = Clock::now();
  for (int i = 0; i < kDepth; ++i) pool->Write(offset(i), out[i].span(), writes[i].Callback());
  pool->Sync(syncs[0].Callback());
  for (int i = 0; i < kDepth; ++i) REQUIRE(writes[i].Wait().ok());
  REQUIRE(syncs[0].Wait().ok());
  for (int i = 0; i < kDepth; ++i) pool->Read(offset(i), in[i].span(), reads[i].Callback());
  for (int i = 0; i < kDepth; ++i) {
    REQUIRE(reads[i].Wait().ok());
    CHECK(std::memcmp(out[i].data(), in[i].data(), kSize) == 0);
  }
  std::printf("QD%d: %d writes + sync + %d reads of 16 KiB in %.3f s\n", kDepth, kDepth, kDepth,
              std::chrono::duration<double>(Clock::now() - t0).count());
}

TEST_CASE("RadosPoolIo fails operations within its timeout once the cluster is gone") {
  CephCluster cluster;
  IoThreads threads;
  auto pool = Open(threads.io(), cluster, "gone", /*timeout=*/3);
  AlignedBuffer data(8192);
  Fill(data, 6);
  REQUIRE(RunWrite(*pool, protocol::kDataOffset, data.span()).ok());
  cluster.Stop();
  auto t0 = Clock::now();
  Status write = RunWrite(*pool, protocol::kDataOffset + 8192, data.span());
  Status read = RunRead(*pool, protocol::kDataOffset + kObjectBytes, data.span());
  double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  INFO(write.ToString() << " / " << read.ToString());
  CHECK(write.code() == StatusCode::kUnavailable);
  CHECK(read.code() == StatusCode::kUnavailable);
  CHECK(seconds < 10);
  std::printf("write and read failed after %.2f s (timeout 3 s each)\n", seconds);
}

TEST_CASE("Destroying a RadosPoolIo with operations in flight waits for them and drops their callbacks") {
  CephCluster cluster;
  IoThreads threads;
  auto pool = Open(threads.io(), cluster, "drop", /*timeout=*/2);
  AlignedBuffer data(8192);
  std::atomic<int> called{0};
  cluster.Pause();
  pool->Write(protocol::kDataOffset, data.span(), [&](Status) { called++; });
  pool->Sync([&](Status) { called++; });
  auto t0 = Clock::now();
  pool.reset();  // waits for the stalled write to time out
  double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  cluster.Resume();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(called == 0);
  CHECK(seconds < 8);
}

}  // namespace
}  // namespace tapmap::pool
