// base:allocation against the real daemon and mapserver, seen by real clients: nbdinfo
// --map and qemu-img map report holes exactly where nothing was written (block
// granularity: 64 KiB), qemu-img convert reads only the data and still produces the
// same bytes (a sparse file), writes not yet committed are data, and a
// clone reports its golden image's blocks as data.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tapdisk-map/nbd/nbd_protocol.h"
#include "tests/nbd/daemon_fixture.h"

namespace tapmap::nbd {
namespace {

using testing::DaemonFixture;
using testing::Run;
using tapmap::testing::RunCommand;

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;
constexpr uint64_t kSize = 16 * kMiB;

struct Span {
  uint64_t offset, length;
  bool hole;
  bool operator==(const Span&) const = default;
};

std::string Show(const std::vector<Span>& runs) {
  std::string out;
  for (const Span& r : runs) {
    out += (r.hole ? "hole " : "data ") + std::to_string(r.offset) + "+" + std::to_string(r.length) + "\n";
  }
  return out;
}

// Adjacent runs of one kind merged (clients may split where the server did not).
std::vector<Span> Merged(std::vector<Span> runs) {
  std::vector<Span> out;
  for (const Span& r : runs) {
    if (!out.empty() && out.back().hole == r.hole && out.back().offset + out.back().length == r.offset) {
      out.back().length += r.length;
    } else {
      out.push_back(r);
    }
  }
  return out;
}

// What the writes of WriteSample leave: data in whole 64 KiB blocks.
const std::vector<Span> kExpected = {
    {0, 1 * kMiB, true},
    {1 * kMiB, 64 * kKiB, false},
    {1 * kMiB + 64 * kKiB, 4 * kMiB - 64 * kKiB, true},
    {5 * kMiB, 1 * kMiB, false},
    {6 * kMiB, 4 * kMiB, true},
    {10 * kMiB, 64 * kKiB, false},
    {10 * kMiB + 64 * kKiB, 2 * kMiB, true},  // up to 12M + 64K: zeroed again
    {12 * kMiB + 64 * kKiB, 64 * kKiB, false},
    {12 * kMiB + 128 * kKiB, 4 * kMiB - 128 * kKiB, true},
};

// The same writes on the volume (through NBD) and on a local raw file (the reference).
// (write -z without -u is WRITE_ZEROES with NO_HOLE: the zeros would be data.)
void WriteSample(const std::string& target) {
  REQUIRE(Run({"qemu-io", "-f", "raw", "-c", "write -P 0xab 1M 64k", "-c", "write -P 0xcd 5M 1M", "-c",
               "write -P 0x11 10244k 4k", "-c", "write -P 0x22 12M 128k", "-c", "write -z -u 12M 64k", target}) == 0);
}

std::vector<Span> NbdinfoMap(const std::string& url) {
  std::string out;
  REQUIRE(Run({"nbdinfo", "--map", "--json", url}, &out) == 0);
  std::vector<Span> runs;
  for (const auto& e : nlohmann::json::parse(out)) {
    uint32_t type = e.at("type").get<uint32_t>();
    // base:allocation: a hole is always reported as zero too; data never as either.
    CHECK((type == 0 || type == (kStateHole | kStateZero)));
    runs.push_back({e.at("offset").get<uint64_t>(), e.at("length").get<uint64_t>(), type != 0});
  }
  return Merged(runs);
}

std::vector<Span> QemuImgMap(const std::string& url) {
  std::string out;
  REQUIRE(Run({"qemu-img", "map", "--output=json", "-f", "raw", url}, &out) == 0);
  std::vector<Span> runs;
  for (const auto& e : nlohmann::json::parse(out)) {
    bool data = e.at("data").get<bool>();
    if (!data) CHECK(e.at("zero").get<bool>());
    runs.push_back({e.at("start").get<uint64_t>(), e.at("length").get<uint64_t>(), !data});
  }
  return Merged(runs);
}

std::string Md5(const std::string& path) {
  std::string out;
  REQUIRE(Run({"md5sum", path}, &out) == 0);
  return out.substr(0, 32);
}

TEST_CASE("nbdinfo --map and qemu-img map show holes where nothing was written") {
  DaemonFixture f;
  f.Tapmap({"volume", "create", "v", "16M"});
  CHECK(NbdinfoMap(f.Url("v")) == std::vector<Span>{{0, kSize, true}});
  WriteSample(f.Url("v"));
  std::vector<Span> map = NbdinfoMap(f.Url("v"));
  INFO(Show(map));
  CHECK(map == kExpected);
  std::vector<Span> qemu_map = QemuImgMap(f.Url("v"));
  INFO(Show(qemu_map));
  CHECK(qemu_map == kExpected);
  // The text form names the flags.
  std::string out;
  REQUIRE(Run({"nbdinfo", "--map", f.Url("v")}, &out) == 0);
  CHECK(out.find("hole,zero") != std::string::npos);
  CHECK(out.find("data") != std::string::npos);
  // A snapshot (read-only export) and a clone of it report the same: shared blocks are data.
  f.Tapmap({"volume", "snapshot", "v", "v-s1"});
  f.Tapmap({"volume", "clone", "v-s1", "c"});
  CHECK(NbdinfoMap(f.Url("v-s1")) == kExpected);
  CHECK(NbdinfoMap(f.Url("c")) == kExpected);
  CHECK(f.StopTapdisk() == 0);
}

// Bytes the daemon has read for its clients so far (host-wide).
uint64_t LogicalBytesRead(DaemonFixture& f) {
  nlohmann::json s = f.Tapmap({"stats"});
  if (s.contains("stats")) s = s["stats"];
  return s.at("logical_bytes_read").get<uint64_t>();
}

TEST_CASE("qemu-img convert reads only the data and copies every byte, sparse") {
  DaemonFixture f;
  f.Tapmap({"volume", "create", "v", "16M"});
  WriteSample(f.Url("v"));
  // The reference: the same writes on a local file.
  REQUIRE(Run({"qemu-img", "create", "-f", "raw", f.path("ref.raw"), "16M"}) == 0);
  WriteSample(f.path("ref.raw"));
  const uint64_t read_before = LogicalBytesRead(f);
  REQUIRE(Run({"qemu-img", "convert", "-f", "raw", "-O", "raw", f.Url("v"), f.path("out.raw")}) == 0);
  CHECK(Md5(f.path("out.raw")) == Md5(f.path("ref.raw")));
  // Data: 1M + 3 x 64K. Without block status qemu-img would read all 16M; with it,
  // the holes are never read.
  const uint64_t read = LogicalBytesRead(f) - read_before;
  INFO("bytes read by qemu-img convert: " << read);
  CHECK(read >= kMiB + 3 * 64 * kKiB);
  CHECK(read <= 2 * kMiB);
  struct stat st{};
  REQUIRE(::stat(f.path("out.raw").c_str(), &st) == 0);
  CHECK(static_cast<uint64_t>(st.st_size) == kSize);
  INFO("allocated bytes: " << st.st_blocks * 512);
  CHECK(static_cast<uint64_t>(st.st_blocks) * 512 <= 2 * kMiB);
  CHECK(f.StopTapdisk() == 0);
}

TEST_CASE("writes not yet committed are reported as data at once") {
  DaemonFixture f;
  f.Tapmap({"volume", "create", "v", "16M"});
  // Each write is followed at once by a block status of its block on the same
  // connection (no flush): the pinned, uncommitted copy must count as data. The
  // commit may or may not have run by then; either way the answer must be data.
  const char* script = R"PY(
import nbd
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(URL)
bad = []
for i in range(32):
    off = 65536 * (2 * i + 1)
    h.pwrite(b"\x5a" * 4096, off + 8192)
    seen = []
    def f(ctx, o, entries, err):
        seen.extend(entries)
        return 0
    h.block_status(3 * 65536, off - 65536, f)
    # hole, data, hole
    if seen[0:6] != [65536, 3, 65536, 0, 65536, 3]:
        bad.append((i, seen[0:6]))
h.flush()
print("BAD" if bad else "OK", bad)
)PY";
  std::string out;
  std::string code = "URL = '" + f.Url("v") + "'\n" + script;
  // libnbd's Python module, as nbdsh uses it (the system Python's, whatever PATH says).
  REQUIRE(Run({"/usr/bin/python3", "-c", code}, &out) == 0);
  INFO(out);
  CHECK(out.find("OK") == 0);
  CHECK(f.StopTapdisk() == 0);
}

TEST_CASE("a fragmented volume past 4 GiB is answered in bounded replies, and clients see all of it") {
  DaemonFixture f;
  f.Tapmap({"volume", "create", "v", "6G"});
  f.Tapmap({"volume", "snapshot", "v", "s0"});
  // 64 KiB of data at the start of every MiB of the first 3000 MiB: 6000 runs, more
  // than one reply holds; one BLOCK_STATUS covers up to 4 GiB - 512 bytes. The same
  // walk with tapmap:changed-since:s0 (the diff's pages cut short) sees the same runs.
  const char* script = R"PY(
import nbd
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.add_meta_context("tapmap:changed-since:s0")
h.connect_uri(URL)
M = 1 << 20
for i in range(3000):
    h.pwrite(b"\x33" * 65536, i * M)
h.flush()
size = h.get_size()
def walk(context):
    runs = []
    most = 0
    calls = 0
    def f(ctx, o, entries, err):
        nonlocal most
        if ctx != context:
            return 0
        most = max(most, len(entries) // 2)
        for j in range(0, len(entries), 2):
            runs.append((entries[j], entries[j + 1]))
        return 0
    off = 0
    while off < size:
        before = len(runs)
        h.block_status(min(size - off, (1 << 32) - 512), off, f)
        calls += 1
        off += sum(l for l, _ in runs[before:])
    return runs, calls, most
runs, calls, most = walk("base:allocation")
changes, _, _ = walk("tapmap:changed-since:s0")
want = []
for i in range(3000):
    want += [(65536, 0), (M - 65536, 3)]
want[-1] = (size - 3000 * M + M - 65536, 3)
# merge adjacent runs of one kind (replies may end anywhere)
merged = []
for l, t in runs:
    if merged and merged[-1][1] == t:
        merged[-1] = (merged[-1][0] + l, t)
    else:
        merged.append((l, t))
merged_changes = []
for l, t in changes:
    t = 0 if t else 3  # changed <-> data: every change here is a write
    if merged_changes and merged_changes[-1][1] == t:
        merged_changes[-1] = (merged_changes[-1][0] + l, t)
    else:
        merged_changes.append((l, t))
ok = merged == want and merged_changes == want
print("OK" if ok else "BAD", "calls", calls, "most", most, "runs", len(merged), "change runs", len(merged_changes))
)PY";
  std::string out;
  std::string code = "URL = '" + f.Url("v") + "'\n" + script;
  REQUIRE(Run({"/usr/bin/python3", "-c", code}, &out) == 0);
  INFO(out);
  CHECK(out.find("OK") == 0);
  CHECK(out.find("most 1024") != std::string::npos);  // the bound, reached
  // nbdinfo walks the whole export the same way.
  REQUIRE(Run({"nbdinfo", "--map", "--json", f.Url("v")}, &out) == 0);
  std::vector<Span> map;
  for (const auto& e : nlohmann::json::parse(out)) {
    map.push_back({e.at("offset").get<uint64_t>(), e.at("length").get<uint64_t>(), e.at("type").get<uint32_t>() != 0});
  }
  map = Merged(map);
  REQUIRE(map.size() == 6000);
  CHECK(map[0] == Span{0, 64 * kKiB, false});
  CHECK(map[5998] == Span{2999 * kMiB, 64 * kKiB, false});
  CHECK(map[5999].hole);
  CHECK(map[5999].offset + map[5999].length == 6 * 1024 * kMiB);
  CHECK(f.StopTapdisk() == 0);
}

// ---------------------------------------------------------------------------------------
// tapmap:changed-since:SNAPSHOT

// The changed runs nbdinfo reports for `context` (type 1), merged.
std::vector<Span> ChangedRuns(const std::string& url, const std::string& context) {
  std::string out;
  REQUIRE(Run({"nbdinfo", "--map=" + context, "--json", url}, &out) == 0);
  std::vector<Span> runs;
  for (const auto& e : nlohmann::json::parse(out)) {
    uint32_t type = e.at("type").get<uint32_t>();
    CHECK((type == 0 || type == kStateChanged));
    runs.push_back({e.at("offset").get<uint64_t>(), e.at("length").get<uint64_t>(), type != 0});
  }
  std::vector<Span> changed;
  for (const Span& r : Merged(runs)) {
    if (r.hole) changed.push_back(r);  // `hole` holds "changed" here
  }
  return changed;
}

TEST_CASE("nbdinfo --map=tapmap:changed-since:SNAP equals tapmap volume diff SNAP VOL") {
  DaemonFixture f;
  f.Tapmap({"volume", "create", "v", "16M"});
  WriteSample(f.Url("v"));
  f.Tapmap({"volume", "snapshot", "v", "s1"});
  REQUIRE(Run({"qemu-io", "-f", "raw", "-c", "write -P 0x77 5248k 64k", "-c", "write -P 0x78 8M 128k", "-c",
               "write -z -u 1M 64k", f.Url("v")}) == 0);
  const std::vector<Span> expected = {
      {1 * kMiB, 64 * kKiB, true}, {5 * kMiB + 128 * kKiB, 64 * kKiB, true}, {8 * kMiB, 128 * kKiB, true}};
  std::vector<Span> changed = ChangedRuns(f.Url("v"), "tapmap:changed-since:s1");
  INFO(Show(changed));
  CHECK(changed == expected);
  // The mapserver's own answer.
  nlohmann::json diff = f.Tapmap({"volume", "diff", "s1", "v"});
  std::vector<Span> from_diff;
  for (const auto& e : diff.at("extents")) {
    from_diff.push_back({e.at("offset").get<uint64_t>(), e.at("length").get<uint64_t>(), true});
  }
  CHECK(Merged(from_diff) == changed);
  // Nothing changed since a snapshot of now; a snapshot against an older one.
  f.Tapmap({"volume", "snapshot", "v", "s2"});
  CHECK(ChangedRuns(f.Url("v"), "tapmap:changed-since:s2").empty());
  CHECK(ChangedRuns(f.Url("s2"), "tapmap:changed-since:s1") == expected);
  // An unknown snapshot is no context: nbdinfo cannot map it.
  std::string out;
  CHECK(RunCommand({"nbdinfo", "--map=tapmap:changed-since:nope", f.Url("v")}, &out) != 0);
  CHECK(f.StopTapdisk() == 0);
}

TEST_CASE("changed-since: uncommitted writes are changed, both contexts in one reply") {
  DaemonFixture f;
  f.Tapmap({"volume", "create", "v", "16M"});
  f.Tapmap({"volume", "snapshot", "v", "s1"});
  const char* script = R"PY(
import nbd
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.add_meta_context("tapmap:changed-since:s1")
h.connect_uri(URL)
bad = []
for i in range(16):
    off = 65536 * (2 * i + 1)
    h.pwrite(b"\x5a" * 4096, off + 8192)
    seen = {}
    def f(ctx, o, entries, err):
        seen[ctx] = list(entries)
        return 0
    h.block_status(3 * 65536, off - 65536, f)
    want = {"base:allocation": [65536, 3, 65536, 0, 65536, 3],
            "tapmap:changed-since:s1": [65536, 0, 65536, 1, 65536, 0]}
    if seen != want:
        bad.append((i, seen))
h.flush()
print("BAD" if bad else "OK", bad)
)PY";
  std::string out;
  std::string code = "URL = '" + f.Url("v") + "'\n" + script;
  REQUIRE(Run({"/usr/bin/python3", "-c", code}, &out) == 0);
  INFO(out);
  CHECK(out.find("OK") == 0);
  CHECK(f.StopTapdisk() == 0);
}

}  // namespace
}  // namespace tapmap::nbd
