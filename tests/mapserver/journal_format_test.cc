// The metadata journal's record and head encodings (mapserver/journal_format.h): they
// round-trip, and any damage is a corruption error, never a silently shorter record.
#include <catch2/catch.hpp>

#include "mapserver/journal_format.h"

namespace tapmap::mapserver {
namespace {

JournalRecord Sample() {
  JournalRecord r;
  r.seq = 0x1234567890ull;
  r.ops.push_back(JournalOp{Table::kVolumes, "vm1", std::string("record\0bytes", 12)});
  r.ops.push_back(JournalOp{Table::kFree, std::string(8, '\x01'), std::nullopt});
  r.ops.push_back(JournalOp{Table::kMeta, "next-generation", std::string("")});
  return r;
}

TEST_CASE("A journal record round-trips, puts, deletes and empty values alike") {
  auto back = DecodeJournalRecord(EncodeJournalRecord(Sample()));
  REQUIRE(back.ok());
  CHECK(back->seq == Sample().seq);
  CHECK(back->ops == Sample().ops);
}

TEST_CASE("CRC-32C is the Castagnoli polynomial") {
  CHECK(Crc32c(0, "123456789") == 0xe3069283u);
  CHECK(Crc32c(Crc32c(0, "1234"), "56789") == 0xe3069283u);
}

TEST_CASE("A damaged journal record is a corruption error") {
  const std::string good = EncodeJournalRecord(Sample());
  SECTION("any flipped byte") {
    for (size_t i = 0; i < good.size(); ++i) {
      std::string bad = good;
      bad[i] ^= 0x40;
      auto r = DecodeJournalRecord(bad);
      INFO("byte " << i);
      REQUIRE_FALSE(r.ok());
      CHECK(r.status().code() == StatusCode::kCorruption);
    }
  }
  SECTION("truncated anywhere") {
    for (size_t n = 0; n < good.size(); ++n) {
      auto r = DecodeJournalRecord(std::string_view(good).substr(0, n));
      INFO("length " << n);
      REQUIRE_FALSE(r.ok());
      CHECK(r.status().code() == StatusCode::kCorruption);
    }
  }
  SECTION("trailing bytes") {
    auto r = DecodeJournalRecord(good + "x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message().find("truncated or trailing") != std::string::npos);
  }
  SECTION("a checksum mismatch is named") {
    std::string bad = good;
    bad.back() ^= 1;
    auto r = DecodeJournalRecord(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message().find("checksum") != std::string::npos);
  }
}

TEST_CASE("The journal head round-trips and refuses damage") {
  JournalHead h;
  h.checkpoint_generation = 7;
  h.first_seq = 1001;
  h.checkpoint_bytes = 123456;
  h.checkpoint_chunks = 1;
  h.checkpoint_crc = 0xdeadbeef;
  h.checkpoint_writer = 4242;
  const std::string good = EncodeJournalHead(h);
  REQUIRE(good.size() == kJournalHeadBytes);
  auto back = DecodeJournalHead(good);
  REQUIRE(back.ok());
  CHECK(*back == h);
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0x01;
    INFO("byte " << i);
    CHECK(DecodeJournalHead(bad).status().code() == StatusCode::kCorruption);
  }
  CHECK(DecodeJournalHead(good.substr(0, 63)).status().code() == StatusCode::kCorruption);
}

}  // namespace
}  // namespace tapmap::mapserver
