// The mapping protocol over a real unix socket (and TCP): every call's success and
// error paths, authentication, leases and callbacks. fsck stays clean throughout.
#include <catch2/catch.hpp>

#include "protocol/auth.h"
#include "rpc_fixture.h"

namespace tapmap::mapserver {
namespace {

using testing::RecordingCallback;
using testing::RpcFixture;
using testing::StatusOf;
constexpr uint64_t kBs = 4096;

struct Opened {
  proto::Volume::Client volume;
  std::shared_ptr<RecordingCallback::Log> log;
  bool standby = false;
  uint64_t lease_epoch = 0;
};

Opened Open(RpcFixture& f, proto::Session::Client session, const std::string& name,
            proto::OpenMode mode) {
  auto log = std::make_shared<RecordingCallback::Log>();
  auto req = session.openRequest();
  req.setName(name);
  req.setMode(mode);
  req.setCallback(kj::heap<RecordingCallback>(log));
  auto resp = req.send().wait(f.ws());
  return Opened{resp.getVolume(), log, resp.getStandby(), resp.getLeaseEpoch()};
}

Status OpenStatus(RpcFixture& f, proto::Session::Client session, const std::string& name,
                  proto::OpenMode mode) {
  auto req = session.openRequest();
  req.setName(name);
  req.setMode(mode);
  req.setCallback(kj::heap<RecordingCallback>(std::make_shared<RecordingCallback::Log>()));
  return StatusOf(req.send(), f.ws());
}

void Create(RpcFixture& f, proto::Session::Client session, const std::string& name, uint64_t size) {
  auto req = session.createRequest();
  req.setName(name);
  req.setSizeBytes(size);
  auto info_response = req.send().wait(f.ws());
  auto info = info_response.getInfo();
  CHECK(info.getName() == name);
  CHECK(info.getSizeBytes() == size);
}

Status CopyStatus(RpcFixture& f, proto::Session::Client session, bool snapshot,
                  const std::string& source, const std::string& name) {
  if (snapshot) {
    auto req = session.snapshotRequest();
    req.setSource(source);
    req.setName(name);
    return StatusOf(req.send(), f.ws());
  }
  auto req = session.cloneRequest();
  req.setSource(source);
  req.setName(name);
  return StatusOf(req.send(), f.ws());
}

Status DeleteStatus(RpcFixture& f, proto::Session::Client session, const std::string& name) {
  auto req = session.deleteRequest();
  req.setName(name);
  return StatusOf(req.send(), f.ws());
}

std::vector<MapExtent> ToExtents(capnp::List<proto::Extent>::Reader list) {
  std::vector<MapExtent> out;
  for (auto e : list) {
    out.push_back(MapExtent{e.getLogical(), e.getLength(), e.getPhysical(), e.getGeneration(),
                            static_cast<ExtentState>(e.getState())});
  }
  return out;
}

std::vector<MapExtent> Prepare(RpcFixture& f, proto::Volume::Client v, uint64_t offset,
                               uint64_t length) {
  auto req = v.prepareWriteRequest();
  auto r = req.initRanges(1)[0];
  r.setOffset(offset);
  r.setLength(length);
  return ToExtents(req.send().wait(f.ws()).getExtents());
}

Status CommitStatus(RpcFixture& f, proto::Volume::Client v, const std::vector<MapExtent>& extents) {
  auto req = v.commitRequest();
  auto list = req.initExtents(static_cast<unsigned>(extents.size()));
  for (size_t i = 0; i < extents.size(); ++i) {
    auto e = list[static_cast<unsigned>(i)];
    e.setLogical(extents[i].logical);
    e.setLength(extents[i].length);
    e.setPhysical(extents[i].physical);
    e.setGeneration(extents[i].generation);
    e.setState(proto::ExtentState::OWNED);
  }
  return StatusOf(req.send(), f.ws());
}

std::vector<MapExtent> Map(RpcFixture& f, proto::Volume::Client v, uint64_t offset,
                           uint64_t length) {
  auto req = v.mapRequest();
  req.setOffset(offset);
  req.setLength(length);
  return ToExtents(req.send().wait(f.ws()).getExtents());
}

uint64_t Reserved(RpcFixture& f, proto::Session::Client session) {
  return session.poolStatsRequest().send().wait(f.ws()).getStats().getReservedBlocks();
}

TEST_CASE("Login succeeds with the shared secret and fails without it", "[rpc]") {
  RpcFixture f;
  auto good = f.Connect("hostA");
  CHECK(StatusOf(good->session().listRequest().send(), f.ws()).ok());

  auto bad = protocol::Connection::ConnectBlocking(f.io(), f.address(), "hostB", "wrong secret");
  CHECK(bad.status().code() == StatusCode::kPermissionDenied);
}

TEST_CASE("The Gate refuses logins without a challenge and closes after three failures", "[rpc]") {
  RpcFixture f;
  auto addr = f.io().provider->getNetwork().parseAddress(f.address().ToKjAddress()).wait(f.ws());
  auto stream = addr->connect().wait(f.ws());
  capnp::TwoPartyClient client(*stream);
  auto gate = client.bootstrap().castAs<proto::Gate>();
  auto login = [&](bool with_challenge, const std::string& secret) {
    std::vector<uint8_t> nonce(protocol::kNonceSize, 0);
    if (with_challenge) {
      auto c = gate.challengeRequest().send().wait(f.ws());
      CHECK(c.getServerVersion() == proto::PROTOCOL_VERSION);
      nonce.assign(c.getNonce().begin(), c.getNonce().end());
    }
    auto proof = protocol::ComputeLoginProof(secret, nonce.data(), nonce.size(), "h");
    auto req = gate.loginRequest();
    req.setHost("h");
    req.setProof(kj::arrayPtr(proof.data(), proof.size()));
    req.setClientVersion(proto::PROTOCOL_VERSION);
    return StatusOf(req.send(), f.ws());
  };
  CHECK(login(false, testing::kSecret).code() == StatusCode::kPermissionDenied);
  CHECK(login(true, "nope").code() == StatusCode::kPermissionDenied);
  bool disconnected = false;
  auto watch = client.onDisconnect().then([&] { disconnected = true; }).eagerlyEvaluate(nullptr);
  CHECK(login(true, "nope").code() == StatusCode::kPermissionDenied);
  // The server closes the connection: later calls fail and the client sees it.
  for (int i = 0; i < 100 && !disconnected; ++i) f.Spin();
  CHECK(disconnected);
  CHECK(StatusOf(gate.challengeRequest().send(), f.ws()).code() == StatusCode::kUnavailable);
}

TEST_CASE("Connections that do not log in in time are closed, logged-in ones stay", "[rpc]") {
  RpcFixture f;  // login timeout 500 ms
  auto good = f.Connect("hostA");
  auto addr = f.io().provider->getNetwork().parseAddress(f.address().ToKjAddress()).wait(f.ws());
  auto stream = addr->connect().wait(f.ws());
  // Read the raw stream (an RPC client that sends nothing need not read, so its
  // onDisconnect may never fire): end of stream = the server closed it.
  char byte = 0;
  auto eof = stream->tryRead(&byte, 1, 1).then([](size_t n) { return n == 0; });
  bool closed = eof.exclusiveJoin(f.io().provider->getTimer().afterDelay(20 * kj::SECONDS).then([] {
                      return false;
                    })).wait(f.ws());
  CHECK(closed);
  CHECK(StatusOf(good->session().listRequest().send(), f.ws()).ok());
}

TEST_CASE("Admin calls: create info list poolStats and their errors", "[rpc]") {
  RpcFixture f;
  auto conn = f.Connect();
  auto s = conn->session();
  Create(f, s, "gold", 100 * kBs);
  auto create_dup = s.createRequest();
  create_dup.setName("gold");
  create_dup.setSizeBytes(kBs);
  CHECK(StatusOf(create_dup.send(), f.ws()).code() == StatusCode::kAlreadyExists);
  auto bad_name = s.createRequest();
  bad_name.setName("../etc");
  bad_name.setSizeBytes(kBs);
  CHECK(StatusOf(bad_name.send(), f.ws()).code() == StatusCode::kInvalidArgument);
  auto bad_size = s.createRequest();
  bad_size.setName("x");
  bad_size.setSizeBytes(1000);
  CHECK(StatusOf(bad_size.send(), f.ws()).code() == StatusCode::kInvalidArgument);

  auto info_req = s.infoRequest();
  info_req.setName("gold");
  auto info_response = info_req.send().wait(f.ws());
  auto info = info_response.getInfo();
  CHECK(info.getKind() == proto::VolumeInfo::Kind::BASE);
  CHECK_FALSE(info.getReadOnly());
  CHECK(info.getOpeners() == 0);
  auto missing = s.infoRequest();
  missing.setName("missing");
  CHECK(StatusOf(missing.send(), f.ws()).code() == StatusCode::kNotFound);

  REQUIRE(CopyStatus(f, s, true, "gold", "gold-snap").ok());
  auto list_response = s.listRequest().send().wait(f.ws());
  auto list = list_response.getVolumes();
  REQUIRE(list.size() == 2);
  CHECK(list[1].getName() == "gold-snap");
  CHECK(list[1].getKind() == proto::VolumeInfo::Kind::SNAPSHOT);
  CHECK(list[1].getParent() == "gold");
  CHECK(list[1].getVersionSet() == list[0].getVersionSet());

  auto stats_response = s.poolStatsRequest().send().wait(f.ws());
  auto stats = stats_response.getStats();
  CHECK(stats.getBlockSize() == kBs);
  CHECK(stats.getTotalBlocks() == 4096);
  CHECK(stats.getFreeBlocks() == 4096);
  CHECK(stats.getVolumes() == 2);
  CHECK(stats.getVersionSets() == 1);
  CHECK(stats.getUuid().size() == 36);
  CHECK(stats.getMetadataBytes() > 0);
  CHECK(CopyStatus(f, s, false, "missing", "c").code() == StatusCode::kNotFound);
  CHECK(CopyStatus(f, s, false, "gold", "gold").code() == StatusCode::kAlreadyExists);
  CHECK(DeleteStatus(f, s, "missing").code() == StatusCode::kNotFound);
  f.store().RequireClean();
}

TEST_CASE("One writer per volume and read-only openers", "[rpc]") {
  RpcFixture f;
  auto c1 = f.Connect("h1");
  auto c2 = f.Connect("h2");
  Create(f, c1->session(), "v", 64 * kBs);
  auto w = Open(f, c1->session(), "v", proto::OpenMode::READ_WRITE);
  // A second host's rw open is a standby (live migration); a third's is busy.
  auto c3 = f.Connect("h3");
  auto standby = Open(f, c3->session(), "v", proto::OpenMode::READ_WRITE);
  CHECK(standby.standby);
  Status busy = OpenStatus(f, c2->session(), "v", proto::OpenMode::READ_WRITE);
  CHECK(busy.code() == StatusCode::kBusy);
  CHECK(busy.message().find("h1") != std::string::npos);
  REQUIRE(StatusOf(standby.volume.closeRequest().send(), f.ws()).ok());
  auto r = Open(f, c2->session(), "v", proto::OpenMode::READ_ONLY);
  auto info_req = c1->session().infoRequest();
  info_req.setName("v");
  auto info_response = info_req.send().wait(f.ws());
  auto info = info_response.getInfo();
  CHECK(info.getOpeners() == 2);
  CHECK(info.getWriter() == "h1");

  auto pw = r.volume.prepareWriteRequest();
  pw.initRanges(1)[0].setLength(kBs);
  CHECK(StatusOf(pw.send(), f.ws()).code() == StatusCode::kReadOnly);
  CHECK(DeleteStatus(f, c1->session(), "v").code() == StatusCode::kBusy);

  REQUIRE(CopyStatus(f, c1->session(), true, "v", "snap").ok());
  CHECK(OpenStatus(f, c2->session(), "snap", proto::OpenMode::READ_WRITE).code() ==
        StatusCode::kReadOnly);
  CHECK(OpenStatus(f, c2->session(), "nope", proto::OpenMode::READ_ONLY).code() ==
        StatusCode::kNotFound);

  // Closing the writer frees the lease; a closed Volume refuses further calls.
  REQUIRE(StatusOf(w.volume.closeRequest().send(), f.ws()).ok());
  CHECK(StatusOf(w.volume.mapRequest().send(), f.ws()).code() == StatusCode::kInvalidArgument);
  const auto before_last_call = std::chrono::steady_clock::now();
  auto w2 = Open(f, c2->session(), "v", proto::OpenMode::READ_WRITE);
  // Losing a connection does not end its leases (leases.md): the openers stay,
  // orphaned, until the host lease runs out 1.1 T after the host's last call. A rw
  // open by another host waits for that, then succeeds.
  c2 = nullptr;
  w2.volume = nullptr;
  r.volume = nullptr;
  auto w3 = Open(f, c1->session(), "v", proto::OpenMode::READ_WRITE);
  const auto waited = std::chrono::steady_clock::now() - before_last_call;
  CHECK(waited >= std::chrono::milliseconds(RpcFixture::kLeaseTime * 11 / 10 / kj::MILLISECONDS));
  CHECK(f.service().opener_count() == 1);
  REQUIRE(StatusOf(w3.volume.closeRequest().send(), f.ws()).ok());
  CHECK(DeleteStatus(f, c1->session(), "v").ok());
}

TEST_CASE("prepareWrite commit and map over RPC, reservations die with the opener", "[rpc]") {
  RpcFixture f;
  auto c = f.Connect();
  auto s = c->session();
  Create(f, s, "v", 64 * kBs);
  auto v = Open(f, s, "v", proto::OpenMode::READ_WRITE);
  auto e = Prepare(f, v.volume, 0, 4 * kBs);
  REQUIRE(e.size() == 1);
  CHECK(e[0].state == ExtentState::kOwned);
  CHECK(Reserved(f, s) == 4);
  REQUIRE(CommitStatus(f, v.volume, e).ok());
  CHECK(Reserved(f, s) == 0);
  auto m = Map(f, v.volume, 0, 64 * kBs);
  REQUIRE(m.size() == 2);
  CHECK(m[0] == e[0]);
  CHECK(m[1].state == ExtentState::kHole);
  auto map_req = v.volume.mapRequest();
  map_req.setOffset(0);
  map_req.setLength(kBs);
  CHECK(map_req.send().wait(f.ws()).getSizeBytes() == 64 * kBs);

  // Errors.
  auto bad_map = v.volume.mapRequest();
  bad_map.setOffset(63 * kBs);
  bad_map.setLength(2 * kBs);
  CHECK(StatusOf(bad_map.send(), f.ws()).code() == StatusCode::kInvalidArgument);
  auto bad = e;
  bad[0].generation = 999999;
  CHECK(CommitStatus(f, v.volume, bad).code() == StatusCode::kAborted);
  auto empty_prepare = v.volume.prepareWriteRequest();
  CHECK(StatusOf(empty_prepare.send(), f.ws()).code() == StatusCode::kInvalidArgument);

  // Discard.
  auto d = v.volume.discardRequest();
  auto dr = d.initRanges(1)[0];
  dr.setOffset(0);
  dr.setLength(2 * kBs);
  REQUIRE(StatusOf(d.send(), f.ws()).ok());
  CHECK(Map(f, v.volume, 0, kBs)[0].state == ExtentState::kHole);

  // Uncommitted reservations are reclaimed on close, and after a lost connection once
  // the host lease expired (until then the host may still write them: leases.md).
  auto pending = Prepare(f, v.volume, 10 * kBs, 8 * kBs);
  CHECK(Reserved(f, s) == 8);
  REQUIRE(StatusOf(v.volume.closeRequest().send(), f.ws()).ok());
  CHECK(Reserved(f, s) == 0);
  auto c2 = f.Connect("h2");
  auto v2 = Open(f, c2->session(), "v", proto::OpenMode::READ_WRITE);
  Prepare(f, v2.volume, 10 * kBs, 8 * kBs);
  CHECK(Reserved(f, s) == 8);
  v2.volume = nullptr;
  c2 = nullptr;
  CHECK(f.WaitUntil([&] { return Reserved(f, s) == 0; }));
  f.store().RequireClean();
}

TEST_CASE("Snapshot of an open volume recalls its writer first", "[rpc]") {
  RpcFixture f;
  auto c = f.Connect();
  auto s = c->session();
  Create(f, s, "v", 64 * kBs);
  auto w = Open(f, s, "v", proto::OpenMode::READ_WRITE);
  auto e = Prepare(f, w.volume, 0, 8 * kBs);
  REQUIRE(CommitStatus(f, w.volume, e).ok());
  CHECK(Map(f, w.volume, 0, 8 * kBs)[0].state == ExtentState::kOwned);

  REQUIRE(CopyStatus(f, s, true, "v", "snap").ok());
  REQUIRE(w.log->recalls.size() == 1);
  CHECK(w.log->recalls[0].reason == proto::RecallReason::SNAPSHOT);
  REQUIRE(w.log->recalls[0].ranges.size() == 1);
  CHECK(w.log->recalls[0].ranges[0].offset == 0);
  CHECK(w.log->recalls[0].ranges[0].length == 64 * kBs);
  CHECK(Map(f, w.volume, 0, 8 * kBs)[0].state == ExtentState::kShared);

  REQUIRE(CopyStatus(f, s, false, "v", "clone").ok());
  REQUIRE(w.log->recalls.size() == 2);
  CHECK(w.log->recalls[1].reason == proto::RecallReason::CLONE);
  // A clone of the snapshot does not bother the writer of v.
  REQUIRE(CopyStatus(f, s, false, "snap", "clone2").ok());
  CHECK(w.log->recalls.size() == 2);
  CHECK(w.log->revokes.empty());
  f.store().RequireClean();
}

TEST_CASE("A writer that does not answer a recall loses its lease", "[rpc]") {
  RpcFixture f;
  auto c = f.Connect();
  auto s = c->session();
  Create(f, s, "v", 64 * kBs);
  auto w = Open(f, s, "v", proto::OpenMode::READ_WRITE);
  auto pending = Prepare(f, w.volume, 0, 4 * kBs);
  w.log->stall_recalls = true;
  REQUIRE(CopyStatus(f, s, true, "v", "snap").ok());  // proceeds after the timeout
  f.Spin();
  CHECK(w.log->revokes.size() == 1);
  CHECK(CommitStatus(f, w.volume, pending).code() == StatusCode::kAborted);
  auto pw = w.volume.prepareWriteRequest();
  pw.initRanges(1)[0].setLength(kBs);
  CHECK(StatusOf(pw.send(), f.ws()).code() == StatusCode::kAborted);
  CHECK(Reserved(f, s) == 0);
  // The volume can be opened rw again.
  auto w2 = Open(f, s, "v", proto::OpenMode::READ_WRITE);
  f.store().RequireClean();
}

TEST_CASE("Resize tells openers, shrink recalls the cut-off part first", "[rpc]") {
  RpcFixture f;
  auto c = f.Connect();
  auto s = c->session();
  Create(f, s, "v", 64 * kBs);
  auto w = Open(f, s, "v", proto::OpenMode::READ_WRITE);
  auto r = Open(f, s, "v", proto::OpenMode::READ_ONLY);
  REQUIRE(CommitStatus(f, w.volume, Prepare(f, w.volume, 0, 64 * kBs)).ok());
  auto grow = s.resizeRequest();
  grow.setName("v");
  grow.setSizeBytes(128 * kBs);
  CHECK(grow.send().wait(f.ws()).getInfo().getSizeBytes() == 128 * kBs);
  CHECK(w.log->sizes == std::vector<uint64_t>{128 * kBs});
  CHECK(r.log->sizes == std::vector<uint64_t>{128 * kBs});
  CHECK(w.log->recalls.empty());

  auto no_shrink = s.resizeRequest();
  no_shrink.setName("v");
  no_shrink.setSizeBytes(32 * kBs);
  CHECK(StatusOf(no_shrink.send(), f.ws()).code() == StatusCode::kInvalidArgument);
  auto shrink = s.resizeRequest();
  shrink.setName("v");
  shrink.setSizeBytes(32 * kBs);
  shrink.setAllowShrink(true);
  auto info_response = shrink.send().wait(f.ws());
  auto info = info_response.getInfo();
  CHECK(info.getMappedBytes() == 32 * kBs);
  REQUIRE(w.log->recalls.size() == 1);
  CHECK(w.log->recalls[0].reason == proto::RecallReason::RESIZE);
  CHECK(w.log->recalls[0].ranges[0].offset == 32 * kBs);
  CHECK(w.log->recalls[0].ranges[0].length == 96 * kBs);
  CHECK(w.log->sizes.back() == 32 * kBs);
  auto map_beyond = w.volume.mapRequest();
  map_beyond.setOffset(32 * kBs);
  map_beyond.setLength(kBs);
  CHECK(StatusOf(map_beyond.send(), f.ws()).code() == StatusCode::kInvalidArgument);
  f.store().RequireClean();
}

TEST_CASE("Discard recalls the other openers of the volume", "[rpc]") {
  RpcFixture f;
  auto c = f.Connect();
  auto s = c->session();
  Create(f, s, "v", 64 * kBs);
  auto w = Open(f, s, "v", proto::OpenMode::READ_WRITE);
  auto r = Open(f, s, "v", proto::OpenMode::READ_ONLY);
  REQUIRE(CommitStatus(f, w.volume, Prepare(f, w.volume, 0, 8 * kBs)).ok());
  for (int i = 0; i < 50 && r.log->recalls.empty(); ++i) f.Spin();
  REQUIRE(r.log->recalls.size() == 1);  // the commit's (holes were filled)
  auto d = w.volume.discardRequest();
  auto dr = d.initRanges(1)[0];
  dr.setOffset(0);
  dr.setLength(4 * kBs);
  REQUIRE(StatusOf(d.send(), f.ws()).ok());
  CHECK(w.log->recalls.empty());
  REQUIRE(r.log->recalls.size() == 2);
  CHECK(r.log->recalls[1].reason == proto::RecallReason::DISCARD);
  CHECK(r.log->recalls[1].ranges[0].length == 4 * kBs);
}

TEST_CASE("A commit mapping or replacing blocks recalls the other openers' maps", "[rpc]") {
  RpcFixture f;
  auto c = f.Connect();
  auto s = c->session();
  Create(f, s, "v", 64 * kBs);
  auto w = Open(f, s, "v", proto::OpenMode::READ_WRITE);
  auto r = Open(f, s, "v", proto::OpenMode::READ_ONLY);
  // Holes filled: a reader holding the map of a hole must see the new data.
  REQUIRE(CommitStatus(f, w.volume, Prepare(f, w.volume, 0, 8 * kBs)).ok());
  for (int i = 0; i < 50 && r.log->recalls.empty(); ++i) f.Spin();
  REQUIRE(r.log->recalls.size() == 1);
  CHECK(r.log->recalls[0].ranges[0].offset == 0);
  CHECK(r.log->recalls[0].ranges[0].length == 8 * kBs);
  REQUIRE(CopyStatus(f, s, true, "v", "snap").ok());
  auto cow = Prepare(f, w.volume, 2 * kBs, 2 * kBs);  // shared now: new blocks
  REQUIRE(CommitStatus(f, w.volume, cow).ok());
  for (int i = 0; i < 50 && r.log->recalls.size() < 2; ++i) f.Spin();
  REQUIRE(r.log->recalls.size() == 2);
  CHECK(r.log->recalls[1].reason == proto::RecallReason::DISCARD);
  REQUIRE(r.log->recalls[1].ranges.size() == 1);
  CHECK(r.log->recalls[1].ranges[0].offset == 2 * kBs);
  CHECK(r.log->recalls[1].ranges[0].length == 2 * kBs);
  CHECK(w.log->recalls.size() == 1);  // only the snapshot's recall
  f.store().RequireClean();
}

TEST_CASE("Version sets over RPC: clone of a clone of a snapshot and deletes return all space",
          "[rpc]") {
  RpcFixture f;
  auto c = f.Connect();
  auto s = c->session();
  uint64_t free0 = s.poolStatsRequest().send().wait(f.ws()).getStats().getFreeBlocks();
  Create(f, s, "gold", 256 * kBs);
  {
    auto g = Open(f, s, "gold", proto::OpenMode::READ_WRITE);
    REQUIRE(CommitStatus(f, g.volume, Prepare(f, g.volume, 0, 256 * kBs)).ok());
    REQUIRE(StatusOf(g.volume.closeRequest().send(), f.ws()).ok());
  }
  REQUIRE(CopyStatus(f, s, true, "gold", "s1").ok());
  REQUIRE(CopyStatus(f, s, false, "s1", "c1").ok());
  REQUIRE(CopyStatus(f, s, false, "c1", "c2").ok());
  {
    auto v = Open(f, s, "c2", proto::OpenMode::READ_WRITE);
    auto e = Prepare(f, v.volume, 8 * kBs, 8 * kBs);
    REQUIRE(CommitStatus(f, v.volume, e).ok());
    auto info_req = s.infoRequest();
    info_req.setName("c2");
    auto info_response = info_req.send().wait(f.ws());
    auto info = info_response.getInfo();
    CHECK(info.getMappedBytes() == 256 * kBs);
    CHECK(info.getExclusiveBytes() == 8 * kBs);
    CHECK(info.getSharedBytes() == 248 * kBs);
  }
  f.Spin();
  f.store().RequireClean();
  for (const char* name : {"s1", "gold", "c2", "c1"}) {
    REQUIRE(DeleteStatus(f, s, name).ok());
    f.store().RequireClean();
  }
  CHECK(s.poolStatsRequest().send().wait(f.ws()).getStats().getFreeBlocks() == free0);
}

TEST_CASE("Concurrent commits are group-committed and fail independently", "[rpc]") {
  RpcFixture f;
  auto c1 = f.Connect("h1");
  auto c2 = f.Connect("h2");
  Create(f, c1->session(), "a", 64 * kBs);
  Create(f, c1->session(), "b", 64 * kBs);
  auto va = Open(f, c1->session(), "a", proto::OpenMode::READ_WRITE);
  auto vb = Open(f, c2->session(), "b", proto::OpenMode::READ_WRITE);
  std::vector<std::vector<MapExtent>> prepared;
  for (int i = 0; i < 8; ++i)
    prepared.push_back(Prepare(f, i % 2 ? vb.volume : va.volume, i * kBs, kBs));
  kj::Vector<kj::Promise<Status>> inflight;
  auto send = [&](proto::Volume::Client v, const std::vector<MapExtent>& extents) {
    auto req = v.commitRequest();
    auto list = req.initExtents(static_cast<unsigned>(extents.size()));
    for (size_t i = 0; i < extents.size(); ++i) {
      auto e = list[static_cast<unsigned>(i)];
      e.setLogical(extents[i].logical);
      e.setLength(extents[i].length);
      e.setPhysical(extents[i].physical);
      e.setGeneration(extents[i].generation);
    }
    return req.send().then([](auto) { return Status::Ok(); },
                           [](kj::Exception&& e) { return protocol::StatusFromException(e); });
  };
  for (int i = 0; i < 8; ++i) inflight.add(send(i % 2 ? vb.volume : va.volume, prepared[i]));
  auto bogus = prepared[0];
  bogus[0].generation += 1000;
  inflight.add(send(va.volume, bogus));
  auto results = kj::joinPromises(inflight.releaseAsArray()).wait(f.ws());
  for (int i = 0; i < 8; ++i) CHECK(results[i].ok());
  CHECK(results[8].code() == StatusCode::kAborted);
  for (int i = 0; i < 8; ++i) {
    CHECK(Map(f, i % 2 ? vb.volume : va.volume, i * kBs, kBs)[0] == prepared[i][0]);
  }
  f.store().RequireClean();
}

TEST_CASE("The protocol works over TCP too", "[rpc]") {
  RpcFixture f(4096, 4096, "tcp:127.0.0.1:0");
  CHECK(f.address().kind == protocol::ServerAddress::Kind::kTcp);
  CHECK(f.address().port != 0);
  auto c = f.Connect();
  Create(f, c->session(), "t", kBs);
  auto bad = protocol::Connection::ConnectBlocking(f.io(), f.address(), "h", "bad");
  CHECK(bad.status().code() == StatusCode::kPermissionDenied);
}

TEST_CASE("Connecting to nothing gives unavailable", "[rpc]") {
  auto io = kj::setupAsyncIo();
  auto addr = protocol::ParseServerAddress("unix:/tmp/tapmap-no-such-socket-here");
  REQUIRE(addr.ok());
  auto conn = protocol::Connection::ConnectBlocking(io, *addr, "h", "s");
  CHECK(conn.status().code() == StatusCode::kUnavailable);
}

}  // namespace
}  // namespace tapmap::mapserver

