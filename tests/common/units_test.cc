#include "common/units.h"

#include <catch2/catch.hpp>

namespace tapmap {

TEST_CASE("ParseSize accepts binary units") {
  CHECK(*ParseSize("4096") == 4096);
  CHECK(*ParseSize("64K") == 64 * kKiB);
  CHECK(*ParseSize("64KiB") == 64 * kKiB);
  CHECK(*ParseSize("10m") == 10 * kMiB);
  CHECK(*ParseSize("2G") == 2 * kGiB);
  CHECK(*ParseSize("1T") == kTiB);
}

TEST_CASE("ParseSize rejects garbage and overflow") {
  CHECK_FALSE(ParseSize("").ok());
  CHECK_FALSE(ParseSize("-1").ok());
  CHECK_FALSE(ParseSize("12Q").ok());
  CHECK_FALSE(ParseSize("K").ok());
  CHECK_FALSE(ParseSize("99999999999999999999").ok());
  CHECK_FALSE(ParseSize("17179869184G").ok());
}

TEST_CASE("RangeWithin never overflows") {
  CHECK(RangeWithin(0, 10, 10));
  CHECK_FALSE(RangeWithin(1, 10, 10));
  CHECK_FALSE(RangeWithin(5, UINT64_MAX, 10));
  CHECK_FALSE(RangeWithin(UINT64_MAX, 1, 10));
}

TEST_CASE("FormatSize is readable") {
  CHECK(FormatSize(512) == "512 B");
  CHECK(FormatSize(64 * kKiB) == "64 KiB");
  CHECK(FormatSize(3 * kGiB / 2) == "1.5 GiB");
}

}  // namespace tapmap
