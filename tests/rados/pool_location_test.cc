// Pool locations: a path stays a path; the rados: form is parsed completely or
// refused with a message naming what is wrong. No cluster needed.
#include <catch2/catch.hpp>

#include "protocol/pool_format.h"
#include "protocol/pool_location.h"

namespace tapmap::protocol {
namespace {

TEST_CASE("A pool location without the rados: scheme is a path") {
  for (const char* text : {"/dev/vg/pool", "pool.img", "./rados/x", "radosx:a/b"}) {
    auto location = ParsePoolLocation(text);
    REQUIRE(location.ok());
    CHECK(location->kind == PoolLocation::Kind::kFile);
    CHECK(location->path == text);
  }
  CHECK(ParsePoolLocation("").status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("A rados: location names the Ceph pool, the object prefix and client options") {
  auto plain = ParsePoolLocation("rados:rbd/tapmap");
  REQUIRE(plain.ok());
  CHECK(plain->is_rados());
  CHECK(plain->rados.pool == "rbd");
  CHECK(plain->prefix == "tapmap");
  CHECK(plain->rados.conf.empty());
  CHECK(plain->rados.client_id.empty());
  CHECK(plain->rados.timeout_seconds == kDefaultRadosTimeoutSeconds);

  auto full = ParsePoolLocation("rados:vms-1/pool_A.2?conf=/etc/ceph/x.conf&id=tapmap&timeout=5");
  REQUIRE(full.ok());
  CHECK(full->rados.pool == "vms-1");
  CHECK(full->prefix == "pool_A.2");
  CHECK(full->rados.conf == "/etc/ceph/x.conf");
  CHECK(full->rados.client_id == "tapmap");
  CHECK(full->rados.timeout_seconds == 5);
}

TEST_CASE("Malformed rados: locations are refused with a message naming the fault") {
  struct Case {
    const char* text;
    const char* says;
  };
  for (const Case& c : {Case{"rados:", "no '/'"}, Case{"rados:pool", "no '/'"},
                        Case{"rados:/prefix", "bad Ceph pool name ''"}, Case{"rados:pool/", "bad object prefix ''"},
                        Case{"rados:po ol/x", "bad Ceph pool name"}, Case{"rados:pool/a/b", "bad object prefix 'a/b'"},
                        Case{"rados:pool/.hidden", "bad object prefix"},
                        Case{"rados:pool/x?timeout=0", "timeout must be 1..3600"},
                        Case{"rados:pool/x?timeout=5s", "timeout must be 1..3600"},
                        Case{"rados:pool/x?timeout=99999", "timeout must be 1..3600"},
                        Case{"rados:pool/x?user=a", "unknown option 'user'"},
                        Case{"rados:pool/x?conf", "is not NAME=VALUE"}, Case{"rados:pool/x?conf=", "is not NAME=VALUE"},
                        Case{"rados:pool/x?id=a&id=b", "given twice"}, Case{"rados:pool/x?id=a b", "bad client name"}}) {
    auto location = ParsePoolLocation(c.text);
    INFO(c.text);
    REQUIRE_FALSE(location.ok());
    CHECK(location.status().code() == StatusCode::kInvalidArgument);
    CHECK(location.status().message().find(c.says) != std::string::npos);
  }
}

TEST_CASE("RADOS object names follow the documented rule") {
  CHECK(RadosSuperblockObject("p") == "p.superblock");
  CHECK(RadosDataObject("p", 0) == "p.data.0000000000000000");
  CHECK(RadosDataObject("vm.pool", 0x1234abcd) == "vm.pool.data.000000001234abcd");
}

}  // namespace
}  // namespace tapmap::protocol
