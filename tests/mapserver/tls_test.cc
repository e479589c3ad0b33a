// Mutual TLS and per-host authority (issue 14, attack 6): a real server on TCP
// 127.0.0.1 with a CA, server and host certificates made by CertificateAuthority, and
// the credential registry; clients through the client library.
#include <kj/async-io.h>

#include <catch2/catch.hpp>
#include <memory>

#include "mapserver/certificate_authority.h"
#include "mapserver/credential_registry.h"
#include "mapserver/mapping_service.h"
#include "mapserver/server.h"
#include "protocol/connection.h"
#include "protocol/remote_status.h"
#include "protocol/tls.h"
#include "tests/support/child_process.h"
#include "store_fixture.h"

namespace tapmap::mapserver {
namespace {

using tapmap::mapserver::testing::StoreFixture;
using tapmap::testing::TempDir;

template <typename T>
Status StatusOf(T&& promise, kj::WaitScope& ws) {
  return protocol::RunCatching([&] { promise.wait(ws); });
}

class TlsFixture {
 public:
  TlsFixture() : io_(kj::setupAsyncIo()) {
    REQUIRE(CertificateAuthority::Init(dir_ / "ca", "test", 30).ok());
    auto ca = CertificateAuthority::Load(dir_ / "ca");
    REQUIRE(ca.ok());
    ca_ = std::make_unique<CertificateAuthority>(std::move(*ca));
    REQUIRE(ca_->IssueServer(dir_ / "server", 30).ok());
    ServiceOptions options;
    options.credentials_dir = dir_ / "credentials";
    options.lease_time = 1 * kj::SECONDS;
    service_ = std::make_unique<MappingService>(store_.store(), "", io_.provider->getTimer(),
                                                Logger("mapserver", LogLevel::kError), options);
    ServerLimits limits;
    limits.login_timeout = 5 * kj::SECONDS;
    auto tls = protocol::TlsConfig::LoadServer(dir_ / "server", io_.provider->getTimer(), limits.login_timeout);
    REQUIRE(tls.ok());
    server_tls_ = std::move(*tls);
    server_ = std::make_unique<Server>(io_, *service_, Logger("mapserver", LogLevel::kError), limits);
    REQUIRE(server_->Listen(*protocol::ParseServerAddress("tcp:127.0.0.1:0"), io_.waitScope, server_tls_.get()).ok());
    address_ = *protocol::ParseServerAddress(server_->bound_address());
  }
  ~TlsFixture() {
    server_.reset();
    service_.reset();
  }

  // Issues a credential (registry record + TLS files) and returns its TLS directory.
  std::string Issue(const std::string& host, Role role, std::vector<std::string> scope, std::string* id = nullptr) {
    Credential c{CredentialRegistry::NewId(), host, role, std::move(scope), CredentialRegistry::Now(), ""};
    REQUIRE(registry().Add(c).ok());
    std::string out = dir_ / ("cred-" + c.id);
    REQUIRE(ca_->IssueHost({c.host, c.id}, out, 30).ok());
    if (id != nullptr) *id = c.id;
    return out;
  }

  Result<kj::Own<protocol::Connection>> Connect(const std::string& tls_dir, std::string host = "") {
    auto tls = protocol::TlsConfig::LoadClient(tls_dir);
    if (!tls.ok()) return tls.status();
    std::shared_ptr<protocol::TlsConfig> config = std::move(*tls);
    if (host.empty()) host = config->name().host;
    return protocol::Connection::ConnectBlocking(io_, address_, protocol::ClientAuth{host, "", config, ""}, 7);
  }

  CredentialRegistry registry() { return CredentialRegistry(dir_ / "credentials"); }
  kj::AsyncIoContext& io() { return io_; }
  kj::WaitScope& ws() { return io_.waitScope; }
  const protocol::ServerAddress& address() const { return address_; }
  std::string path(const std::string& name) const { return dir_ / name; }
  CertificateAuthority& ca() { return *ca_; }

