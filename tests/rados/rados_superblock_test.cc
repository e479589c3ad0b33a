// The superblock of a RADOS pool: format, read back, refusal to overwrite without
// --force, and the errors of a missing object, Ceph pool or cluster.
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>

#include "protocol/superblock_file.h"
#include "tests/rados/ceph_cluster.h"

namespace tapmap::protocol {
namespace {

using tapmap::testing::CephCluster;

TEST_CASE("A RADOS pool's superblock round-trips and is not overwritten without force") {
  CephCluster cluster;
  FormatOptions options;
  options.path = cluster.Location("sb");
  options.size_bytes = 1ull << 30;
  options.block_size = 64 * 1024;
  options.object_bytes = 1 << 20;
  auto formatted = FormatPool(options);
  INFO(formatted.status().ToString());
  REQUIRE(formatted.ok());
  CHECK(formatted->object_bytes == 1 << 20);
  CHECK(formatted->total_blocks == ((1ull << 30) - kDataOffset) / (64 * 1024));

  auto read = ReadPoolSuperblock(options.path);
  REQUIRE(read.ok());
  CHECK(read->uuid == formatted->uuid);
  CHECK(read->object_bytes == 1 << 20);
  CHECK(read->block_size == 64 * 1024);
  CHECK(read->pool_bytes == 1ull << 30);

  auto again = FormatPool(options);
  CHECK(again.status().code() == StatusCode::kAlreadyExists);
  CHECK(again.status().message().find(FormatUuid(formatted->uuid)) != std::string::npos);
  CHECK(ReadPoolSuperblock(options.path)->uuid == formatted->uuid);  // untouched

  options.force = true;
  auto forced = FormatPool(options);
  REQUIRE(forced.ok());
  CHECK(forced->uuid != formatted->uuid);
  CHECK(ReadPoolSuperblock(options.path)->uuid == forced->uuid);
}

TEST_CASE("RADOS pool format and open errors") {
  CephCluster cluster;
  FormatOptions options;
  options.path = cluster.Location("bad");
  options.size_bytes = 64ull << 20;
  options.block_size = 64 * 1024;

  // Bad object sizes: below the block size, not a power of two, above the maximum.
  for (uint64_t object_bytes : {uint64_t(32 * 1024), uint64_t(3 << 20), uint64_t(256) << 20}) {
    options.object_bytes = object_bytes;
    CHECK(FormatPool(options).status().code() == StatusCode::kInvalidArgument);
  }
  options.object_bytes = kDefaultObjectBytes;
  options.size_bytes = 0;  // a RADOS pool has no size of its own
  CHECK(FormatPool(options).status().code() == StatusCode::kInvalidArgument);
  options.size_bytes = 64ull << 20;
  options.preallocate = true;
  CHECK(FormatPool(options).status().code() == StatusCode::kNotSupported);

  auto never = ReadPoolSuperblock(cluster.Location("never-formatted"));
  CHECK(never.status().code() == StatusCode::kNotFound);
  CHECK(never.status().message().find("never-formatted.superblock") != std::string::npos);

  auto no_pool = ReadPoolSuperblock("rados:no-such-pool/x?conf=" + cluster.conf() + "&timeout=5");
  CHECK(no_pool.status().code() == StatusCode::kNotFound);
  CHECK(no_pool.status().message().find("no-such-pool") != std::string::npos);

  options.preallocate = false;
  options.path = "rados:nopool";
  CHECK(FormatPool(options).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("An unreachable cluster is an error within the location's timeout") {
  // No cluster needed: a configuration naming a monitor nobody listens on.
  tapmap::testing::TempDir dir;
  std::ofstream(dir / "ceph.conf") << "[global]\nmon host = [v2:127.0.0.1:19,v1:127.0.0.1:20]\n"
                                      "auth client required = none\nkeyring = " << (dir / "keyring") << "\n";
  auto t0 = std::chrono::steady_clock::now();
  auto read = ReadPoolSuperblock("rados:p/x?conf=" + (dir / "ceph.conf") + "&timeout=2");
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(read.status().code() == StatusCode::kUnavailable);
  CHECK(seconds < 6);
}

}  // namespace
}  // namespace tapmap::protocol
