// TlsCredentials: the PSK key file format (psktool's) and what Load refuses.
#include <catch2/catch.hpp>
#include <fstream>
#include <string>

#include "tapdisk-map/nbd/tls_credentials.h"
#include "tests/support/child_process.h"

namespace tapmap::nbd {
namespace {

TEST_CASE("PSK key files: psktool's IDENTITY:HEXKEY lines") {
  const std::string key32(64, 'a');
  auto keys = ParsePskKeys("alice:" + key32 + "\nbob:" + std::string(32, '0') + "\r\n\n");
  REQUIRE(keys.ok());
  REQUIRE(keys->size() == 2);
  CHECK(keys->at("alice") == std::vector<uint8_t>(32, 0xaa));
  CHECK(keys->at("bob") == std::vector<uint8_t>(16, 0));
  for (const std::string& bad : {std::string(""), std::string("\n\n"), "alice" + key32, ":" + key32,
                                 "alice:" + std::string(30, 'a'), "alice:" + std::string(130, 'a'),
                                 "alice:" + std::string(63, 'a'), "alice:" + std::string(62, 'a') + "zz",
                                 "al ice:" + key32, "al\x1b" "ice:" + key32, "a:" + key32 + "\na:" + key32}) {
    INFO(bad);
    CHECK(ParsePskKeys(bad).status().code() == StatusCode::kInvalidArgument);
  }
  // Errors name the line, never the key.
  auto error = ParsePskKeys("alice:" + key32 + "\nbob:" + std::string(62, 'b') + "zz");
  CHECK(error.status().message().find("line 2") != std::string::npos);
  CHECK(error.status().message().find("bbbb") == std::string::npos);
}

TEST_CASE("TlsCredentials::Load: one kind of credentials, readable files") {
  tapmap::testing::TempDir dir("nbd-tls-creds");
  std::ofstream(dir / "keys.psk") << "alice:" << std::string(64, 'c') << "\n";
  auto psk = TlsCredentials::Load({.certificates_dir = "", .verify_peer = true, .psk_file = dir / "keys.psk"});
  REQUIRE(psk.ok());
  CHECK((*psk)->description().find("PSK, 1 identity") != std::string::npos);
  CHECK_FALSE(TlsCredentials::Load({.certificates_dir = "", .verify_peer = true, .psk_file = ""}).ok());
  CHECK_FALSE(
      TlsCredentials::Load({.certificates_dir = dir.path(), .verify_peer = true, .psk_file = dir / "keys.psk"}).ok());
  auto missing = TlsCredentials::Load({.certificates_dir = dir.path(), .verify_peer = true, .psk_file = ""});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().message().find("server-cert.pem") != std::string::npos);
  CHECK_FALSE(TlsCredentials::Load({.certificates_dir = "", .verify_peer = true, .psk_file = dir / "nope"}).ok());
}

}  // namespace
}  // namespace tapmap::nbd
