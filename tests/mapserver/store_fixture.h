// Test fixture: a temporary directory holding a freshly formatted sparse pool file and
// its metadata, opened as a VolumeStore. Everything is removed at destruction.
#pragma once

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <memory>
#include <string>

#include "common/logging.h"
#include "mapserver/fsck.h"
#include "protocol/superblock_file.h"
#include "mapserver/volume_store.h"

namespace tapmap::mapserver::testing {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/tapmap_mapserver_test.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class StoreFixture {
 public:
  // A pool of `blocks` blocks of `block_size` bytes.
  explicit StoreFixture(uint64_t blocks = 4096, uint32_t block_size = 4096) {
    protocol::FormatOptions options;
    options.path = pool_path();
    options.size_bytes = protocol::kDataOffset + blocks * block_size;
    options.block_size = block_size;
    auto sb = protocol::FormatPool(options);
    REQUIRE(sb.ok());
    sb_ = *sb;
    REQUIRE(VolumeStore::InitMetadata(sb_, meta_dir(), false).ok());
    Reopen();
  }

  std::string pool_path() const { return dir_.path() + "/pool"; }
  std::string meta_dir() const { return dir_.path() + "/meta"; }
  const protocol::Superblock& sb() const { return sb_; }
  VolumeStore& store() { return *store_; }

  // Closes and reopens the store (as a server restart would).
  void Reopen() {
    store_.reset();
    auto store = VolumeStore::Open(sb_, meta_dir(), Logger("test", LogLevel::kWarning));
    REQUIRE(store.ok());
    store_ = std::move(*store);
  }
  void Close() { store_.reset(); }

  FsckReport Fsck() { return CheckMetadata(store_->metadata(), sb_); }
  void RequireClean() {
    FsckReport report = Fsck();
    for (const auto& p : report.problems) UNSCOPED_INFO(p);
    REQUIRE(report.clean());
  }
  uint64_t FreeBlocks() {
    auto stats = store_->Stats();
    REQUIRE(stats.ok());
    return stats->free_blocks;
  }

 private:
  TempDir dir_;
  protocol::Superblock sb_;
  std::unique_ptr<VolumeStore> store_;
};

}  // namespace tapmap::mapserver::testing
