// The pool superblock: encoding, validation and `format` safety.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "protocol/superblock_file.h"
#include "protocol/pool_format.h"
#include "store_fixture.h"

namespace tapmap::mapserver {
namespace {

protocol::Superblock Sample() {
  protocol::Superblock sb;
  sb.block_size = 65536;
  for (int i = 0; i < 16; ++i) sb.uuid[i] = static_cast<uint8_t>(i * 7);
  sb.pool_bytes = 64 << 20;
  sb.data_offset = protocol::kDataOffset;
  sb.total_blocks = ((64 << 20) - protocol::kDataOffset) / 65536;
  sb.created_unix_seconds = 1700000000;
  return sb;
}

TEST_CASE("Superblock round-trips through its encoding") {
  protocol::Superblock sb = Sample();
  auto bytes = protocol::EncodeSuperblock(sb);
  CHECK(std::string(reinterpret_cast<const char*>(bytes.data()), 8) == "TAPMAPPL");
  auto back = protocol::DecodeSuperblock(bytes.data(), bytes.size());
  REQUIRE(back.ok());
  CHECK(back->block_size == sb.block_size);
  CHECK(back->uuid == sb.uuid);
  CHECK(back->pool_bytes == sb.pool_bytes);
  CHECK(back->total_blocks == sb.total_blocks);
  CHECK(back->created_unix_seconds == sb.created_unix_seconds);
  CHECK(back->BlockOffset(3) == protocol::kDataOffset + 3 * 65536);
}

TEST_CASE("Superblock records a RADOS pool's object size at offset 64, 0 for a file pool") {
  protocol::Superblock sb = Sample();
  auto file = protocol::EncodeSuperblock(sb);
  CHECK(protocol::DecodeSuperblock(file.data(), file.size())->object_bytes == 0);
  sb.object_bytes = 4 << 20;
  auto rados = protocol::EncodeSuperblock(sb);
  CHECK(rados[protocol::kObjectBytesOffset + 2] == 0x40);  // 4 MiB, little-endian
  auto back = protocol::DecodeSuperblock(rados.data(), rados.size());
  REQUIRE(back.ok());
  CHECK(back->object_bytes == 4 << 20);
  for (uint64_t bad : {uint64_t(32 * 1024), uint64_t(3 << 20), protocol::kMaxObjectBytes * 2}) {
    sb.object_bytes = bad;  // below the block size, not a power of two, too large
    auto b = protocol::EncodeSuperblock(sb);
    CHECK(protocol::DecodeSuperblock(b.data(), b.size()).status().code() == StatusCode::kCorruption);
  }
}

TEST_CASE("Superblock decoding rejects damage") {
  auto bytes = protocol::EncodeSuperblock(Sample());
  SECTION("flipped bit -> corruption") {
    bytes[20] ^= 1;
    CHECK(protocol::DecodeSuperblock(bytes.data(), bytes.size()).status().code() == StatusCode::kCorruption);
  }
  SECTION("no magic -> not-found") {
    bytes[0] = 'X';
    CHECK(protocol::DecodeSuperblock(bytes.data(), bytes.size()).status().code() == StatusCode::kNotFound);
  }
  SECTION("short buffer -> not-found") {
    CHECK(protocol::DecodeSuperblock(bytes.data(), 100).status().code() == StatusCode::kNotFound);
  }
  SECTION("inconsistent geometry with a valid checksum -> corruption") {
    protocol::Superblock bad = Sample();
    bad.total_blocks = bad.total_blocks + 1;
    auto b = protocol::EncodeSuperblock(bad);
    CHECK(protocol::DecodeSuperblock(b.data(), b.size()).status().code() == StatusCode::kCorruption);
  }
}

TEST_CASE("FormatPool writes a readable superblock and refuses to overwrite it") {
  testing::TempDir dir;
  protocol::FormatOptions options;
  options.path = dir.path() + "/pool";
  options.size_bytes = 16 << 20;
  options.block_size = 4096;
  auto sb = protocol::FormatPool(options);
  REQUIRE(sb.ok());
  CHECK(sb->total_blocks == ((16 << 20) - protocol::kDataOffset) / 4096);
  auto read = protocol::ReadPoolSuperblock(options.path);
  REQUIRE(read.ok());
  CHECK(read->uuid == sb->uuid);

  auto again = protocol::FormatPool(options);
  CHECK(again.status().code() == StatusCode::kAlreadyExists);
  options.force = true;
  auto forced = protocol::FormatPool(options);
  REQUIRE(forced.ok());
  CHECK(forced->uuid != sb->uuid);
}

TEST_CASE("FormatPool leaves a pool file sparse unless asked to preallocate it") {
  testing::TempDir dir;
  protocol::FormatOptions options;
  options.path = dir.path() + "/sparse";
  options.size_bytes = 32 << 20;
  REQUIRE(protocol::FormatPool(options).ok());
  struct stat sparse;
  REQUIRE(::stat(options.path.c_str(), &sparse) == 0);
  CHECK(static_cast<uint64_t>(sparse.st_size) == options.size_bytes);
  CHECK(static_cast<uint64_t>(sparse.st_blocks) * 512 < options.size_bytes / 2);

  options.path = dir.path() + "/preallocated";
  options.preallocate = true;
  auto sb = protocol::FormatPool(options);
  REQUIRE(sb.ok());
  struct stat full;
  REQUIRE(::stat(options.path.c_str(), &full) == 0);
  CHECK(static_cast<uint64_t>(full.st_size) == options.size_bytes);
  CHECK(static_cast<uint64_t>(full.st_blocks) * 512 >= options.size_bytes);
  auto read = protocol::ReadPoolSuperblock(options.path);  // preallocation keeps the superblock
  REQUIRE(read.ok());
  CHECK(read->uuid == sb->uuid);
}

TEST_CASE("FormatPool validates its arguments") {
  testing::TempDir dir;
  protocol::FormatOptions options;
  options.path = dir.path() + "/pool";
  options.size_bytes = 16 << 20;
  options.block_size = 3000;
  CHECK(protocol::FormatPool(options).status().code() == StatusCode::kInvalidArgument);
  options.block_size = 2 << 20;
  CHECK(protocol::FormatPool(options).status().code() == StatusCode::kInvalidArgument);
  options.block_size = 4096;
  options.size_bytes = protocol::kDataOffset;  // no room for a block
  CHECK(protocol::FormatPool(options).status().code() == StatusCode::kInvalidArgument);
  options.size_bytes = 0;  // required for files
  CHECK(protocol::FormatPool(options).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("ReadPoolSuperblock notices a truncated pool") {
  testing::TempDir dir;
  protocol::FormatOptions options;
  options.path = dir.path() + "/pool";
  options.size_bytes = 16 << 20;
  options.block_size = 4096;
  REQUIRE(protocol::FormatPool(options).ok());
  REQUIRE(::truncate(options.path.c_str(), 8 << 20) == 0);
  CHECK(protocol::ReadPoolSuperblock(options.path).status().code() == StatusCode::kCorruption);
}

}  // namespace
}  // namespace tapmap::mapserver
