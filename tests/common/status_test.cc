#include "common/status.h"

#include <catch2/catch.hpp>

namespace tapmap {

TEST_CASE("Status carries code and message with context") {
  Status s = Status::NotFound("volume 'a' does not exist").WithContext("open");
  CHECK_FALSE(s.ok());
  CHECK(s.code() == StatusCode::kNotFound);
  CHECK(s.ToString() == "not-found: open: volume 'a' does not exist");
  CHECK(Status::Ok().ToString() == "ok");
}

TEST_CASE("Status round-trips through the wire text, also inside capnp's prefixes") {
  Status s = Status::Busy("volume 'vm1' is open rw by host-a");
  CHECK(Status::FromWireText(s.ToWireText()) == s);
  CHECK(Status::FromWireText("remote exception: " + s.ToWireText()) == s);
  CHECK(Status::FromWireText("something odd").code() == StatusCode::kInternal);
  CHECK(Status::FromWireText("disconnected", true).code() == StatusCode::kUnavailable);
}

TEST_CASE("Result holds a value or a status") {
  Result<int> good = 3;
  REQUIRE(good.ok());
  CHECK(*good == 3);
  Result<int> bad = Status::InvalidArgument("x");
  CHECK_FALSE(bad.ok());
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("StatusCodeName and StatusCodeFromName are inverse") {
  for (int c = 0; c <= static_cast<int>(StatusCode::kInternal); ++c) {
    auto code = static_cast<StatusCode>(c);
    CHECK(StatusCodeFromName(StatusCodeName(code)) == code);
  }
  CHECK_FALSE(StatusCodeFromName("nope").has_value());
}

}  // namespace tapmap
