// Client library pieces that need no server: addresses, secret files, login proofs,
// error conversion.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <string>

#include "protocol/auth.h"
#include "protocol/remote_status.h"
#include "protocol/server_address.h"

namespace tapmap::mapserver {
namespace {

TEST_CASE("ParseServerAddress accepts unix and tcp forms") {
  auto u = protocol::ParseServerAddress("unix:/run/tapmap/mapserver.sock");
  REQUIRE(u.ok());
  CHECK(u->kind == protocol::ServerAddress::Kind::kUnix);
  CHECK(u->path == "/run/tapmap/mapserver.sock");
  CHECK(u->ToString() == "unix:/run/tapmap/mapserver.sock");

  auto t = protocol::ParseServerAddress("tcp:storage1.example:7000");
  REQUIRE(t.ok());
  CHECK(t->kind == protocol::ServerAddress::Kind::kTcp);
  CHECK(t->host == "storage1.example");
  CHECK(t->port == 7000);
  CHECK(t->ToKjAddress() == "storage1.example:7000");

  auto v6 = protocol::ParseServerAddress("tcp:[::1]:7001");
  REQUIRE(v6.ok());
  CHECK(v6->host == "::1");
  CHECK(v6->ToString() == "tcp:[::1]:7001");
}

TEST_CASE("ParseServerAddress rejects bad text with invalid-argument") {
  for (const char* bad : {"", "unix:", "udp:x:1", "tcp:host", "tcp::80", "tcp:h:65536", "tcp:h:12x",
                          "tcp:::1:80", "tcp:[::1]80", "tcp:[::1:80"}) {
    INFO(bad);
    auto r = protocol::ParseServerAddress(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("ParseServerAddressList: comma-separated active and standby mapservers, in order") {
  auto two = protocol::ParseServerAddressList("tcp:a.example:7000,unix:/run/b.sock");
  REQUIRE(two.ok());
  REQUIRE(two->size() == 2);
  CHECK((*two)[0].ToString() == "tcp:a.example:7000");
  CHECK((*two)[1].ToString() == "unix:/run/b.sock");
  auto one = protocol::ParseServerAddressList("tcp:[::1]:7001");
  REQUIRE(one.ok());
  REQUIRE(one->size() == 1);
  CHECK((*one)[0].host == "::1");
  // Not a list of addresses, but one unix path with a comma in it.
  auto comma = protocol::ParseServerAddressList("unix:/run/a,b.sock");
  REQUIRE(comma.ok());
  REQUIRE(comma->size() == 1);
  CHECK((*comma)[0].path == "/run/a,b.sock");
  for (const char* bad : {"", ",", "tcp:a:1,", "tcp:a:1,,tcp:b:2", "tcp:a:1,udp:b:2", "tcp:a:1,tcp:b"}) {
    INFO(bad);
    auto r = protocol::ParseServerAddressList(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
  }
}

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/tapmap_client_test.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::string Write(const std::string& name, const std::string& content, mode_t mode) {
    std::string p = path + "/" + name;
    std::ofstream(p) << content;
    ::chmod(p.c_str(), mode);
    return p;
  }
  std::string path;
};

TEST_CASE("ReadSecretFile strips the newline and checks permissions") {
  TempDir dir;
  auto ok = protocol::ReadSecretFile(dir.Write("s1", "hunter2\n", 0600));
  REQUIRE(ok.ok());
  CHECK(*ok == "hunter2");
  auto crlf = protocol::ReadSecretFile(dir.Write("s2", "abc\r\n", 0640));
  REQUIRE(crlf.ok());
  CHECK(*crlf == "abc");

  auto world = protocol::ReadSecretFile(dir.Write("s3", "abc\n", 0644));
  CHECK(world.status().code() == StatusCode::kPermissionDenied);
  auto empty = protocol::ReadSecretFile(dir.Write("s4", "\n", 0600));
  CHECK(empty.status().code() == StatusCode::kInvalidArgument);
  auto missing = protocol::ReadSecretFile(dir.path + "/nope");
  CHECK(missing.status().code() == StatusCode::kNotFound);
}

TEST_CASE("Login proof is HMAC-SHA256 over nonce and host") {
  // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
  std::string data = "what do ya want ";
  auto proof = protocol::ComputeLoginProof("Jefe", reinterpret_cast<const uint8_t*>(data.data()), data.size(),
                                 "for nothing?");
  REQUIRE(proof.size() == protocol::kProofSize);
  static const uint8_t kExpected[32] = {0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e,
                                        0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
                                        0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83,
                                        0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
  CHECK(protocol::ProofsEqual(proof.data(), proof.size(), kExpected, sizeof(kExpected)));
  auto other_host = protocol::ComputeLoginProof("Jefe", reinterpret_cast<const uint8_t*>(data.data()),
                                      data.size(), "for nothing!");
  CHECK_FALSE(protocol::ProofsEqual(proof.data(), proof.size(), other_host.data(), other_host.size()));
  CHECK_FALSE(protocol::ProofsEqual(proof.data(), proof.size(), kExpected, 31));

  auto n1 = protocol::GenerateNonce();
  auto n2 = protocol::GenerateNonce();
  CHECK(n1.size() == protocol::kNonceSize);
  CHECK(n1 != n2);
}

TEST_CASE("Exceptions convert to the Status the server raised") {
  Status s = protocol::StatusFromException(protocol::ToException(Status::Busy("volume 'a' is open rw")));
  CHECK(s == Status::Busy("volume 'a' is open rw"));
  kj::Exception remote(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                       kj::str("remote exception: not-found: volume 'x' does not exist"));
  CHECK(protocol::StatusFromException(remote) == Status::NotFound("volume 'x' does not exist"));
  kj::Exception gone(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                     kj::str("Peer disconnected."));
  CHECK(protocol::StatusFromException(gone).code() == StatusCode::kUnavailable);
  Status caught = protocol::RunCatching([] { throw StatusError(Status::NoSpace("pool full")); });
  CHECK(caught == Status::NoSpace("pool full"));
}

}  // namespace
}  // namespace tapmap::mapserver
