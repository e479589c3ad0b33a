// Specification of metadata contexts and NBD_CMD_BLOCK_STATUS on one connection against
// RAM devices (whose BlockDevice::Allocation is the default: all data): option
// negotiation of base:allocation (LIST/SET_META_CONTEXT), the reply chunk's layout, and
// every bad request answered with an error while the connection goes on. Holes and
// data as a real volume reports them are in nbd_block_status_daemon_test.cc.
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <catch2/catch.hpp>
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
constexpr uint16_t kBlockStatusCmd = static_cast<uint16_t>(Command::kBlockStatus);
constexpr uint32_t kList = static_cast<uint32_t>(Option::kListMetaContext);
constexpr uint32_t kSet = static_cast<uint32_t>(Option::kSetMetaContext);

class Harness {
 public:
  Harness() : work_(asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {
    catalog.Add(io_, "disk", kVolumeSize);
    catalog.Add(io_, "snap", kVolumeSize, /*read_only=*/true);
    catalog.Add(io_, "other", kVolumeSize);
  }
  ~Harness() {
    for (auto& c : connections_) c->Stop();
    tapmap::testing::WaitUntil([&] { return ended_.load() == started_; });
    work_.reset();
    thread_.join();
  }
  NbdTestClient Connect() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    Stream::Socket socket(asio::make_strand(io_));
    socket.assign(asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]);
    started_++;
    auto connection = std::make_shared<Connection>(Stream(std::move(socket)), catalog, options,
                                                   Logger("nbd-test", LogLevel::kError), [this] { ended_++; });
    connection->Start();
    connections_.push_back(connection);
    return NbdTestClient(UniqueFd(fds[1]));
  }

  ConnectionOptions options;
  MemoryCatalog catalog;

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
  std::vector<std::shared_ptr<Connection>> connections_;
  int started_ = 0;
  std::atomic<int> ended_{0};
};

// The replies to one META_CONTEXT option: the contexts (id, name) and the final reply type.
struct MetaReplies {
  std::vector<MetaContextReply> contexts;
  uint32_t final_type = 0;
};
MetaReplies MetaContext(NbdTestClient& c, uint32_t option, const std::string& name,
                        std::vector<std::string> queries) {
  c.SendOption(option, EncodeMetaContextRequest({name, std::move(queries)}));
  MetaReplies out;
  for (;;) {
    auto r = c.ReadOptionReply();
    REQUIRE(r);
    CHECK(r->option == option);
    if (r->type != kRepMetaContext) {
      out.final_type = r->type;
      return out;
    }
    Result<MetaContextReply> context = DecodeMetaContextReply(r->data);
    REQUIRE(context.ok());
    out.contexts.push_back(*context);
  }
}

bool Option(NbdTestClient& c, uint32_t option) {
  c.SendOption(option, {});
  auto r = c.ReadOptionReply();
  return r && r->type == kRepAck;
}

bool Go(NbdTestClient& c, const std::string& name) {
  c.SendOption(static_cast<uint32_t>(Option::kGo), NbdTestClient::GoPayload(name));
  for (;;) {
    auto r = c.ReadOptionReply();
    if (!r) return false;
    if (r->type == kRepAck) return true;
    if (r->type != kRepInfo) return false;
  }
}

// A connection to `name` with structured replies and base:allocation selected.
NbdTestClient Negotiated(Harness& h, const std::string& name = "disk") {
  NbdTestClient c = h.Connect();
  REQUIRE(c.StartOptions());
  REQUIRE(Option(c, static_cast<uint32_t>(Option::kStructuredReply)));
  MetaReplies set = MetaContext(c, kSet, name, {"base:allocation"});
  REQUIRE(set.final_type == kRepAck);
  REQUIRE(set.contexts.size() == 1);
  REQUIRE(Go(c, name));
  return c;
}

