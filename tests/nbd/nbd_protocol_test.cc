// The wire codec and the listen-address syntax.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "common/listen_address.h"
#include "tapdisk-map/nbd/nbd_protocol.h"

namespace tapmap::nbd {
namespace {

TEST_CASE("requests round-trip in network byte order") {
  Request r{kRequestMagic, kCmdFlagFua, 1, 0x0102030405060708ull, 0x1122334455667788ull, 0xa0b0c0d0u};
  auto bytes = EncodeRequest(r);
  CHECK(bytes[0] == 0x25);
  CHECK(bytes[3] == 0x13);
  CHECK(bytes[8] == 0x01);
  CHECK(bytes[27] == 0xd0);
  Request back = DecodeRequest(bytes);
  CHECK(back.magic == r.magic);
  CHECK(back.flags == r.flags);
  CHECK(back.type == r.type);
  CHECK(back.handle == r.handle);
  CHECK(back.offset == r.offset);
  CHECK(back.length == r.length);
}

TEST_CASE("greeting and reply headers have the documented layout") {
  auto g = EncodeGreeting(kFlagFixedNewstyle | kFlagNoZeroes);
  CHECK(std::string(g.begin(), g.begin() + 8) == "NBDMAGIC");
  CHECK(std::string(g.begin() + 8, g.begin() + 16) == "IHAVEOPT");
  CHECK(GetBe16(g.data() + 16) == 3);
  auto s = EncodeSimpleReply(kErrInval, 77);
  CHECK(GetBe32(s.data()) == kSimpleReplyMagic);
  CHECK(GetBe32(s.data() + 4) == 22);
  CHECK(GetBe64(s.data() + 8) == 77);
  auto st = EncodeStructuredReplyHeader(kReplyFlagDone, kReplyTypeError, 5, 9);
  CHECK(GetBe32(st.data()) == kStructuredReplyMagic);
  CHECK(GetBe16(st.data() + 4) == 1);
  CHECK(GetBe16(st.data() + 6) == 0x8001);
  CHECK(GetBe32(st.data() + 16) == 9);
  auto o = EncodeOptionReplyHeader(7, kRepErrUnknown, 3);
  CHECK(GetBe64(o.data()) == kOptionReplyMagic);
  CHECK(GetBe32(o.data() + 12) == 0x80000006u);
  auto oh = DecodeOptionHeader(EncodeOptionHeader({kOptionMagic, 7, 12}));
  CHECK(oh.magic == kOptionMagic);
  CHECK(oh.option == 7);
  CHECK(oh.length == 12);
}

std::vector<uint8_t> Bytes(std::initializer_list<int> values) {
  std::vector<uint8_t> out;
  for (int v : values) out.push_back(static_cast<uint8_t>(v));
  return out;
}

std::vector<uint8_t> Concat(std::vector<uint8_t> a, std::string_view b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

template <size_t N>
std::vector<uint8_t> Vec(const std::array<uint8_t, N>& a) {
  return {a.begin(), a.end()};
}

TEST_CASE("handshake fixed-size messages round-trip") {
  Greeting g = DecodeGreeting(EncodeGreeting(kFlagFixedNewstyle | kFlagNoZeroes));
  CHECK(g.init_magic == kInitMagic);
  CHECK(g.option_magic == kOptionMagic);
  CHECK(g.handshake_flags == 3);

  CHECK(Vec(EncodeClientFlags(0x01020304u)) == Bytes({1, 2, 3, 4}));
  CHECK(DecodeClientFlags(EncodeClientFlags(kKnownClientFlags)) == kKnownClientFlags);

  auto reply = EncodeOptionReplyHeader(6, kRepInfo, 12);
  CHECK(Vec(reply) == Bytes({0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 6, 0, 0, 0, 3,
                             0, 0, 0, 12}));
  OptionReplyHeader h = DecodeOptionReplyHeader(reply);
  CHECK(h.magic == kOptionReplyMagic);
  CHECK(h.option == 6);
  CHECK(h.type == kRepInfo);
  CHECK(h.length == 12);
}

TEST_CASE("export name option and its reply") {
  CHECK(EncodeExportNameOption("vm1") == Bytes({'v', 'm', '1'}));
  auto name = DecodeExportNameOption(EncodeExportNameOption("vm1@ro"));
  REQUIRE(name.ok());
  CHECK(*name == "vm1@ro");
  CHECK(DecodeExportNameOption({}).ok());  // the default export: empty, valid
  CHECK_FALSE(DecodeExportNameOption(Bytes({'a', 0, 'b'})).ok());
  CHECK_FALSE(DecodeExportNameOption(std::vector<uint8_t>(kMaxStringLength + 1, 'x')).ok());
  CHECK(DecodeExportNameOption(std::vector<uint8_t>(kMaxStringLength, 'x')).ok());

  auto unpadded = EncodeExportNameReply({0x0102030405060708ull, 0x0a0b}, false);
  CHECK(unpadded == Bytes({1, 2, 3, 4, 5, 6, 7, 8, 0x0a, 0x0b}));
  auto padded = EncodeExportNameReply({42, kTxHasFlags}, true);
  REQUIRE(padded.size() == kExportNameReplySize + kExportNameReplyPadding);
  CHECK(std::all_of(padded.begin() + kExportNameReplySize, padded.end(), [](uint8_t b) { return b == 0; }));
  InfoExport back = DecodeExportNameReply(std::span<const uint8_t, kExportNameReplySize>(padded.data(), kExportNameReplySize));
  CHECK(back.size_bytes == 42);
  CHECK(back.transmission_flags == kTxHasFlags);
}

TEST_CASE("INFO/GO requests: layout, round trip, malformed data refused") {
  auto bytes = EncodeInfoRequest({"ab", {kInfoName, kInfoBlockSize}});
  CHECK(bytes == Bytes({0, 0, 0, 2, 'a', 'b', 0, 2, 0, 1, 0, 3}));
  auto back = DecodeInfoRequest(bytes);
  REQUIRE(back.ok());
  CHECK(back->name == "ab");
  CHECK(back->items == std::vector<uint16_t>({kInfoName, kInfoBlockSize}));

  auto empty = DecodeInfoRequest(EncodeInfoRequest({"", {}}));
  REQUIRE(empty.ok());
  CHECK(empty->name.empty());
  CHECK(empty->items.empty());

  for (const auto& bad : {
           Bytes({}),                                     // nothing
           Bytes({0, 0, 0, 0, 0}),                        // count cut short
           Bytes({0, 0, 0, 3, 'a', 'b', 0, 0}),           // name longer than the data
           Bytes({0xff, 0xff, 0xff, 0xff, 0, 0}),         // huge name length
           Bytes({0, 0, 0, 1, 'a', 0, 1}),                // one item announced, none sent
           Bytes({0, 0, 0, 1, 'a', 0, 0, 0, 1}),          // trailing byte
           Bytes({0, 0, 0, 1, 'a', 0, 1, 0, 1, 0, 3}),    // more items than announced
           Bytes({0, 0, 0, 2, 'a', 0, 0, 0}),             // NUL in the name
       }) {
    INFO(bad.size());
    auto r = DecodeInfoRequest(bad);
    CHECK_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
  }
  std::string long_name(kMaxStringLength + 1, 'x');
  CHECK_FALSE(DecodeInfoRequest(EncodeInfoRequest({long_name, {}})).ok());
  long_name.pop_back();
  CHECK(DecodeInfoRequest(EncodeInfoRequest({long_name, {}})).ok());
}

TEST_CASE("NBD_REP_INFO items: layouts, round trips, wrong type or size refused") {
  auto exp = EncodeInfoExport({0x0000000100000000ull, kTxHasFlags | kTxSendFlush});
  CHECK(Vec(exp) == Bytes({0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 5}));
  auto e = DecodeInfoExport(exp);
  REQUIRE(e.ok());
  CHECK(e->size_bytes == 0x0000000100000000ull);
  CHECK(e->transmission_flags == (kTxHasFlags | kTxSendFlush));

  auto bs = EncodeInfoBlockSize({512, 65536, 32u << 20});
  CHECK(Vec(bs) == Bytes({0, 3, 0, 0, 2, 0, 0, 1, 0, 0, 2, 0, 0, 0}));
  auto b = DecodeInfoBlockSize(bs);
  REQUIRE(b.ok());
  CHECK(b->minimum == 512);
  CHECK(b->preferred == 65536);
  CHECK(b->maximum == (32u << 20));

  auto name = EncodeInfoName("disk");
  CHECK(name == Bytes({0, 1, 'd', 'i', 's', 'k'}));
  auto n = DecodeInfoName(name);
  REQUIRE(n.ok());
  CHECK(*n == "disk");
  CHECK(DecodeInfoType(name).ok());
  CHECK(*DecodeInfoType(name) == kInfoName);

  CHECK_FALSE(DecodeInfoType(Bytes({0})).ok());
  CHECK_FALSE(DecodeInfoExport(bs).ok());                       // wrong type
  CHECK_FALSE(DecodeInfoBlockSize(exp).ok());                   // wrong type
  CHECK_FALSE(DecodeInfoName(exp).ok());                        // wrong type
  CHECK_FALSE(DecodeInfoExport(Bytes({0, 0, 1, 2, 3})).ok());   // short
  CHECK_FALSE(DecodeInfoExport(Concat(Vec(exp), "x")).ok());    // long
  CHECK_FALSE(DecodeInfoBlockSize(Bytes({0, 3, 0, 0})).ok());   // short
  CHECK_FALSE(DecodeInfoName(Bytes({0})).ok());                 // no type
  CHECK_FALSE(DecodeInfoName(Bytes({0, 1, 'a', 0})).ok());      // NUL
}

TEST_CASE("option error messages and NBD_REP_SERVER entries") {
  CHECK(EncodeOptionErrorMessage("no") == Bytes({'n', 'o'}));
  CHECK(EncodeOptionErrorMessage(std::string(kMaxStringLength + 100, 'm')).size() == kMaxStringLength);
  auto m = DecodeOptionErrorMessage(EncodeOptionErrorMessage("unknown export"));
  REQUIRE(m.ok());
  CHECK(*m == "unknown export");
  CHECK_FALSE(DecodeOptionErrorMessage(std::vector<uint8_t>(kMaxStringLength + 1, 'm')).ok());

  auto entry = EncodeServerReply("vm");
  CHECK(entry == Bytes({0, 0, 0, 2, 'v', 'm'}));
  auto s = DecodeServerReply(entry);
  REQUIRE(s.ok());
  CHECK(*s == "vm");
  auto with_details = DecodeServerReply(Concat(entry, "details"));  // allowed by the protocol
  REQUIRE(with_details.ok());
  CHECK(*with_details == "vm");
  CHECK_FALSE(DecodeServerReply(Bytes({0, 0, 0})).ok());
  CHECK_FALSE(DecodeServerReply(Bytes({0, 0, 0, 3, 'v', 'm'})).ok());
  CHECK_FALSE(DecodeServerReply(Bytes({0xff, 0xff, 0xff, 0xff})).ok());
}

TEST_CASE("transmission replies: layouts and round trips") {
  SimpleReply simple = DecodeSimpleReply(EncodeSimpleReply(kErrNoSpc, 0x1122334455667788ull));
  CHECK(simple.magic == kSimpleReplyMagic);
  CHECK(simple.error == kErrNoSpc);
  CHECK(simple.handle == 0x1122334455667788ull);

  StructuredReplyHeader h =
      DecodeStructuredReplyHeader(EncodeStructuredReplyHeader(kReplyFlagDone, kReplyTypeOffsetHole, 9, 12));
  CHECK(h.magic == kStructuredReplyMagic);
  CHECK(h.flags == kReplyFlagDone);
  CHECK(h.type == kReplyTypeOffsetHole);
  CHECK(h.handle == 9);
  CHECK(h.length == 12);

  auto head = EncodeOffsetDataChunkHead(kReplyFlagDone, 7, 0x200, 4096);
  CHECK(Vec(head) == Bytes({0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7,
                            0, 0, 0x10, 0x08, 0, 0, 0, 0, 0, 0, 2, 0}));
  std::vector<uint8_t> payload = Bytes({0, 0, 0, 0, 0, 0, 2, 0, 0xaa, 0xbb});  // offset, data
  auto od = DecodeOffsetData(payload);
  REQUIRE(od.ok());
  CHECK(od->offset == 0x200);
  CHECK(std::vector<uint8_t>(od->data.begin(), od->data.end()) == Bytes({0xaa, 0xbb}));
  CHECK_FALSE(DecodeOffsetData(Bytes({0, 0, 0, 0, 0, 0, 2})).ok());

  auto err = EncodeErrorChunk(kReplyFlagDone, 5, kErrIo, "bad");
  CHECK(err == Concat(Bytes({0x66, 0x8e, 0x33, 0xef, 0, 1, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 5,
                             0, 0, 0, 9, 0, 0, 0, 5, 0, 3}),
                      "bad"));
  auto ec = DecodeErrorChunk(std::span<const uint8_t>(err).subspan(kStructuredReplyHeaderSize));
  REQUIRE(ec.ok());
  CHECK(ec->error == kErrIo);
  CHECK(ec->message == "bad");
  auto long_err = EncodeErrorChunk(kReplyFlagDone, 5, kErrIo, std::string(kMaxStringLength + 1, 'e'));
  CHECK(long_err.size() == kStructuredReplyHeaderSize + 6 + kMaxStringLength);
  CHECK(DecodeStructuredReplyHeader(std::span<const uint8_t, kStructuredReplyHeaderSize>(long_err.data(), kStructuredReplyHeaderSize)).length ==
        6 + kMaxStringLength);
  CHECK_FALSE(DecodeErrorChunk(Bytes({0, 0, 0, 5, 0})).ok());           // cut in the length
  CHECK_FALSE(DecodeErrorChunk(Bytes({0, 0, 0, 5, 0, 2, 'x'})).ok());   // message cut short
  CHECK_FALSE(DecodeErrorChunk(Bytes({0, 0, 0, 5, 0, 0, 'x'})).ok());   // trailing byte
}

TEST_CASE("statuses map to NBD errors") {
  CHECK(ErrorFromStatus(Status::Ok()) == 0);
  CHECK(ErrorFromStatus(Status::InvalidArgument("x")) == kErrInval);
  CHECK(ErrorFromStatus(Status::ReadOnly("x")) == kErrPerm);
  CHECK(ErrorFromStatus(Status::NoSpace("x")) == kErrNoSpc);
  CHECK(ErrorFromStatus(Status::IoError("x")) == kErrIo);
  CHECK(ErrorFromStatus(Status::Unavailable("x")) == kErrIo);
  CHECK(CommandName(0) == "READ");
  CHECK(CommandName(99) == "unknown(99)");
  CHECK(OptionName(7) == "NBD_OPT_GO");
  CHECK(OptionErrorFromStatus(Status::NotFound("x")) == kRepErrUnknown);
  CHECK(OptionErrorFromStatus(Status::Busy("x")) == kRepErrPolicy);
  CHECK(OptionErrorFromStatus(Status::Aborted("x")) == kRepErrShutdown);
  CHECK(OptionErrorFromStatus(Status::IoError("x")) == kRepErrPlatform);
}

TEST_CASE("listen addresses") {
  auto u = ParseListenAddress("unix:/run/x.sock");
  REQUIRE(u.ok());
  CHECK(u->kind == ListenAddress::Kind::kUnix);
  CHECK(u->path == "/run/x.sock");
  CHECK(u->ToString() == "unix:/run/x.sock");
  auto t = ParseListenAddress("tcp:127.0.0.1:10809");
  REQUIRE(t.ok());
  CHECK(t->host == "127.0.0.1");
  CHECK(t->port == 10809);
  auto v6 = ParseListenAddress("tcp:[::1]:80");
  REQUIRE(v6.ok());
  CHECK(v6->host == "::1");
  CHECK(v6->ToString() == "tcp:[::1]:80");
  for (const char* bad : {"", "unix:", "tcp:host", "tcp::80", "tcp:h:0", "tcp:h:70000", "tcp:h:8x",
                          "udp:h:1", "tcp:::1:80"}) {
    INFO(bad);
    CHECK_FALSE(ParseListenAddress(bad).ok());
  }
  auto list = ParseListenAddressList("unix:/a,tcp:localhost:1");
  REQUIRE(list.ok());
  CHECK(list->size() == 2);
  CHECK_FALSE(ParseListenAddressList("unix:/a,").ok());
}

}  // namespace
}  // namespace tapmap::nbd
