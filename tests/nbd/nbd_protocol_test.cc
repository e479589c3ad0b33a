// The wire codec and the listen-address syntax.
#include <catch2/catch.hpp>

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