TEST_CASE("LIST_META_CONTEXT offers base:allocation for no query, base: and the name") {
  Harness h;
  NbdTestClient c = h.Connect();
  REQUIRE(c.StartOptions());
  for (const auto& queries : std::vector<std::vector<std::string>>{{}, {"base:"}, {"base:allocation"}}) {
    MetaReplies r = MetaContext(c, kList, "disk", queries);
    CHECK(r.final_type == kRepAck);
    REQUIRE(r.contexts.size() == 1);
    CHECK(r.contexts[0].name == "base:allocation");
  }
  // Unknown contexts and namespaces are not listed, and are no error.
  MetaReplies r = MetaContext(c, kList, "disk", {"qemu:dirty-bitmap:x", "base:allocationX", "x:"});
  CHECK(r.final_type == kRepAck);
  CHECK(r.contexts.empty());
  // LIST needs no structured replies; an unknown export is refused.
  CHECK(MetaContext(c, kList, "missing", {}).final_type == kRepErrUnknown);
}

TEST_CASE("SET_META_CONTEXT needs structured replies and an existing export") {
  Harness h;
  NbdTestClient c = h.Connect();
  REQUIRE(c.StartOptions());
  MetaReplies r = MetaContext(c, kSet, "disk", {"base:allocation"});
  CHECK(r.final_type == kRepErrInvalid);
  CHECK(r.contexts.empty());
  REQUIRE(Option(c, static_cast<uint32_t>(Option::kStructuredReply)));
  CHECK(MetaContext(c, kSet, "missing", {"base:allocation"}).final_type == kRepErrUnknown);
  r = MetaContext(c, kSet, "disk", {"nope:x", "base:allocation", "base:allocation"});
  CHECK(r.final_type == kRepAck);
  REQUIRE(r.contexts.size() == 1);  // once, however often asked
  CHECK(r.contexts[0].id == kBaseAllocationContextId);
  CHECK(r.contexts[0].name == "base:allocation");
  // "base:" selects nothing in SET (only LIST takes namespaces).
  CHECK(MetaContext(c, kSet, "disk", {"base:"}).contexts.empty());
}

TEST_CASE("malformed META_CONTEXT options are answered NBD_REP_ERR_INVALID") {
  Harness h;
  NbdTestClient c = h.Connect();
  REQUIRE(c.StartOptions());
  std::vector<uint8_t> good = EncodeMetaContextRequest({"disk", {"base:allocation"}});
  std::vector<std::vector<uint8_t>> bad = {
      {},                                                   // empty
      std::vector<uint8_t>(good.begin(), good.end() - 1),   // one byte short
      [&] { auto v = good; v.push_back(0); return v; }(),   // one byte too many
      [&] { auto v = good; PutBe32(v.data() + 8, 1000000); return v; }(),  // query count lies
      [&] { auto v = good; PutBe32(v.data() + 12, 4097); return v; }(),    // query too long
      [&] { auto v = good; PutBe32(v.data(), 0xffffffff); return v; }(),   // name length lies
  };
  for (const auto& data : bad) {
    for (uint32_t option : {kList, kSet}) {
      c.SendOption(option, data);
      auto r = c.ReadOptionReply();
      REQUIRE(r);
      CHECK(r->type == kRepErrInvalid);
    }
  }
  // The negotiation goes on.
  CHECK(MetaContext(c, kList, "disk", {}).contexts.size() == 1);
}

TEST_CASE("BLOCK_STATUS answers one base:allocation chunk, one descriptor with REQ_ONE") {
  Harness h;
  NbdTestClient c = Negotiated(h);
  c.SendRequest(kBlockStatusCmd, 0, 5, 4096, 1u << 20);
  auto r = c.ReadStructuredReply();
  REQUIRE(r);
  CHECK(r->handle == 5);
  REQUIRE(r->type == kReplyTypeBlockStatus);
  Result<BlockStatus> status = DecodeBlockStatus(r->data);
  REQUIRE(status.ok());
  CHECK(status->context_id == kBaseAllocationContextId);
  CHECK(r->flags == kReplyFlagDone);
  REQUIRE(status->descriptors.size() == 1);
  CHECK(status->descriptors[0] == BlockStatusDescriptor{1u << 20, 0});  // RAM device: all data

  c.SendRequest(kBlockStatusCmd, kCmdFlagReqOne, 6, kVolumeSize - 4096, 4096);
  r = c.ReadStructuredReply();
  REQUIRE(r);
  REQUIRE(r->type == kReplyTypeBlockStatus);
  status = DecodeBlockStatus(r->data);
  REQUIRE(status.ok());
  REQUIRE(status->descriptors.size() == 1);
  CHECK(status->descriptors[0].length == 4096);
}

