// MapFetcher: read-ahead windows, one fetch per window, stale and corrupt answers.
#include "tapdisk-map/engine/map_fetcher.h"

#include <catch2/catch.hpp>

namespace tapmap::engine {
namespace {

constexpr uint64_t kBs = 65536;
constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kPoolStart = kMiB, kPoolEnd = 1024 * kMiB;

// A server stand-in whose map answers the test gives by hand.
class ScriptedRemote final : public RemoteVolume {
 public:
  struct Call {
    ByteRange range;
    std::function<void(Result<MapReply>)> done;
  };
  std::vector<Call> calls;

  void Map(uint64_t offset, uint64_t length, std::function<void(Result<MapReply>)> done) override {
    calls.push_back(Call{ByteRange{offset, length}, std::move(done)});
  }
  void PrepareWrite(std::vector<ByteRange>, std::function<void(Result<std::vector<Extent>>)>) override {}
  void Commit(std::vector<Extent>, std::function<void(Status)>) override {}
  void Discard(std::vector<ByteRange>, std::function<void(Status)>) override {}
  void Close(std::function<void(Status)>) override {}

  // Answers call `i` with shared extents covering its whole range at `physical`.
  void AnswerShared(size_t i, uint64_t physical) {
    const ByteRange r = calls[i].range;
    calls[i].done(MapReply{{Extent{r.offset, r.length, physical, 7, ExtentState::kShared}}, 64 * kMiB});
  }
};

struct Rig {
  std::shared_ptr<MapCache> cache = std::make_shared<MapCache>(kBs);
  std::shared_ptr<IoCounters> host = std::make_shared<IoCounters>();
  std::shared_ptr<ScriptedRemote> remote = std::make_shared<ScriptedRemote>();
  std::shared_ptr<MapFetcher> fetcher = std::make_shared<MapFetcher>(
      cache, MapFetcher::Options{"vm", 4 * kMiB, PoolDataArea{kPoolStart, kPoolEnd}}, host);
};

TEST_CASE("map fetcher: concurrent misses in one window share one read-ahead fetch", "[map_fetcher]") {
  Rig r;
  std::vector<Status> results;
  auto record = [&](Status s) { results.push_back(s); };
  r.fetcher->Ensure(r.remote, 64 * kMiB, 5 * kMiB + 4096, 4096, record);
  r.fetcher->Ensure(r.remote, 64 * kMiB, 6 * kMiB, kBs, record);
  REQUIRE(r.remote->calls.size() == 1);
  CHECK(r.remote->calls[0].range == ByteRange{4 * kMiB, 4 * kMiB});  // the aligned window
  r.remote->AnswerShared(0, kPoolStart);
  REQUIRE(results.size() == 2);
  CHECK(results[0].ok());
  CHECK(results[1].ok());
  CHECK(r.cache->Find(6 * kMiB).has_value());
  CHECK(r.fetcher->fetches() == 1);
  CHECK(r.host->map_fetches == 1);
  // Mapped now: no fetch.
  r.fetcher->Ensure(r.remote, 64 * kMiB, 4 * kMiB, 4 * kMiB, record);
  CHECK(results.size() == 3);
  CHECK(r.remote->calls.size() == 1);
}

TEST_CASE("map fetcher: the window stops at the volume's end", "[map_fetcher]") {
  Rig r;
  r.fetcher->Ensure(r.remote, 5 * kMiB, 4 * kMiB, kBs, [](Status) {});
  REQUIRE(r.remote->calls.size() == 1);
  CHECK(r.remote->calls[0].range == ByteRange{4 * kMiB, kMiB});
  // A request beyond a (shrunk) end fetches nothing.
  Rig shrunk;
  Status beyond;
  shrunk.fetcher->Ensure(shrunk.remote, 4 * kMiB, 4 * kMiB + kBs, kBs, [&](Status s) { beyond = s; });
  CHECK(beyond.code() == StatusCode::kInvalidArgument);
  CHECK(shrunk.remote->calls.empty());
}

TEST_CASE("map fetcher: an answer made stale by a recall is fetched again", "[map_fetcher]") {
  Rig r;
  Status result = Status::Internal("not called");
  r.fetcher->Ensure(r.remote, 64 * kMiB, 0, kBs, [&](Status s) { result = s; });
  REQUIRE(r.remote->calls.size() == 1);
  r.cache->Drop(0, kBs);  // a recall while the fetch was in flight
  r.remote->AnswerShared(0, kPoolStart);
  REQUIRE(r.remote->calls.size() == 2);  // not installed: fetched again
  CHECK(result.code() == StatusCode::kInternal);
  r.remote->AnswerShared(1, kPoolStart + kMiB);
  CHECK(result.ok());
  CHECK(r.cache->Find(0)->physical == kPoolStart + kMiB);
}

TEST_CASE("map fetcher: pool space outside the data area is refused", "[map_fetcher]") {
  Rig r;
  Status result;
  r.fetcher->Ensure(r.remote, 64 * kMiB, 0, kBs, [&](Status s) { result = s; });
  REQUIRE(r.remote->calls.size() == 1);
  r.remote->AnswerShared(0, kPoolEnd - kBs);  // runs past the end
  CHECK(result.code() == StatusCode::kCorruption);
  CHECK_FALSE(r.cache->Find(0).has_value());
  CHECK(PoolDataArea{kPoolStart, kPoolEnd}.Check(kPoolStart + 512, kBs).code() == StatusCode::kCorruption);
  CHECK(PoolDataArea{kPoolStart, kPoolEnd}.Check(kPoolStart, kBs).ok());
}

TEST_CASE("map fetcher: a server answering short of the range cannot loop it", "[map_fetcher]") {
  Rig r;
  Status result;
  bool done = false;
  r.fetcher->Ensure(r.remote, 64 * kMiB, 0, kBs, [&](Status s) {
    result = s;
    done = true;
  });
  for (size_t i = 0; !done && i < 1000; ++i) {
    REQUIRE(r.remote->calls.size() == i + 1);
    r.remote->calls[i].done(MapReply{{}, 64 * kMiB});  // maps nothing
  }
  REQUIRE(done);
  CHECK(result.code() == StatusCode::kUnavailable);
}

}  // namespace
}  // namespace tapmap::engine
