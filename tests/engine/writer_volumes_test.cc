// WriterVolumes: an open parked behind a closing read-write volume resumes exactly when
// the last volume of that name is gone, and never for another name.
#include <catch2/catch.hpp>

#include "tapdisk-map/engine/writer_volumes.h"

namespace tapmap::engine {
namespace {

TEST_CASE("writer volumes: waits end when the last volume of the name is removed") {
  WriterVolumes w;
  int resumed = 0;
  CHECK_FALSE(w.WaitForEnd("vm", [&] { resumed++; }));  // nothing alive: not parked
  w.Add("vm");
  w.Add("vm");
  w.Add("other");
  CHECK(w.Alive("vm"));
  REQUIRE(w.WaitForEnd("vm", [&] { resumed++; }));
  REQUIRE(w.WaitForEnd("vm", [&] { resumed += 10; }));
  w.Remove("other");
  w.Remove("vm");
  CHECK(resumed == 0);
  w.Remove("vm");
  CHECK(resumed == 11);
  CHECK_FALSE(w.Alive("vm"));
  w.Remove("vm");  // unmatched: ignored
  CHECK(resumed == 11);
}

TEST_CASE("writer volumes: Abandon drops parked waiters uncalled") {
  WriterVolumes w;
  int resumed = 0;
  w.Add("vm");
  REQUIRE(w.WaitForEnd("vm", [&] { resumed++; }));
  w.Abandon();
  CHECK(w.WaitForEnd("vm", [&] { resumed++; }));  // still alive, but no longer parked
  w.Remove("vm");
  CHECK(resumed == 0);
}

}  // namespace
}  // namespace tapmap::engine