 private:
  TempDir dir_{"tapmap-tls-test"};
  StoreFixture store_;
  kj::AsyncIoContext io_;
  std::unique_ptr<CertificateAuthority> ca_;
  std::unique_ptr<MappingService> service_;
  std::unique_ptr<protocol::TlsConfig> server_tls_;
  std::unique_ptr<Server> server_;
  protocol::ServerAddress address_;
};

Status Create(protocol::Connection& conn, const std::string& name, kj::WaitScope& ws) {
  auto req = conn.session().createRequest();
  req.setName(name);
  req.setSizeBytes(1 << 20);
  return StatusOf(req.send(), ws);
}

Status Open(protocol::Connection& conn, const std::string& name, bool rw, kj::WaitScope& ws) {
  auto req = conn.session().openRequest();
  req.setName(name);
  req.setMode(rw ? proto::OpenMode::READ_WRITE : proto::OpenMode::READ_ONLY);
  return StatusOf(req.send(), ws);
}

TEST_CASE("Hosts log in over mutual TLS as the name in their certificate", "[tls]") {
  TlsFixture f;
  auto admin = f.Connect(f.Issue("ops-admin", Role::kAdmin, {"*"}));
  REQUIRE(admin.ok());
  REQUIRE(Create(**admin, "vm1", f.ws()).ok());
  std::string host_dir = f.Issue("host-a", Role::kHost, {"vm*"});
  auto host = f.Connect(host_dir);
  REQUIRE(host.ok());
  CHECK((*host)->host() == "host-a");
  CHECK(Open(**host, "vm1", true, f.ws()).ok());
  auto info = (*admin)->session().infoRequest();
  info.setName("vm1");
  CHECK(std::string(info.send().wait(f.ws()).getInfo().getWriter().cStr()) == "host-a");

  // The client's word does not count: a login as another host with host-a's
  // certificate is refused (before: any authenticated client could say any name).
  auto forged = f.Connect(host_dir, "host-b");
  CHECK(forged.status().code() == StatusCode::kInvalidArgument);  // refused locally already
  auto tls = protocol::TlsConfig::LoadClient(host_dir);
  REQUIRE(tls.ok());
  std::shared_ptr<protocol::TlsConfig> config = std::move(*tls);
  // Bypass the client-side check: the server refuses too.
  auto kj_addr = f.io().provider->getNetwork().parseAddress(f.address().ToKjAddress()).wait(f.ws());
  auto stream = config->WrapClient(kj_addr->connect().wait(f.ws())).wait(f.ws());
  capnp::TwoPartyClient client(*stream);
  auto gate = client.bootstrap().castAs<proto::Gate>();
  gate.challengeRequest().send().wait(f.ws());
  auto login = gate.loginRequest();
  login.setHost("host-b");
  login.setClientVersion(proto::PROTOCOL_VERSION);
  CHECK(StatusOf(login.send(), f.ws()).code() == StatusCode::kPermissionDenied);
}

TEST_CASE("Roles and scopes: a host may not administer or reach outside its scope", "[tls]") {
  TlsFixture f;
  auto admin = f.Connect(f.Issue("ops-admin", Role::kAdmin, {"*"}));
  REQUIRE(admin.ok());
  REQUIRE(Create(**admin, "vm1", f.ws()).ok());
  REQUIRE(Create(**admin, "db1", f.ws()).ok());
  auto host = f.Connect(f.Issue("host-a", Role::kHost, {"vm*"}));
  REQUIRE(host.ok());
  // Before: any authenticated host could delete, shrink, clone any volume.
  auto del = (*host)->session().deleteRequest();
  del.setName("vm1");
  CHECK(StatusOf(del.send(), f.ws()).code() == StatusCode::kPermissionDenied);
  CHECK(Create(**host, "vm2", f.ws()).code() == StatusCode::kPermissionDenied);
  auto resize = (*host)->session().resizeRequest();
  resize.setName("vm1");
  resize.setSizeBytes(4096);
  resize.setAllowShrink(true);
  CHECK(StatusOf(resize.send(), f.ws()).code() == StatusCode::kPermissionDenied);
  auto snap = (*host)->session().snapshotRequest();
  snap.setSource("vm1");
  snap.setName("vm1-snap");
  CHECK(StatusOf(snap.send(), f.ws()).code() == StatusCode::kPermissionDenied);
  CHECK(Open(**host, "db1", false, f.ws()).code() == StatusCode::kPermissionDenied);
  CHECK(Open(**host, "vm1", false, f.ws()).ok());
  auto list = (*host)->session().listRequest().send().wait(f.ws());
  REQUIRE(list.getVolumes().size() == 1);
  CHECK(std::string(list.getVolumes()[0].getName().cStr()) == "vm1");
  // The admin still can.
  auto admin_del = (*admin)->session().deleteRequest();
  admin_del.setName("db1");
  CHECK(StatusOf(admin_del.send(), f.ws()).ok());
}

TEST_CASE("A set: scope covers a golden image's whole version set, whatever the names", "[tls]") {
  TlsFixture f;
  auto admin = f.Connect(f.Issue("ops-admin", Role::kAdmin, {"*"}));
  REQUIRE(admin.ok());
  REQUIRE(Create(**admin, "golden", f.ws()).ok());
  REQUIRE(Create(**admin, "other", f.ws()).ok());
  auto snap = (*admin)->session().snapshotRequest();
  snap.setSource("golden");
  snap.setName("golden-v1");
  snap.send().wait(f.ws());
  auto clone = (*admin)->session().cloneRequest();
  clone.setSource("golden-v1");
  clone.setName("tenant42-vm");
  clone.send().wait(f.ws());
  auto host = f.Connect(f.Issue("host-a", Role::kHost, {"set:golden"}));
  REQUIRE(host.ok());
  CHECK(Open(**host, "tenant42-vm", true, f.ws()).ok());
  CHECK(Open(**host, "golden-v1", false, f.ws()).ok());
  CHECK(Open(**host, "other", false, f.ws()).code() == StatusCode::kPermissionDenied);
  CHECK(Open(**host, "nonexistent", false, f.ws()).code() == StatusCode::kPermissionDenied);
  CHECK((*host)->session().listRequest().send().wait(f.ws()).getVolumes().size() == 3);
}

TEST_CASE("A revoked credential is refused at login and ends a live session", "[tls]") {
  TlsFixture f;
  std::string id_a, id_b;
  std::string dir_a = f.Issue("host-a", Role::kHost, {"*"}, &id_a);
  std::string dir_b = f.Issue("host-b", Role::kHost, {"*"}, &id_b);
  auto a = f.Connect(dir_a);
  REQUIRE(a.ok());
  auto b = f.Connect(dir_b);
  REQUIRE(b.ok());
  REQUIRE(f.registry().Revoke(id_a).ok());
  // The live session's next call (a renewal) fails; host-b is untouched.
  CHECK(StatusOf((*a)->session().renewRequest().send(), f.ws()).code() == StatusCode::kPermissionDenied);
  CHECK(StatusOf((*b)->session().renewRequest().send(), f.ws()).ok());
  auto again = f.Connect(dir_a);
  CHECK(again.status().code() == StatusCode::kPermissionDenied);
  CHECK(again.status().message().find("revoked") != std::string::npos);
  // A certificate of the CA whose credential was never registered is refused too.
  REQUIRE(f.ca().IssueHost({"host-c", CredentialRegistry::NewId()}, f.path("unregistered"), 30).ok());
  CHECK(f.Connect(f.path("unregistered")).status().code() == StatusCode::kPermissionDenied);
}

TEST_CASE("TLS refuses clients without a certificate of the CA and servers without the server name", "[tls]") {
  TlsFixture f;
  // A plaintext client cannot log in on the TLS port.
  auto plain = protocol::Connection::ConnectBlocking(f.io(), f.address(), "host-a", "any secret");
  CHECK_FALSE(plain.ok());
  // A client whose certificate comes from another CA is refused in the handshake.
  TempDir other("tapmap-tls-other");
  REQUIRE(CertificateAuthority::Init(other / "ca", "other", 30).ok());
  auto other_ca = CertificateAuthority::Load(other / "ca");
  REQUIRE(other_ca.ok());
  std::string id;
  f.Issue("host-a", Role::kHost, {"*"}, &id);
  REQUIRE(other_ca->IssueHost({"host-a", id}, other / "host", 30).ok());
  auto foreign = f.Connect(other / "host");
  CHECK_FALSE(foreign.ok());
  // A host's key cannot pose as the mapserver: its certificate does not carry the
  // server name, so a client's handshake with it fails.
  std::string host_dir = f.Issue("host-b", Role::kHost, {"*"});
  TempDir fake("tapmap-tls-fake");
  for (auto [from, to] : {std::pair{"ca.crt", "ca.crt"}, std::pair{"host.crt", "server.crt"},
                          std::pair{"host.key", "server.key"}}) {
    REQUIRE(tapmap::testing::RunCommand({"cp", "-p", host_dir + "/" + from, fake / to}) == 0);
  }
  auto fake_tls = protocol::TlsConfig::LoadServer(fake.path(), f.io().provider->getTimer(), 5 * kj::SECONDS);
  REQUIRE(fake_tls.ok());
  auto listener = f.io().provider->getNetwork().parseAddress("127.0.0.1", 0).wait(f.ws())->listen();
  auto accepted = listener->accept().then([&](kj::Own<kj::AsyncIoStream> s) {
    return (*fake_tls)->context().wrapServer(kj::mv(s));
  });
  auto client_tls = protocol::TlsConfig::LoadClient(host_dir);
  REQUIRE(client_tls.ok());
  auto addr = f.io().provider->getNetwork().parseAddress("127.0.0.1", listener->getPort()).wait(f.ws());
  auto handshake = protocol::RunCatching(
      [&] { (*client_tls)->WrapClient(addr->connect().wait(f.ws())).wait(f.ws()); });
  CHECK_FALSE(handshake.ok());
}

TEST_CASE("Certificate names and credential records parse strictly", "[tls]") {
  CHECK(protocol::ParseCertificateName("host-a/0123456789abcdef").ok());
  CHECK_FALSE(protocol::ParseCertificateName("host-a").ok());
  CHECK_FALSE(protocol::ParseCertificateName("host-a/0123").ok());
  CHECK_FALSE(protocol::ParseCertificateName("host a/0123456789abcdef").ok());
  CHECK_FALSE(protocol::ParseCertificateName("/0123456789abcdef").ok());
  Credential c{"0123456789abcdef", "host-a", Role::kHost, {"vm-*", "golden"}, "2026-12-05T00:00:00Z", ""};
  auto back = ParseCredential(FormatCredential(c));
  REQUIRE(back.ok());
  CHECK(back->scope == c.scope);
  CHECK(back->role == Role::kHost);
  CHECK_FALSE(ParseCredential("tapmap-credential 1\nid 0123456789abcdef\nhost h\nrole root\nscope *\n").ok());
  CHECK_FALSE(ParseCredential("garbage").ok());
}

}  // namespace
}  // namespace tapmap::mapserver