TEST_CASE("BLOCK_STATUS on a read-only export is served") {
  Harness h;
  NbdTestClient c = Negotiated(h, "snap");
  c.SendRequest(kBlockStatusCmd, 0, 1, 0, 65536);
  auto r = c.ReadStructuredReply();
  REQUIRE(r);
  CHECK(r->type == kReplyTypeBlockStatus);
  CHECK(r->error == 0);
}

TEST_CASE("bad BLOCK_STATUS requests get EINVAL and the connection goes on") {
  Harness h;
  NbdTestClient c = Negotiated(h);
  struct Case {
    uint16_t flags;
    uint64_t offset;
    uint32_t length;
  };
  const Case cases[] = {
      {0, 0, 0},                           // zero length
      {0, kVolumeSize, 512},               // beyond the end
      {0, kVolumeSize - 512, 1024},        // straddles the end
      {0, UINT64_MAX - 511, 1024},         // offset + length overflows
      {0, 100, 512},                       // unaligned offset
      {0, 0, 100},                         // unaligned length
      {kCmdFlagFua, 0, 512},               // a flag BLOCK_STATUS does not take
      {kCmdFlagReqOne | 0x100, 0, 512},    // unknown flag
  };
  uint64_t handle = 100;
  for (const Case& k : cases) {
    c.SendRequest(kBlockStatusCmd, k.flags, handle, k.offset, k.length);
    auto r = c.ReadStructuredReply();
    REQUIRE(r);
    CHECK(r->handle == handle);
    CHECK(r->type == kReplyTypeError);
    CHECK(r->error == kErrInval);
    handle++;
  }
  c.SendRequest(kBlockStatusCmd, 0, handle, 0, 512);
  auto r = c.ReadStructuredReply();
  REQUIRE(r);
  CHECK(r->type == kReplyTypeBlockStatus);
}

TEST_CASE("BLOCK_STATUS without a negotiated context gets EINVAL") {
  Harness h;
  SECTION("simple replies, no context") {
    NbdTestClient c = h.Connect();
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(c.Handshake("disk", false, &size, &flags));
    c.SendRequest(kBlockStatusCmd, 0, 1, 0, 512);
    auto r = c.ReadSimpleReply(0);
    REQUIRE(r);
    CHECK(r->error == kErrInval);
  }
  SECTION("structured replies, no context") {
    NbdTestClient c = h.Connect();
    uint64_t size = 0;
    uint16_t flags = 0;
    REQUIRE(c.Handshake("disk", true, &size, &flags));
    c.SendRequest(kBlockStatusCmd, 0, 1, 0, 512);
    auto r = c.ReadStructuredReply();
    REQUIRE(r);
    CHECK(r->error == kErrInval);
  }
  SECTION("context set for another export than the one chosen") {
    NbdTestClient c = h.Connect();
    REQUIRE(c.StartOptions());
    REQUIRE(Option(c, static_cast<uint32_t>(Option::kStructuredReply)));
    REQUIRE(MetaContext(c, kSet, "other", {"base:allocation"}).contexts.size() == 1);
    REQUIRE(Go(c, "disk"));
    c.SendRequest(kBlockStatusCmd, 0, 1, 0, 512);
    auto r = c.ReadStructuredReply();
    REQUIRE(r);
    CHECK(r->error == kErrInval);
  }
  SECTION("a later SET that selects nothing replaces the first") {
    NbdTestClient c = h.Connect();
    REQUIRE(c.StartOptions());
    REQUIRE(Option(c, static_cast<uint32_t>(Option::kStructuredReply)));
    REQUIRE(MetaContext(c, kSet, "disk", {"base:allocation"}).contexts.size() == 1);
    REQUIRE(MetaContext(c, kSet, "disk", {}).contexts.empty());
    REQUIRE(Go(c, "disk"));
    c.SendRequest(kBlockStatusCmd, 0, 1, 0, 512);
    auto r = c.ReadStructuredReply();
    REQUIRE(r);
    CHECK(r->error == kErrInval);
  }
}

