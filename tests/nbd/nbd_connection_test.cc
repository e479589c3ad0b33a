// Specification of one NBD connection (handshake + transmission) against RAM devices,
// including hostile input: every case must end in an error reply or a closed
// connection, never a crash or an access outside the volume.
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <set>
#include <thread>

#include "tapdisk-map/nbd/connection.h"
#include "tests/nbd/memory_catalog.h"
#include "tests/nbd/nbd_test_client.h"
#include "tests/support/wait_until.h"

namespace tapmap::nbd {
namespace {

using testing::MemoryCatalog;
using testing::NbdTestClient;
namespace asio = boost::asio;

constexpr uint64_t kVolumeSize = 8u << 20;

class Harness {
 public:
  Harness() : work_(asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {
    disk = catalog.Add(io_, "disk", kVolumeSize);
    snap = catalog.Add(io_, "snap", kVolumeSize, /*read_only=*/true);
    options.transmission.max_request_bytes = 1u << 20;
    options.transmission.max_in_flight_bytes = 4u << 20;
    options.handshake.max_request_bytes = 1u << 20;
  }
  ~Harness() {
    for (auto& c : connections_) c->Stop();
    WaitAllEnded();
    work_.reset();
    thread_.join();
  }

  NbdTestClient Connect() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    Stream::Socket socket(asio::make_strand(io_));
    socket.assign(asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]);
    Stream stream(std::move(socket));
    started_++;
    auto connection = std::make_shared<Connection>(std::move(stream), catalog, options, Logger("nbd-test", LogLevel::kError),
                                                   [this] { ended_++; });
    connection->Start();
    connections_.push_back(connection);
    return NbdTestClient(UniqueFd(fds[1]));
  }

  // Bounded wait for every connection to have ended.
  bool WaitAllEnded() {
    return tapmap::testing::WaitUntil([&] { return ended_.load() == started_; });
  }