namespace tapmap::mapserver {
namespace {

// The live-migration pattern at the protocol level: a block written in place under
// one rw lease is never written in place under the next one (a new physical block
// and generation), and it is owned (not cacheable) to readers only while the lease
// that may change it lasts.
TEST_CASE("Each rw lease writes in place only the blocks it allocated", "[rpc]") {
  RpcFixture f;
  auto ca = f.Connect();
  auto cb = f.Connect();
  auto sa = ca->session();
  auto sb = cb->session();
  Create(f, sa, "vm", 64 * kBs);
  MapExtent a_block;
  {
    auto a = Open(f, sa, "vm", proto::OpenMode::READ_WRITE);
    auto e = Prepare(f, a.volume, 0, kBs);
    REQUIRE(CommitStatus(f, a.volume, e).ok());
    a_block = e[0];
    CHECK(Prepare(f, a.volume, 0, kBs)[0] == a_block);  // owned by this lease: in place
    auto reader = Open(f, sb, "vm", proto::OpenMode::READ_ONLY);
    CHECK(Map(f, reader.volume, 0, kBs)[0].state == ExtentState::kOwned);  // may change
    REQUIRE(StatusOf(a.volume.closeRequest().send(), f.ws()).ok());
    auto frozen = Map(f, reader.volume, 0, kBs)[0];
    CHECK(frozen.state == ExtentState::kShared);  // no writer: immutable
    CHECK(frozen.physical == a_block.physical);
  }
  auto b = Open(f, sb, "vm", proto::OpenMode::READ_WRITE);
  CHECK(Map(f, b.volume, 0, kBs)[0].state == ExtentState::kShared);
  auto e = Prepare(f, b.volume, 0, kBs);
  CHECK(e[0].physical != a_block.physical);
  CHECK(e[0].generation > a_block.generation);
  REQUIRE(CommitStatus(f, b.volume, e).ok());
  CHECK(Map(f, b.volume, 0, kBs)[0].state == ExtentState::kOwned);
  f.store().RequireClean();
}

// Live migration (leases.md "Standby"): a destination's rw open while the source holds
// the lease is a standby that maps and reads like a reader, may not write, sees the
// source's blocks as owned (not cacheable), and becomes the holder with a new epoch
// when the source closes; the source's blocks are then shared to it.
TEST_CASE("A standby rw open is promoted when the holder closes", "[rpc]") {
  RpcFixture f;
  auto src = f.Connect("source");
  auto dst = f.Connect("destination");
  Create(f, src->session(), "vm", 64 * kBs);
  auto a = Open(f, src->session(), "vm", proto::OpenMode::READ_WRITE);
  CHECK_FALSE(a.standby);
  auto e = Prepare(f, a.volume, 0, kBs);
  REQUIRE(CommitStatus(f, a.volume, e).ok());
  auto b = Open(f, dst->session(), "vm", proto::OpenMode::READ_WRITE);
  REQUIRE(b.standby);
  CHECK(b.lease_epoch == 0);
  auto info_req = src->session().infoRequest();
  info_req.setName("vm");
  auto info = info_req.send().wait(f.ws());
  CHECK(std::string(info.getInfo().getWriter().cStr()) == "source");
  CHECK(std::string(info.getInfo().getStandby().cStr()) == "destination");
  CHECK(Map(f, b.volume, 0, kBs)[0].state == ExtentState::kOwned);  // the source may change it
  auto pw = b.volume.prepareWriteRequest();
  pw.initRanges(1)[0].setLength(kBs);
  CHECK(StatusOf(pw.send(), f.ws()).code() == StatusCode::kReadOnly);
  // The source's commit is recalled from the standby, as from any reader.
  auto e2 = Prepare(f, a.volume, kBs, kBs);
  REQUIRE(CommitStatus(f, a.volume, e2).ok());
  CHECK(b.log->recalls.size() == 1);
  CHECK(b.log->promotions.empty());
  // The source closes (its domain was destroyed after the migration): promoted.
  REQUIRE(StatusOf(a.volume.closeRequest().send(), f.ws()).ok());
  REQUIRE(f.WaitUntil([&] { return !b.log->promotions.empty(); }));
  CHECK(b.log->promotions[0] > e2[0].generation);
  auto mapped = Map(f, b.volume, 0, kBs)[0];
  CHECK(mapped.state == ExtentState::kShared);  // the source's block: copy on write
  auto mine = Prepare(f, b.volume, 0, kBs);
  CHECK(mine[0].physical != e[0].physical);
  REQUIRE(CommitStatus(f, b.volume, mine).ok());
  CHECK(Map(f, b.volume, 0, kBs)[0].state == ExtentState::kOwned);
  f.store().RequireClean();
}

Opened Reclaim(RpcFixture& f, proto::Session::Client session, const std::string& name,
               uint64_t epoch, Status* status) {
  auto log = std::make_shared<RecordingCallback::Log>();
  auto req = session.openRequest();
  req.setName(name);
  req.setMode(proto::OpenMode::READ_WRITE);
  req.setCallback(kj::heap<RecordingCallback>(log));
  req.setReclaim(true);
  req.setReclaimEpoch(epoch);
  Opened out{nullptr, log};
  *status = protocol::RunCatching([&] {
    auto resp = req.send().wait(f.ws());
    out = Opened{resp.getVolume(), log, resp.getStandby(), resp.getLeaseEpoch()};
  });
  return out;
}

// After a restart (leases.md "Grace period"): the recorded rw holder reclaims its lease
// with its epoch (a wrong epoch or another host is refused); until every recorded
// host instance said reclaimComplete, another host's rw open and a delete wait; then
// the other host's open is a standby and the delete is busy.
TEST_CASE("A restarted server's grace period admits only reclaims", "[rpc]") {
  RpcFixture f;
  auto holder = f.Connect("h1", testing::kSecret, 0x1111);
  Create(f, holder->session(), "vm", 64 * kBs);
  Create(f, holder->session(), "other", 64 * kBs);
  auto w = Open(f, holder->session(), "vm", proto::OpenMode::READ_WRITE);
  REQUIRE(w.lease_epoch != 0);
  auto e = Prepare(f, w.volume, 0, kBs);
  REQUIRE(CommitStatus(f, w.volume, e).ok());
  // A clone moves the holder's lease to a new epoch it is not told about (the record is).
  REQUIRE(CopyStatus(f, holder->session(), false, "vm", "vm-clone").ok());
  auto e1 = Prepare(f, w.volume, kBs, kBs);
  REQUIRE(CommitStatus(f, w.volume, e1).ok());
  w.volume = nullptr;
  holder = nullptr;
  f.Restart();
  CHECK(f.service().in_grace());

  auto h2 = f.Connect("h2", testing::kSecret, 0x2222);
  Status s;
  Reclaim(f, h2->session(), "vm", w.lease_epoch, &s);
  CHECK(s.code() == StatusCode::kAborted);  // not the recorded holder
  // h2's rw open of another volume (nobody held it) waits for the grace period too.
  auto other_req = h2->session().openRequest();
  other_req.setName("other");
  other_req.setMode(proto::OpenMode::READ_WRITE);
  other_req.setCallback(kj::heap<RecordingCallback>(std::make_shared<RecordingCallback::Log>()));
  auto other = other_req.send();
  auto del_req = h2->session().deleteRequest();
  del_req.setName("vm");
  auto del = del_req.send();
  f.Spin();
  CHECK(f.service().in_grace());

  auto back = f.Connect("h1", testing::kSecret, 0x1111);  // the same instance, back
  Reclaim(f, back->session(), "vm", e1[0].generation + 1, &s);
  CHECK(s.code() == StatusCode::kAborted);  // an epoch newer than any it was given
  auto r = Reclaim(f, back->session(), "vm", w.lease_epoch, &s);
  REQUIRE(s.ok());
  CHECK(r.lease_epoch > w.lease_epoch);  // the recorded one, after the clone
  CHECK(Map(f, r.volume, 0, kBs)[0].state == ExtentState::kShared);  // shared with the clone
  CHECK(Map(f, r.volume, kBs, kBs)[0].state == ExtentState::kOwned);  // written since: its own
  CHECK(f.service().in_grace());  // until it says it reclaimed all
  back->session().reclaimCompleteRequest().send().wait(f.ws());
  CHECK_FALSE(f.service().in_grace());
  auto other_resp = other.wait(f.ws());
  CHECK_FALSE(other_resp.getStandby());
  CHECK(StatusOf(kj::mv(del), f.ws()).code() == StatusCode::kBusy);  // h1 holds it again
  f.store().RequireClean();
}

// A snapshot makes the writer's blocks shared; deleting the snapshot makes them
// exclusive again, but another host may have cached them meanwhile (reading the
// snapshot), so the writer must still copy them on write.
TEST_CASE("Blocks shared by a deleted snapshot are never written in place again", "[rpc]") {
  RpcFixture f;
  auto c = f.Connect();
  auto s = c->session();
  Create(f, s, "vm", 64 * kBs);
  auto w = Open(f, s, "vm", proto::OpenMode::READ_WRITE);
  auto first = Prepare(f, w.volume, 0, kBs);
  REQUIRE(CommitStatus(f, w.volume, first).ok());
  REQUIRE(CopyStatus(f, s, true, "vm", "snap").ok());
  REQUIRE(DeleteStatus(f, s, "snap").ok());
  CHECK(Map(f, w.volume, 0, kBs)[0].state == ExtentState::kShared);
  auto next = Prepare(f, w.volume, 0, kBs);
  CHECK(next[0].physical != first[0].physical);
  REQUIRE(CommitStatus(f, w.volume, next).ok());
  CHECK(Prepare(f, w.volume, 0, kBs)[0] == next[0]);  // allocated after the snapshot: owned
  f.store().RequireClean();
}

// A reader on another host must see what a writer flushed before the read: the
// writer's commit (which its flush waits for) is answered only once every other
// opener dropped its maps of the committed ranges, or lost its lease for not
// answering. (Found by the cluster model check: the recall used to be sent after the
// answer, and a read right after the writer's flush could still use the old map.)
TEST_CASE("A commit is answered only after the other openers dropped their maps of it", "[rpc]") {
  RpcFixture f;  // recall timeout 300 ms
  auto c = f.Connect();
  auto s = c->session();
  Create(f, s, "v", 64 * kBs);
  auto w = Open(f, s, "v", proto::OpenMode::READ_WRITE);
  auto r = Open(f, s, "v", proto::OpenMode::READ_ONLY);
  r.log->stall_recalls = true;
  REQUIRE(f.service().opener_count() == 2);
  REQUIRE(CommitStatus(f, w.volume, Prepare(f, w.volume, 0, kBs)).ok());
  CHECK(r.log->recalls.size() == 1);
  CHECK(f.service().opener_count() == 1);  // the silent reader was revoked first
  f.store().RequireClean();
}

}  // namespace
}  // namespace tapmap::mapserver

