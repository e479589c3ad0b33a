// LeaseTable: openers by volume, the rw lease holder and its epoch.
#include "mapserver/lease_table.h"

#include <catch2/catch.hpp>

namespace tapmap::mapserver {
namespace {

Opener Make(LeaseTable& t, const std::string& volume, bool writable, uint64_t epoch = kNoWriter) {
  Opener o;
  o.id = t.NextId();
  o.volume = volume;
  o.writable = writable;
  o.lease_epoch = epoch;
  return o;
}

TEST_CASE("lease table: openers, the writer and its epoch", "[lease]") {
  LeaseTable t;
  Opener reader = Make(t, "vm", false);
  Opener writer = Make(t, "vm", true, 42);
  Opener other = Make(t, "other", false);
  CHECK(reader.id != writer.id);
  t.Add(&reader);
  CHECK(t.WriterOf("vm") == nullptr);
  CHECK(t.WriterEpochOf("vm") == kNoWriter);
  t.Add(&writer);
  t.Add(&other);
  CHECK(t.size() == 3);
  CHECK(t.WriterOf("vm") == &writer);
  CHECK(t.WriterEpochOf("vm") == 42);
  CHECK(t.OpenersOf("vm").size() == 2);
  CHECK(t.Find(other.id) == &other);
  CHECK(t.Remove(writer.id));
  CHECK_FALSE(t.Remove(writer.id));  // released once
  CHECK(t.WriterEpochOf("vm") == kNoWriter);
  CHECK(t.Find(writer.id) == nullptr);
  // Ids are never reused.
  Opener next = Make(t, "vm", true, 43);
  CHECK(next.id > other.id);
}

}  // namespace
}  // namespace tapmap::mapserver
