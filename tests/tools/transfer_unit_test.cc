// The pieces of `tapmap volume import|export` that need no daemon: qemu-img's progress
// lines and argv, the incremental file format (round trip and every refusal), the
// helper process runner (lines, exit codes, a forwarded signal), the export's output
// file claim, the libnbd copy plan, and the choice of NBD URL.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <fstream>
#include <string>
#include <vector>

#include "tests/support/child_process.h"
#include "xenstore-tools/cli/helper_process.h"
#include "xenstore-tools/cli/incremental_format.h"
#include "xenstore-tools/cli/interrupt_guard.h"
#include "xenstore-tools/cli/nbd_extent_copy.h"
#include "xenstore-tools/cli/nbd_url.h"
#include "xenstore-tools/cli/output_file.h"
#include "xenstore-tools/cli/qemu_img.h"

namespace tapmap::cli {
namespace {

using testing::TempDir;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

IncrementalHeader SampleHeader() {
  IncrementalHeader h;
  h.from = "s1";
  h.to = "s2";
  h.from_size_bytes = 1 << 20;
  h.size_bytes = 2 << 20;
  h.created_unix_seconds = 1700000000;
  h.extents = {{0, 4096, false}, {65536, 65536, true}, {1 << 20, 512, false}};
  return h;
}

}  // namespace

TEST_CASE("qemu-img -p lines are parsed into percentages, anything else is ignored") {
  CHECK(ParseQemuImgProgress("    (0.00/100%)") == 0.0);
  CHECK(ParseQemuImgProgress("    (42.50/100%)") == 42.5);
  CHECK(ParseQemuImgProgress("    (100.00/100%)") == 100.0);
  CHECK_FALSE(ParseQemuImgProgress("qemu-img: error while reading").has_value());
  CHECK_FALSE(ParseQemuImgProgress("    (abc/100%)").has_value());
  CHECK_FALSE(ParseQemuImgProgress("    (142.00/100%)").has_value());
  CHECK_FALSE(ParseQemuImgProgress("").has_value());
}

TEST_CASE("qemu-img convert argv: import writes sparsely into an existing target and flushes") {
  auto argv = QemuImgConvertArgv({"disk.qcow2", "qcow2", "nbd+unix:///v?socket=/s", "raw", true, true});
  CHECK(argv == std::vector<std::string>{"qemu-img", "convert", "-p", "-t", "writeback", "-f", "qcow2", "-O",
                                         "raw", "-n", "--target-is-zero", "disk.qcow2",
                                         "nbd+unix:///v?socket=/s"});
  argv = QemuImgConvertArgv({"nbd+unix:///v@ro?socket=/s", "raw", "a:b.vmdk", "vmdk", false, false});
  CHECK(argv.back() == "./a:b.vmdk");  // not protocol "a"
  CHECK(std::find(argv.begin(), argv.end(), "-n") == argv.end());
  CHECK(IsNbdUrl("nbd://host:10809/x"));
  CHECK(IsNbdUrl("nbds+unix:///x?socket=/s"));
  CHECK_FALSE(IsNbdUrl("/tmp/nbd://x"));
  CHECK(QemuLocation("/abs:path") == "/abs:path");
  CHECK(IsFormatName("qcow2"));
  CHECK_FALSE(IsFormatName("raw,file.filename=/etc/shadow"));
  CHECK_FALSE(IsFormatName(""));
}

TEST_CASE("incremental file: written header and data read back, the format's rules are enforced") {
  TempDir dir("tools-transfer");
  IncrementalHeader h = SampleHeader();
  REQUIRE(ValidateIncremental(h).ok());
  CHECK(h.data_bytes() == 4608);
  CHECK(h.zero_bytes() == 65536);
  std::string header = EncodeIncrementalHeader(h);
  CHECK(header.size() % kIncrementalAlignment == 0);
  CHECK(header.rfind("tapmap-incremental 1\n{\"from\":\"s1\"", 0) == 0);
  std::string path = dir / "f";
  WriteFile(path, header + std::string(h.data_bytes(), 'x'));

  auto read = [&](const std::string& p) {
    int fd = ::open(p.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    auto f = ReadIncrementalFile(fd, p);
    ::close(fd);
    return f;
  };
  auto f = read(path);
  REQUIRE(f.ok());
  CHECK(f->data_offset == header.size());
  CHECK(f->header.from == "s1");
  CHECK(f->header.to == "s2");
  CHECK(f->header.from_size_bytes == h.from_size_bytes);
  CHECK(f->header.size_bytes == h.size_bytes);
  CHECK(f->header.created_unix_seconds == h.created_unix_seconds);
  REQUIRE(f->header.extents.size() == 3);
  CHECK(f->header.extents[1].zero);
  CHECK(f->header.extents[2].offset == 1 << 20);

  SECTION("truncated or padded data") {
    WriteFile(path, header + std::string(h.data_bytes() - 1, 'x'));
    auto cut = read(path);
    CHECK(cut.status().code() == StatusCode::kCorruption);
    CHECK(cut.status().message().find("truncated") != std::string::npos);
    WriteFile(path, header + std::string(h.data_bytes() + 1, 'x'));
    CHECK(read(path).status().code() == StatusCode::kCorruption);
  }
  SECTION("not an incremental file at all, or cut inside its header") {
    WriteFile(path, "QFI\xfb");
    CHECK(read(path).status().message().find("not a tapmap incremental file") != std::string::npos);
    WriteFile(path, header.substr(0, 40));
    CHECK(read(path).status().code() == StatusCode::kCorruption);
  }
  SECTION("a header whose fields lie") {
    std::string bad = header;
    bad.replace(bad.find("\"data_bytes\":4608"), 17, "\"data_bytes\":4609");
    WriteFile(path, bad + std::string(4609, 'x'));
    CHECK(read(path).status().message().find("data_bytes") != std::string::npos);
    bad = header;
    bad.replace(bad.find("\"zero\"]"), 7, "\"hole\"]");
    WriteFile(path, bad + std::string(4608, 'x'));
    CHECK(read(path).status().code() == StatusCode::kCorruption);
  }
  SECTION("extents must be sorted, disjoint, aligned, inside the volume") {
    IncrementalHeader b = SampleHeader();
    b.extents = {{4096, 4096, false}, {0, 4096, false}};
    CHECK(ValidateIncremental(b).code() == StatusCode::kInvalidArgument);
    b.extents = {{0, 4096, false}, {2048, 4096, false}};
    CHECK_FALSE(ValidateIncremental(b).ok());
    b.extents = {{100, 512, false}};
    CHECK_FALSE(ValidateIncremental(b).ok());
    b.extents = {{(2 << 20) - 512, 1024, true}};
    CHECK_FALSE(ValidateIncremental(b).ok());
    b.extents = {{0, 0, true}};
    CHECK_FALSE(ValidateIncremental(b).ok());
    b.extents = {{~0ull - 511, 512, true}};  // offset + length overflows
    CHECK_FALSE(ValidateIncremental(b).ok());
  }
}

TEST_CASE("HelperProcess: stdout lines split at newlines and carriage returns, stdin fed, exit code and stderr kept") {
  auto guard = InterruptGuard::Install();
  REQUIRE(guard.ok());
  std::vector<std::string> lines;
  auto r = HelperProcess::Run({"sh", "-c", "printf 'a\\rb\\n'; cat; echo oops >&2; exit 3"}, "from stdin\n", **guard,
                              [&](std::string_view l) { lines.emplace_back(l); });
  REQUIRE(r.ok());
  CHECK(lines == std::vector<std::string>{"a", "b", "from stdin"});
  CHECK(r->exit_code == 3);
  CHECK(r->error_tail == "oops");
  CHECK_FALSE(r->succeeded());
  CHECK(r->ToStatus("sh").message() == "sh failed (exit code 3): oops");

  auto missing = HelperProcess::Run({"no-such-helper-program"}, "", **guard, [](std::string_view) {}, "apt-get x");
  CHECK(missing.status().code() == StatusCode::kNotSupported);
  CHECK(missing.status().message() == "no-such-helper-program is not installed (apt-get x)");
}

TEST_CASE("HelperProcess: a SIGTERM to the CLI is forwarded to the helper, which ends, the CLI lives") {
  auto guard = InterruptGuard::Install();
  REQUIRE(guard.ok());
  // Queued before Run starts: Run sees it at its first poll and forwards it; `sleep`
  // (started with default dispositions) dies of it.
  ::kill(::getpid(), SIGTERM);
  auto r = HelperProcess::Run({"sleep", "600"}, "", **guard, [](std::string_view) {});
  REQUIRE(r.ok());
  CHECK(r->interrupted_by == SIGTERM);
  CHECK(r->term_signal == SIGTERM);
  CHECK(r->ToStatus("sleep").code() == StatusCode::kAborted);
  CHECK(r->ToStatus("sleep").message() == "interrupted by SIGTERM");
  CHECK((*guard)->Take() == SIGTERM);
}

TEST_CASE("OutputFile: an existing file is never touched without overwrite, a failed export leaves none") {
  TempDir dir("tools-transfer");
  std::string path = dir / "dest";
  {
    auto f = OutputFile::Claim(path, false);
    REQUIRE(f.ok());
    CHECK(::access(path.c_str(), F_OK) == 0);
  }
  CHECK(::access(path.c_str(), F_OK) != 0);  // not kept: removed
  {
    auto f = OutputFile::Claim(path, false);
    REQUIRE(f.ok());
    f->Keep();
  }
  CHECK(::access(path.c_str(), F_OK) == 0);
  WriteFile(path, "precious");
  auto again = OutputFile::Claim(path, false);
  CHECK(again.status().code() == StatusCode::kAlreadyExists);
  CHECK(again.status().message().find("--force") != std::string::npos);
  CHECK(Slurp(path) == "precious");
  CHECK(OutputFile::Claim(dir.path(), true).status().code() == StatusCode::kInvalidArgument);
  {
    auto f = OutputFile::Claim(path, true);
    REQUIRE(f.ok());
    CHECK(Slurp(path).empty());  // truncated
    f->Keep();
  }
  // A non-regular destination (here /dev/null) is written in place and never removed.
  { auto f = OutputFile::Claim("/dev/null", true); REQUIRE(f.ok()); }
  CHECK(::access("/dev/null", F_OK) == 0);
}

TEST_CASE("NbdExtentCopy plan: one line per step after the URL and the file") {
  std::vector<ExtentCopyStep> steps = {{ExtentCopyStep::Kind::kPush, 0, 4096, 8192},
                                       {ExtentCopyStep::Kind::kZero, 65536, 1024, 0}};
  CHECK(NbdExtentCopy::Plan("nbd+unix:///v?socket=/s", "/f", steps) ==
        "url nbd+unix:///v?socket=/s\nfile ro /f\npush 0 4096 8192\nzero 65536 1024\n");
  steps = {{ExtentCopyStep::Kind::kPull, 512, 512, 4096}};
  CHECK(NbdExtentCopy::Plan("u", "/f", steps) == "url u\nfile rw /f\npull 512 512 4096\n");
}

TEST_CASE("NBD URL of a volume: shared plain listeners only, allow-lists honoured, @ro included") {
  nlohmann::json exports = nlohmann::json::parse(R"([
    {"address": "unix:/run/one.sock", "export": "vm9"},
    {"address": "tcp:0.0.0.0:10809", "tls": "required"},
    {"address": "unix:/run/vm.sock", "allowed_exports": ["vm*"]},
    {"address": "tcp:127.0.0.1:10810"}
  ])");
  CHECK(FindNbdUrl(exports, "vm1", true).url == "nbd+unix:///vm1?socket=/run/vm.sock");
  CHECK(FindNbdUrl(exports, "vm1@ro", true).url == "nbd+unix:///vm1@ro?socket=/run/vm.sock");
  CHECK(FindNbdUrl(exports, "golden", true).url == "nbd://127.0.0.1:10810/golden");
  CHECK(FindNbdUrl(exports, "golden", false).url == "nbds://0.0.0.0:10809/golden");
  CHECK(FindNbdUrl(exports, "golden", false).address == "tcp:0.0.0.0:10809");
  CHECK(FindNbdUrl(nlohmann::json::array(), "golden", true).url.empty());
}

}  // namespace tapmap::cli