namespace tapmap::mapserver::testing {
namespace {

// A PoolFencer whose fences the test settles by hand.
class ManualFencer final : public PoolFencer {
 public:
  kj::Promise<void> Fence(std::vector<std::string> clients) override {
    calls.push_back(std::move(clients));
    auto paf = kj::newPromiseAndFulfiller<void>();
    pending.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
  std::vector<std::vector<std::string>> calls;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> pending;
};

}  // namespace

// leases.md "Fencing on a RADOS pool": an instance that expires has its pool clients
// fenced before its openers go; until the fence is in force nobody else gets its
// volume rw; a failed fence keeps the openers and is tried again.
TEST_CASE("An expired instance's pool clients are fenced before its volumes move on", "[rpc]") {
  ManualFencer fencer;
  RpcFixture f(4096, 4096, "", &fencer);
  auto admin = f.Connect("admin");
  Create(f, admin->session(), "vm", 64 * kBs);
  auto a = f.Connect("hostA", kSecret, 7, "v1:10.0.0.1:0/111");
  {
    auto again = f.Connect("hostA", kSecret, 7, "v1:10.0.0.1:0/222");  // the same instance, a new client
    auto held = Open(f, again->session(), "vm", proto::OpenMode::READ_WRITE);
    CHECK_FALSE(held.standby);
    a = nullptr;  // hostA's connections go: its opener is orphaned, its lease runs out
  }
  auto b = f.Connect("hostB", kSecret, 9, "v1:10.0.0.2:0/333");
  // hostB renews its lease while it waits (a live host does it every T/5).
  int ticks = 0;
  auto renewing = [&](std::function<bool()> pred) {
    return [&, pred]() {
      if (++ticks % 20 == 0) b->session().renewRequest().send().ignoreResult().detach([](kj::Exception&&) {});
      return pred();
    };
  };
  auto req = b->session().openRequest();
  req.setName("vm");
  req.setMode(proto::OpenMode::READ_WRITE);
  req.setCallback(kj::heap<RecordingCallback>(std::make_shared<RecordingCallback::Log>()));
  bool granted = false;
  Status status;
  auto open = req.send()
                  .then([&](auto) { granted = true; },
                        [&](kj::Exception&& e) { status = protocol::StatusFromException(e); })
                  .eagerlyEvaluate(nullptr);
  // hostA expires (1.1 s): the fencer is asked for both of its clients.
  REQUIRE(f.WaitUntil(renewing([&] { return !fencer.calls.empty(); }), 5 * kj::SECONDS));
  CHECK(fencer.calls[0] == std::vector<std::string>{"v1:10.0.0.1:0/111", "v1:10.0.0.1:0/222"});
  f.Spin();
  CHECK_FALSE(granted);  // the fence is not in force yet: the volume stays hostA's
  CHECK(status.ok());
  // The fence fails (monitors unreachable): the openers stay, it is tried again.
  fencer.pending[0]->reject(protocol::ToException(Status::Unavailable("mon unreachable")));
  REQUIRE(f.WaitUntil(renewing([&] { return fencer.calls.size() == 2; }), 5 * kj::SECONDS));
  f.Spin();
  CHECK_FALSE(granted);
  // In force: hostA's opener goes, hostB gets the volume.
  fencer.pending[1]->fulfill();
  bool settled = f.WaitUntil(renewing([&] { return granted || !status.ok(); }), 5 * kj::SECONDS);
  INFO("openers " << f.service().opener_count() << ", fences " << fencer.calls.size());
  REQUIRE(settled);
  CHECK(status.ok());
  CHECK(granted);
  CHECK(fencer.calls.size() == 2);  // hostB was never fenced
  open.wait(f.ws());
}

}  // namespace tapmap::mapserver::testing
