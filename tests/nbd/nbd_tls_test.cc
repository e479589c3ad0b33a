// NBD over TLS (NBD_OPT_STARTTLS) on the real tapdisk-map, with real clients: qemu-io
// with tls-creds-psk / tls-creds-x509 objects and nbdinfo with nbds:// URIs, against a
// TCP listener that requires TLS; what a client without TLS or with the wrong
// credentials gets (refused, cleanly); and that a TCP listener without TLS is refused at
// start unless --nbd-insecure-plaintext-tcp. Credentials are made at test time with the
// openssl CLI (make_tls_credentials.sh).
#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "tests/nbd/daemon_fixture.h"
#include "tests/nbd/nbd_test_client.h"

namespace tapmap::nbd {
namespace {

using testing::DaemonFixture;
using testing::NbdTestClient;
using testing::Run;
using tapmap::testing::RunCommand;
using tapmap::testing::TempDir;

// A loopback port nothing listens on now.
uint16_t FreePort() {
  UniqueFd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(::getsockname(probe.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  return ntohs(addr.sin_port);
}

UniqueFd ConnectTcp(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

// Test credentials in a temp dir (see make_tls_credentials.sh).
struct Credentials {
  TempDir dir{"tapmap-nbd-tls"};
  Credentials() {
    REQUIRE(Run({std::string(TAPMAP_SOURCE_DIR) + "/tests/nbd/make_tls_credentials.sh", dir.path()}) == 0);
  }
  std::string operator/(const std::string& name) const { return dir / name; }
};

// A daemon whose TCP listener on `port` requires TLS with `tls_args`.
struct TlsDaemon {
  TlsDaemon(uint16_t port, std::vector<std::string> tls_args)
      : port(port), f("1G", "64M", WithListener(port, std::move(tls_args))) {
    // The unix listener is up once the daemon is; the TCP one was bound before it.
    f.Tapmap({"volume", "create", "vm", "16M"});
  }
  static std::vector<std::string> WithListener(uint16_t port, std::vector<std::string> args) {
    args.insert(args.begin(), {"--nbd", "tcp:127.0.0.1:" + std::to_string(port)});
    return args;
  }
  std::string Host() const { return "127.0.0.1:" + std::to_string(port); }

  uint16_t port;
  DaemonFixture f;
};

std::vector<std::string> QemuIo(const std::vector<std::string>& object, const std::string& image_opts,
                                const std::vector<std::string>& commands) {
  std::vector<std::string> argv = {"qemu-io"};
  argv.insert(argv.end(), object.begin(), object.end());
  argv.insert(argv.end(), {"--image-opts", image_opts});
  for (const auto& c : commands) argv.insert(argv.end(), {"-c", c});
  return argv;
}

bool Clean(const std::string& out) {
  return out.find("Pattern verification failed") == std::string::npos && out.find("error") == std::string::npos &&
         out.find("failed") == std::string::npos;
}

// What a client without TLS gets from a listener that requires it (the NBD spec's
// FORCEDTLS): TLS_REQD for every option but STARTTLS and ABORT, and EXPORT_NAME closes.
void CheckPlaintextRefused(uint16_t port) {
  NbdTestClient c(ConnectTcp(port));
  REQUIRE(c.StartOptions());
  CHECK_FALSE(c.List());
  CHECK(c.Ask(Option::kInfo, "vm") == kRepErrTlsReqd);
  CHECK(c.Ask(Option::kGo, "vm") == kRepErrTlsReqd);
  c.SendOption(static_cast<uint32_t>(Option::kStructuredReply), {});
  CHECK(c.ReadOptionReply()->type == kRepErrTlsReqd);
  c.SendOption(static_cast<uint32_t>(Option::kStartTls), {1, 2, 3});  // STARTTLS takes no data
  CHECK(c.ReadOptionReply()->type == kRepErrInvalid);
  c.SendOption(static_cast<uint32_t>(Option::kExportName), EncodeExportNameOption("vm"));
  CHECK(c.PeerClosed());

  NbdTestClient aborting(ConnectTcp(port));
  REQUIRE(aborting.StartOptions());
  aborting.SendOption(static_cast<uint32_t>(Option::kAbort), {});
  CHECK(aborting.ReadOptionReply()->type == kRepAck);
}

TEST_CASE("NBD TLS with PSK: qemu-io and nbdinfo with the key, no TLS or a wrong key refused") {
  Credentials creds;
  TlsDaemon d(FreePort(), {"--nbd-tls-psk", creds / "server.psk"});
  std::string out;
  const std::vector<std::string> psk_object = {
      "--object", "tls-creds-psk,id=tls0,endpoint=client,username=alice,dir=" + (creds / "psk")};
  const std::string image = "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=" +
                            std::to_string(d.port) + ",export=vm,tls-creds=tls0";
  REQUIRE(Run(QemuIo(psk_object, image, {"write -P 0x5a 0 1M", "flush"}), &out) == 0);
  CHECK(Clean(out));
  REQUIRE(Run(QemuIo(psk_object, image, {"read -P 0x5a 0 1M", "read -P 0 1M 64k"}), &out) == 0);
  CHECK(Clean(out));
  // nbdinfo (libnbd, gnutls) with an nbds:// URI and the psktool file.
  REQUIRE(Run({"nbdinfo", "--json", "nbds://alice@" + d.Host() + "/vm?tls-psk-file=" + (creds / "psk/keys.psk")},
              &out) == 0);
  CHECK(out.find("\"TLS\": true") != std::string::npos);
  CHECK(out.find("\"export-size\": 16777216") != std::string::npos);

  // Refused: a wrong key, an unknown identity, no TLS at all.
  CHECK(RunCommand({"nbdinfo", "nbds://alice@" + d.Host() + "/vm?tls-psk-file=" + (creds / "wrongpsk/keys.psk")},
                   &out) != 0);
  CHECK(RunCommand(QemuIo({"--object", "tls-creds-psk,id=tls0,endpoint=client,username=carol,dir=" +
                                           (creds / "psk")},
                          image, {"read 0 512"}),
                   &out) != 0);
  CHECK(RunCommand({"nbdinfo", "nbd://" + d.Host() + "/vm"}, &out) != 0);
  INFO(out);
  CHECK(out.find("TLS") != std::string::npos);
  CHECK(RunCommand({"qemu-io", "-f", "raw", "-c", "read 0 512", "nbd://" + d.Host() + "/vm"}, &out) != 0);
  CheckPlaintextRefused(d.port);
  // The unix socket offers TLS without requiring it.
  REQUIRE(Run({"nbdinfo", "--json", d.f.Url("vm")}, &out) == 0);
  CHECK(out.find("\"TLS\": false") != std::string::npos);
  auto listeners = d.f.Tapmap({"nbd", "list"}).dump();
  INFO(listeners);
  CHECK(listeners.find("\"tls\":\"required\"") != std::string::npos);
  CHECK(listeners.find("\"tls\":\"optional\"") != std::string::npos);
  REQUIRE(Run({testing::Bin("tapmap"), "--config", d.f.config(), "--control", d.f.control_socket(), "nbd", "list"},
              &out) == 0);
  CHECK(out.find("nbds://" + d.Host() + "/VOLUME") != std::string::npos);  // the URL a client needs
  const int status = d.f.StopTapdisk();
  const std::string log = d.f.TapdiskLog();
  INFO(log);
  CHECK(status == 0);
  CHECK(log.find("TLS required") != std::string::npos);
  CHECK(log.find("PSK identity 'alice'") != std::string::npos);  // who connected, in the log
  CHECK(log.find("TLS handshake failed") != std::string::npos);  // the wrong key
}

TEST_CASE("NBD TLS with x509: client certificates from the CA only") {
  Credentials creds;
  TlsDaemon d(FreePort(), {"--nbd-tls-certificates", creds / "server"});
  std::string out;
  auto object = [&](const std::string& dir) {
    return std::vector<std::string>{"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + (creds / dir)};
  };
  const std::string image = "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=" +
                            std::to_string(d.port) + ",export=vm,tls-creds=tls0";
  REQUIRE(Run(QemuIo(object("client"), image, {"write -P 0x6b 4M 1M", "flush", "read -P 0x6b 4M 1M"}), &out) == 0);
  CHECK(Clean(out));
  REQUIRE(Run({"nbdinfo", "--json", "nbds://" + d.Host() + "/vm?tls-certificates=" + (creds / "client")}, &out) == 0);
  CHECK(out.find("\"TLS\": true") != std::string::npos);
  // qemu-img reads the whole volume back through TLS.
  REQUIRE(Run({"qemu-img", "convert", "--object", object("client")[1], "--image-opts", image, "-O", "raw",
               creds / "copy.raw"},
              &out) == 0);
  REQUIRE(Run({"qemu-io", "-f", "raw", "-c", "read -P 0x6b 4M 1M", "-c", "read -P 0 0 4M", creds / "copy.raw"},
              &out) == 0);
  CHECK(Clean(out));

  // No client certificate, or one another CA signed: the TLS handshake fails.
  CHECK(RunCommand(QemuIo(object("nocert"), image, {"read 0 512"}), &out) != 0);
  CHECK(RunCommand(QemuIo(object("stranger"), image, {"read 0 512"}), &out) != 0);
  CHECK(RunCommand({"nbdinfo", "nbds://" + d.Host() + "/vm?tls-certificates=" + (creds / "stranger")}, &out) != 0);
  CheckPlaintextRefused(d.port);
  const int status = d.f.StopTapdisk();
  const std::string log = d.f.TapdiskLog();
  INFO(log);
  CHECK(status == 0);
  CHECK(log.find("client certificate /CN=client1") != std::string::npos);
}

TEST_CASE("a tcp: NBD listener without TLS is refused at start unless --nbd-insecure-plaintext-tcp") {
  const uint16_t port = FreePort();
  {
    // The fixture's paths, for a tapdisk-map that must not start.
    DaemonFixture f;
    std::string out;
    std::vector<std::string> argv = {testing::Bin("tapdisk-map"), "--config", f.config(), "--server",
                                     "unix:" + f.mapserver_socket(), "--pool", f.pool(), "--secret-file", f.secret(),
                                     "--control", f.path("ctl2.sock"), "--xen", "off", "--nbd",
                                     "tcp:127.0.0.1:" + std::to_string(port)};
    CHECK(RunCommand(argv, &out, std::chrono::seconds(60)) != 0);
    INFO(out);
    CHECK(out.find("--nbd-insecure-plaintext-tcp") != std::string::npos);
    // Bad credentials stop it too, naming the file.
    argv.insert(argv.end(), {"--nbd-tls-psk", f.path("missing.psk")});
    CHECK(RunCommand(argv, &out, std::chrono::seconds(60)) != 0);
    CHECK(out.find("missing.psk") != std::string::npos);
    CHECK(f.StopTapdisk() == 0);
  }
  DaemonFixture f("1G", "64M", {"--nbd", "tcp:127.0.0.1:" + std::to_string(port), "--nbd-insecure-plaintext-tcp"});
  f.Tapmap({"volume", "create", "vm", "8M"});
  std::string out;
  REQUIRE(Run({"nbdinfo", "--json", "nbd://127.0.0.1:" + std::to_string(port) + "/vm"}, &out) == 0);
  CHECK(out.find("\"TLS\": false") != std::string::npos);
  CHECK(f.StopTapdisk() == 0);
}

}  // namespace
}  // namespace tapmap::nbd