  ConnectionOptions options;
  MemoryCatalog catalog;
  std::shared_ptr<tapmap::testing::MemoryBlockDevice> disk, snap;

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
  std::vector<std::shared_ptr<Connection>> connections_;
  int started_ = 0;
  std::atomic<int> ended_{0};
};

std::vector<uint8_t> Pattern(size_t size, uint8_t seed) {
  std::vector<uint8_t> data(size);
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return data;
}

constexpr uint16_t kRead = static_cast<uint16_t>(Command::kRead);
constexpr uint16_t kWrite = static_cast<uint16_t>(Command::kWrite);
constexpr uint16_t kFlush = static_cast<uint16_t>(Command::kFlush);
constexpr uint16_t kTrim = static_cast<uint16_t>(Command::kTrim);
constexpr uint16_t kWriteZeroes = static_cast<uint16_t>(Command::kWriteZeroes);
constexpr uint16_t kDisc = static_cast<uint16_t>(Command::kDisconnect);

TEST_CASE("handshake advertises size, flags and block sizes") {
  Harness h;
  NbdTestClient c = h.Connect();
  uint16_t greeting_flags = 0;
  REQUIRE(c.ReadGreeting(&greeting_flags));
  CHECK((greeting_flags & kFlagFixedNewstyle));
  CHECK((greeting_flags & kFlagNoZeroes));
  c.SendClientFlags(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  c.SendOption(static_cast<uint32_t>(Option::kGo), NbdTestClient::GoPayload("disk", {kInfoBlockSize}));
  bool saw_export = false, saw_block = false;
  for (;;) {
    auto r = c.ReadOptionReply();
    REQUIRE(r);
    if (r->type == kRepAck) break;
    REQUIRE(r->type == kRepInfo);
    uint16_t info = GetBe16(r->data.data());
    if (info == kInfoExport) {
      saw_export = true;
      CHECK(GetBe64(r->data.data() + 2) == kVolumeSize);
      uint16_t flags = GetBe16(r->data.data() + 10);
      CHECK((flags & kTxHasFlags));
      CHECK((flags & kTxSendFlush));
      CHECK((flags & kTxSendFua));
      CHECK((flags & kTxSendTrim));
      CHECK((flags & kTxSendWriteZeroes));
      CHECK((flags & kTxCanMultiConn));
      CHECK_FALSE((flags & kTxReadOnly));
    } else if (info == kInfoBlockSize) {
      saw_block = true;
      CHECK(GetBe32(r->data.data() + 2) == 512);
      CHECK(GetBe32(r->data.data() + 6) == 65536);
      CHECK(GetBe32(r->data.data() + 10) == (1u << 20));
    }
  }
  CHECK(saw_export);
  CHECK(saw_block);
}

TEST_CASE("data written is read back, with simple and structured replies") {
  for (bool structured : {false, true}) {
    Harness h;
    NbdTestClient c = h.Connect();
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(c.Handshake("disk", structured, &size, &flags));
    CHECK(size == kVolumeSize);
    auto data = Pattern(128 * 1024, structured ? 3 : 5);
    c.SendRequest(kWrite, kCmdFlagFua, 1, 1 << 20, static_cast<uint32_t>(data.size()), data);
    auto w = c.ReadSimpleReply(0);
    REQUIRE(w);
    CHECK(w->handle == 1);
    CHECK(w->error == 0);
    c.SendRequest(kRead, 0, 2, 1 << 20, static_cast<uint32_t>(data.size()));
    auto r = structured ? c.ReadStructuredReply() : c.ReadSimpleReply(static_cast<uint32_t>(data.size()));
    REQUIRE(r);
    CHECK(r->handle == 2);
    CHECK(r->error == 0);
    CHECK(r->data == data);
    auto snapshot = h.disk->Snapshot();
    CHECK(std::equal(data.begin(), data.end(), snapshot.begin() + (1 << 20)));
    CHECK(h.disk->counters().fua_writes == 1);
    c.SendRequest(kDisc, 0, 3, 0, 0);
    CHECK(c.PeerClosed());
  }
}

TEST_CASE("many requests in flight are all answered, matched by handle") {
  Harness h;
  NbdTestClient c = h.Connect();
  uint64_t size = 0;
  uint16_t flags = 0;
  REQUIRE(c.Handshake("disk", false, &size, &flags));
  constexpr int kRequests = 64;
  for (int i = 0; i < kRequests; ++i) {
    auto data = Pattern(4096, static_cast<uint8_t>(i));
    c.SendRequest(kWrite, 0, 1000 + i, uint64_t(i) * 4096, 4096, data);
  }
  std::set<uint64_t> handles;
  for (int i = 0; i < kRequests; ++i) {
    auto w = c.ReadSimpleReply(0);
    REQUIRE(w);
    CHECK(w->error == 0);
    handles.insert(w->handle);
  }
  CHECK(handles.size() == kRequests);
  CHECK(*handles.begin() == 1000);
  for (int i = 0; i < kRequests; ++i) c.SendRequest(kRead, 0, 5000 + i, uint64_t(i) * 4096, 4096);
  for (int i = 0; i < kRequests; ++i) {
    auto r = c.ReadSimpleReply(4096);
    REQUIRE(r);
    REQUIRE(r->handle >= 5000);
    CHECK(r->data == Pattern(4096, static_cast<uint8_t>(r->handle - 5000)));
  }
  c.SendRequest(kFlush, 0, 9, 0, 0);
  auto f = c.ReadSimpleReply(0);
  REQUIRE(f);
  CHECK(f->error == 0);
  CHECK(h.disk->counters().flushes == 1);
}

TEST_CASE("trim and write-zeroes clear data, NO_HOLE writes real zeros") {
  Harness h;
  NbdTestClient c = h.Connect();
  uint64_t size = 0;
  uint16_t flags = 0;
  REQUIRE(c.Handshake("disk", true, &size, &flags));
  auto data = Pattern(3u << 20, 9);
  for (uint32_t off = 0; off < data.size(); off += 1u << 20) {
    c.SendRequest(kWrite, 0, off, off, 1u << 20, std::vector<uint8_t>(data.begin() + off, data.begin() + off + (1u << 20)));
    REQUIRE(c.ReadSimpleReply(0)->error == 0);
  }
  c.SendRequest(kTrim, kCmdFlagFua, 1, 0, 65536);
  CHECK(c.ReadSimpleReply(0)->error == 0);
  c.SendRequest(kWriteZeroes, 0, 2, 65536, 65536);
  CHECK(c.ReadSimpleReply(0)->error == 0);
  c.SendRequest(kWriteZeroes, kCmdFlagNoHole, 3, 131072, (2u << 20) + 4096);  // > one zero chunk
  CHECK(c.ReadSimpleReply(0)->error == 0);
  auto snapshot = h.disk->Snapshot();
  uint64_t zero_end = 131072 + (2u << 20) + 4096;
  CHECK(std::all_of(snapshot.begin(), snapshot.begin() + zero_end, [](uint8_t b) { return b == 0; }));
  CHECK(std::equal(data.begin() + zero_end, data.end(), snapshot.begin() + zero_end));
  auto counters = h.disk->counters();
  CHECK(counters.discards == 1);
  CHECK(counters.write_zeroes == 1);
  CHECK(counters.flushes == 1);  // the FUA trim
}

TEST_CASE("invalid requests get errors and the connection goes on") {
  Harness h;
  NbdTestClient c = h.Connect();
  uint64_t size = 0;
  uint16_t flags = 0;
  REQUIRE(c.Handshake("disk", false, &size, &flags));
  struct Case {
    uint16_t type, flags;
    uint64_t offset;
    uint32_t length;
    uint32_t error;
  };
  const Case cases[] = {
      {kRead, 0, kVolumeSize, 512, kErrInval},                // just beyond the end
      {kRead, 0, kVolumeSize - 512, 1024, kErrInval},         // straddles the end
      {kRead, 0, UINT64_MAX - 511, 1024, kErrInval},          // offset + length overflows
      {kRead, 0, 100, 512, kErrInval},                        // unaligned offset
      {kRead, 0, 0, 100, kErrInval},                          // unaligned length
      {kRead, 0, 0, 0, kErrInval},                            // zero length
      {kRead, 0, 0, 2u << 20, kErrInval},                     // above the maximum block size
      {kRead, kCmdFlagFua | 0x80, 0, 512, kErrInval},         // unknown flags
      {kTrim, 0, UINT64_MAX - 511, 1024, kErrInval},
      {kWriteZeroes, 0, kVolumeSize, 512, kErrNoSpc},
      {kWriteZeroes, kCmdFlagFastZero, 0, 512, kErrInval},    // not advertised
      {static_cast<uint16_t>(Command::kCache), 0, 0, 512, kErrInval},
      {static_cast<uint16_t>(Command::kBlockStatus), 0, 0, 512, kErrInval},
      {77, 0, 0, 512, kErrInval},                             // unknown command
  };
  uint64_t handle = 100;
  for (const Case& k : cases) {
    c.SendRequest(k.type, k.flags, handle, k.offset, k.length);
    auto r = c.ReadSimpleReply(0);
    REQUIRE(r);
    CHECK(r->handle == handle);
    CHECK(r->error == k.error);
    handle++;
  }
  // A write beyond the end: its payload is consumed, ENOSPC, and the stream stays in sync.
  c.SendRequest(kWrite, 0, 7, kVolumeSize - 512, 1024, std::vector<uint8_t>(1024, 0xee));
  CHECK(c.ReadSimpleReply(0)->error == kErrNoSpc);
  c.SendRequest(kWrite, 0, 8, 0, 512, std::vector<uint8_t>(512, 0xab));
  CHECK(c.ReadSimpleReply(0)->error == 0);
  auto snapshot = h.disk->Snapshot();
  CHECK(snapshot[0] == 0xab);
  CHECK(snapshot[kVolumeSize - 1] == 0);
}

TEST_CASE("structured read errors carry the error and a message") {
  Harness h;
  NbdTestClient c = h.Connect();
  uint64_t size = 0;
  uint16_t flags = 0;
  REQUIRE(c.Handshake("disk", true, &size, &flags));
  CHECK((flags & kTxSendDf));
  c.SendRequest(kRead, 0, 42, kVolumeSize, 4096);
  auto r = c.ReadStructuredReply();
  REQUIRE(r);
  CHECK(r->handle == 42);
  CHECK(r->error == kErrInval);
  h.disk->FailWith(Status::IoError("disk on fire"));
  c.SendRequest(kRead, 0, 43, 0, 4096);
  r = c.ReadStructuredReply();
  REQUIRE(r);
  CHECK(r->error == kErrIo);
}

TEST_CASE("read-only exports refuse writes with EPERM") {
  Harness h;
  NbdTestClient c = h.Connect();
  uint64_t size = 0;
  uint16_t flags = 0;
  REQUIRE(c.Handshake("snap", false, &size, &flags));
  CHECK((flags & kTxReadOnly));
  c.SendRequest(kWrite, 0, 1, 0, 512, std::vector<uint8_t>(512, 1));
  CHECK(c.ReadSimpleReply(0)->error == kErrPerm);
  c.SendRequest(kTrim, 0, 2, 0, 512);
  CHECK(c.ReadSimpleReply(0)->error == kErrPerm);
  c.SendRequest(kRead, 0, 3, 0, 512);
  CHECK(c.ReadSimpleReply(512)->error == 0);
  CHECK(h.snap->counters().writes == 0);
}

TEST_CASE("protocol violations in transmission close the connection") {
  SECTION("bad request magic") {
    Harness h;
    NbdTestClient c = h.Connect();
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(c.Handshake("disk", false, &size, &flags));
    uint8_t junk[28] = {1, 2, 3};
    c.WriteRaw(junk, sizeof(junk));
    CHECK(c.PeerClosed());
  }
  SECTION("write larger than the maximum") {
    Harness h;
    NbdTestClient c = h.Connect();
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(c.Handshake("disk", false, &size, &flags));
    c.SendRequest(kWrite, 0, 1, 0, 0xffffffffu);
    CHECK(c.PeerClosed());
    CHECK(h.disk->counters().writes == 0);
  }
  SECTION("truncated request and payload") {
    Harness h;
    {
      NbdTestClient c = h.Connect();
      uint64_t size = 0;
      uint16_t flags = 0;
      REQUIRE(c.Handshake("disk", false, &size, &flags));
      c.SendRequest(kWrite, 0, 1, 0, 4096, std::vector<uint8_t>(100, 1));
    }  // client closes mid-payload
    CHECK(h.WaitAllEnded());
    CHECK(h.disk->counters().writes == 0);
  }
  SECTION("soft disconnect after writes flushes them") {
    Harness h;
    NbdTestClient c = h.Connect();
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(c.Handshake("disk", false, &size, &flags));
    c.SendRequest(kWrite, 0, 1, 0, 512, std::vector<uint8_t>(512, 1));
    CHECK(c.ReadSimpleReply(0)->error == 0);
    c.SendRequest(kDisc, 0, 2, 0, 0);
    CHECK(c.PeerClosed());
    CHECK(h.WaitAllEnded());
    CHECK(h.disk->counters().flushes == 1);
  }
}

TEST_CASE("option negotiation handles unknown, malformed and hostile options") {
  SECTION("unknown option, bad GO payloads, unknown export, then a good GO") {
    Harness h;
    NbdTestClient c = h.Connect();
    uint16_t gflags = 0;
    REQUIRE(c.ReadGreeting(&gflags));
    c.SendClientFlags(kClientFlagFixedNewstyle);
    c.SendOption(4242, {1, 2, 3});
    auto r = c.ReadOptionReply();
    REQUIRE(r);
    CHECK(r->option == 4242);
    CHECK(r->type == kRepErrUnsup);
    c.SendOption(static_cast<uint32_t>(Option::kStartTls), {});
    CHECK(c.ReadOptionReply()->type == kRepErrPolicy);
    // Name length pointing past the end of the data.
    std::vector<uint8_t> bad = {0xff, 0xff, 0xff, 0xff, 0, 0};
    c.SendOption(static_cast<uint32_t>(Option::kGo), bad);
    CHECK(c.ReadOptionReply()->type == kRepErrInvalid);
    // Info-request count not matching the data.
    auto go = NbdTestClient::GoPayload("disk", {1, 2});
    go.pop_back();
    c.SendOption(static_cast<uint32_t>(Option::kInfo), go);
    CHECK(c.ReadOptionReply()->type == kRepErrInvalid);
    c.SendOption(static_cast<uint32_t>(Option::kGo), NbdTestClient::GoPayload("nope"));
    CHECK(c.ReadOptionReply()->type == kRepErrUnknown);
    c.SendOption(static_cast<uint32_t>(Option::kList), {9});
    CHECK(c.ReadOptionReply()->type == kRepErrInvalid);
    c.SendOption(static_cast<uint32_t>(Option::kList), {});
    std::vector<std::string> names;
    for (;;) {
      auto e = c.ReadOptionReply();
      REQUIRE(e);
      if (e->type == kRepAck) break;
      REQUIRE(e->type == kRepServer);
      names.emplace_back(e->data.begin() + 4, e->data.end());
    }
    CHECK(names == std::vector<std::string>{"disk", "snap"});
    c.SendOption(static_cast<uint32_t>(Option::kInfo), NbdTestClient::GoPayload("disk"));
    for (;;) {
      auto e = c.ReadOptionReply();
      REQUIRE(e);
      if (e->type == kRepAck) break;
      CHECK(e->type == kRepInfo);
    }
    c.SendOption(static_cast<uint32_t>(Option::kGo), NbdTestClient::GoPayload("disk"));
    for (;;) {
      auto e = c.ReadOptionReply();
      REQUIRE(e);
      if (e->type == kRepAck) break;
    }
    c.SendRequest(kRead, 0, 1, 0, 512);
    CHECK(c.ReadSimpleReply(512)->error == 0);
  }
  SECTION("unknown client flags close the connection") {
    Harness h;
    NbdTestClient c = h.Connect();
    uint16_t gflags = 0;
    REQUIRE(c.ReadGreeting(&gflags));
    c.SendClientFlags(0x80);
    CHECK(c.PeerClosed());
  }
  SECTION("oversized option data closes the connection") {
    Harness h;
    NbdTestClient c = h.Connect();
    uint16_t gflags = 0;
    REQUIRE(c.ReadGreeting(&gflags));
    c.SendClientFlags(kClientFlagFixedNewstyle);
    auto header = EncodeOptionHeader({kOptionMagic, static_cast<uint32_t>(Option::kGo), 0xfffffff0u});
    c.WriteRaw(header.data(), header.size());
    auto r = c.ReadOptionReply();
    REQUIRE(r);
    CHECK(r->type == kRepErrTooBig);
    CHECK(c.PeerClosed());
  }
  SECTION("bad option magic closes the connection") {
    Harness h;
    NbdTestClient c = h.Connect();
    uint16_t gflags = 0;
    REQUIRE(c.ReadGreeting(&gflags));
    c.SendClientFlags(kClientFlagFixedNewstyle);
    auto header = EncodeOptionHeader({0x1234, 7, 0});
    c.WriteRaw(header.data(), header.size());
    CHECK(c.PeerClosed());
  }
  SECTION("abort is acknowledged") {
    Harness h;
    NbdTestClient c = h.Connect();
    uint16_t gflags = 0;
    REQUIRE(c.ReadGreeting(&gflags));
    c.SendClientFlags(kClientFlagFixedNewstyle);
    c.SendOption(static_cast<uint32_t>(Option::kAbort), {});
    CHECK(c.ReadOptionReply()->type == kRepAck);
    CHECK(c.PeerClosed());
  }
  SECTION("EXPORT_NAME: known export enters transmission, unknown closes") {
    Harness h;
    NbdTestClient c = h.Connect();
    uint16_t gflags = 0;
    REQUIRE(c.ReadGreeting(&gflags));
    c.SendClientFlags(kClientFlagFixedNewstyle);  // no NO_ZEROES: expect the padding
    c.SendOption(static_cast<uint32_t>(Option::kExportName), {'d', 'i', 's', 'k'});
    uint8_t reply[kExportNameReplySize + kExportNameReplyPadding];
    REQUIRE(c.ReadExact(reply, sizeof(reply)));
    CHECK(GetBe64(reply) == kVolumeSize);
    c.SendRequest(kRead, 0, 1, 0, 512);
    CHECK(c.ReadSimpleReply(512)->error == 0);

    NbdTestClient d = h.Connect();
    REQUIRE(d.ReadGreeting(&gflags));
    d.SendClientFlags(kClientFlagFixedNewstyle | kClientFlagNoZeroes);
    d.SendOption(static_cast<uint32_t>(Option::kExportName), {'x'});
    CHECK(d.PeerClosed());
  }
  SECTION("a silent client is cut at the handshake deadline") {
    Harness h;
    h.options.handshake_timeout = std::chrono::milliseconds(50);
    NbdTestClient c = h.Connect();
    CHECK(c.PeerClosed());
  }
}

TEST_CASE("memory in flight is bounded: a client that does not read replies stalls") {
  // With a 4 MiB budget and 1 MiB reads, the server stops taking requests off the
  // socket once 4 MiB of replies are pending, instead of buffering without limit.
  Harness h;
  NbdTestClient c = h.Connect();
  uint64_t size = 0;
  uint16_t flags = 0;
  REQUIRE(c.Handshake("disk", false, &size, &flags));
  constexpr int kRequests = 6;
  for (int i = 0; i < kRequests; ++i) c.SendRequest(kRead, 0, i, 0, 1u << 20);
  for (int i = 0; i < kRequests; ++i) {
    auto r = c.ReadSimpleReply(1u << 20);
    REQUIRE(r);
    CHECK(r->error == 0);
  }
  CHECK(h.disk->counters().reads == kRequests);
}


TEST_CASE("replies count against the budget until written: a flood of failing requests is bounded") {
  // Zero-length READs fail at once, without data. A client that sends them without end
  // and never reads the replies must not make the server queue replies without bound:
  // a reply holds its request's slot (and its bytes) until it is written, and the
  // server stops reading requests once the slots are taken.
  Harness h;
  constexpr uint32_t kSlots = 64;
  auto backlog = std::make_shared<ReplyBacklog>();
  h.options.transmission.max_in_flight_requests = kSlots;
  h.options.reply_backlog = backlog;
  NbdTestClient c = h.Connect();
  uint64_t size = 0;
  uint16_t flags = 0;
  REQUIRE(c.Handshake("disk", /*structured=*/true, &size, &flags));

  // The flood: back-to-back zero-length READs, as much as the socket takes.
  std::vector<uint8_t> flood;
  for (uint32_t i = 0; i < 1024; ++i) {
    auto bytes = EncodeRequest({kRequestMagic, 0, kRead, i, 0, 0});
    flood.insert(flood.end(), bytes.begin(), bytes.end());
  }
  uint64_t sent = 0;  // bytes of the endless request stream sent so far
  auto send_more = [&] {
    for (;;) {
      size_t n = c.SendSome(flood.data() + sent % flood.size(), flood.size() - sent % flood.size());
      if (n == 0) return;
      sent += n;
    }
  };
  // Until the server holds more replies than it has slots (the bug) or it stopped
  // reading for want of a slot while the socket towards the client is full (the fix).
  const bool settled = tapmap::testing::WaitUntil([&] {
    send_more();
    return backlog->peak_replies.load() > kSlots || backlog->readers_waiting.load() > 0;
  });
  INFO("requests sent: " << sent / kRequestSize << ", peak replies held: " << backlog->peak_replies.load()
                         << " (" << backlog->peak_bytes.load() << " bytes)");
  REQUIRE(settled);
  CHECK(backlog->peak_replies.load() <= kSlots);
  // An error chunk: header, error, message (at most the protocol's string limit).
  CHECK(backlog->peak_bytes.load() <= kSlots * (kStructuredReplyHeaderSize + 6 + kMaxStringLength));

  // Once the client reads, the server goes on: every whole request sent is answered,
  // and the connection still serves data.
  const uint64_t whole = sent / kRequestSize;
  for (uint64_t i = 0; i < whole; ++i) {
    auto r = c.ReadStructuredReply();
    REQUIRE(r);
    REQUIRE(r->error == kErrInval);
  }
  const size_t partial = sent % kRequestSize;
  if (partial > 0) {
    c.WriteRaw(flood.data() + sent % flood.size(), kRequestSize - partial);
    auto r = c.ReadStructuredReply();
    REQUIRE(r);
    CHECK(r->error == kErrInval);
  }
  c.SendRequest(kRead, 0, 99, 0, 4096);
  auto r = c.ReadStructuredReply();
  REQUIRE(r);
  CHECK(r->handle == 99);
  CHECK(r->error == 0);
  CHECK(r->data.size() == 4096);
}

}  // namespace
}  // namespace tapmap::nbd