TEST_CASE("tapmap:changed-since:SNAPSHOT is selected for an existing volume, with base:allocation in two chunks") {
  Harness h;
  NbdTestClient c = h.Connect();
  REQUIRE(c.StartOptions());
  // LIST names it for an existing volume only.
  MetaReplies list = MetaContext(c, kList, "disk", {"tapmap:changed-since:snap"});
  REQUIRE(list.contexts.size() == 1);
  CHECK(list.contexts[0].name == "tapmap:changed-since:snap");
  CHECK(MetaContext(c, kList, "disk", {"tapmap:changed-since:missing", "tapmap:changed-since:"}).contexts.empty());
  REQUIRE(Option(c, static_cast<uint32_t>(Option::kStructuredReply)));
  MetaReplies set = MetaContext(c, kSet, "disk", {"tapmap:changed-since:missing", "base:allocation",
                                                  "tapmap:changed-since:snap"});
  REQUIRE(set.final_type == kRepAck);
  REQUIRE(set.contexts.size() == 2);
  CHECK(set.contexts[0].id == kBaseAllocationContextId);
  CHECK(set.contexts[1].id == kChangedSinceContextId);
  CHECK(set.contexts[1].name == "tapmap:changed-since:snap");
  REQUIRE(Go(c, "disk"));
  // One chunk per context, base:allocation first; the reply ends with the second.
  c.SendRequest(kBlockStatusCmd, kCmdFlagReqOne, 9, 0, 65536);
  for (uint32_t id : {kBaseAllocationContextId, kChangedSinceContextId}) {
    auto r = c.ReadStructuredReply();
    REQUIRE(r);
    CHECK(r->handle == 9);
    REQUIRE(r->type == kReplyTypeBlockStatus);
    CHECK((r->flags & kReplyFlagDone) == (id == kChangedSinceContextId ? kReplyFlagDone : 0));
    Result<BlockStatus> status = DecodeBlockStatus(r->data);
    REQUIRE(status.ok());
    CHECK(status->context_id == id);
    REQUIRE(status->descriptors.size() == 1);
    // RAM devices: all data, all changed (the safe defaults).
    CHECK(status->descriptors[0].flags == (id == kChangedSinceContextId ? kStateChanged : 0u));
  }
  // The connection is in step: the next reply is for the next request.
  c.SendRequest(kBlockStatusCmd, 0, 10, 0, 0);
  auto r = c.ReadStructuredReply();
  REQUIRE(r);
  CHECK(r->handle == 10);
  CHECK(r->error == kErrInval);
}

TEST_CASE("tapmap:changed-since:SNAPSHOT alone serves BLOCK_STATUS in one chunk") {
  Harness h;
  NbdTestClient c = h.Connect();
  REQUIRE(c.StartOptions());
  REQUIRE(Option(c, static_cast<uint32_t>(Option::kStructuredReply)));
  REQUIRE(MetaContext(c, kSet, "disk", {"tapmap:changed-since:snap"}).contexts.size() == 1);
  REQUIRE(Go(c, "disk"));
  c.SendRequest(kBlockStatusCmd, 0, 1, 0, 512);
  auto r = c.ReadStructuredReply();
  REQUIRE(r);
  REQUIRE(r->type == kReplyTypeBlockStatus);
  CHECK(DecodeBlockStatus(r->data)->context_id == kChangedSinceContextId);
  c.SendRequest(kBlockStatusCmd, 0, 2, 0, 512);
  r = c.ReadStructuredReply();
  REQUIRE(r);
  CHECK(r->handle == 2);
}

}  // namespace
}  // namespace tapmap::nbd
