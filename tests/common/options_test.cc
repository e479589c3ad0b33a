#include "common/options.h"
#include "common/units.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>

namespace tapmap {
namespace {

std::vector<OptionSpec> Specs() {
  return {{"cache-size", "1G", "data cache size"},
          {"server", "", "mapserver address"},
          {"force", "", "overwrite", true}};
}

std::string WriteTemp(const std::string& text) {
  char path[] = "/tmp/tapmap-options-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  return path;
}

}  // namespace

TEST_CASE("Flags override the config file, which overrides defaults") {
  std::string path = WriteTemp("# comment\nserver = unix:/a\n[tapdisk-map]\ncache-size = 2G\n[mapserver]\npool = x\n");
  Options o("tapdisk-map", Specs());
  REQUIRE(o.LoadFile(path, false).ok());
  CHECK(o.Get("cache-size") == "2G");
  CHECK(o.Get("server") == "unix:/a");
  const char* argv[] = {"prog", "--cache-size=4G", "--force", "pos1", "--server", "tcp:h:1"};
  REQUIRE(o.ParseArgs(6, const_cast<char**>(argv)).ok());
  CHECK(*o.GetSize("cache-size") == 4 * kGiB);
  CHECK(o.GetBool("force"));
  CHECK(o.Get("server") == "tcp:h:1");
  CHECK(o.positional() == std::vector<std::string>{"pos1"});
  unlink(path.c_str());
}

TEST_CASE("Unknown keys in the program's section and unknown flags are errors") {
  std::string path = WriteTemp("[tapdisk-map]\ncache-sise = 2G\n");
  Options o("tapdisk-map", Specs());
  Status s = o.LoadFile(path, false);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find(":2: unknown option 'cache-sise'") != std::string::npos);
  const char* argv[] = {"prog", "--bogus"};
  CHECK_FALSE(o.ParseArgs(2, const_cast<char**>(argv)).ok());
  const char* argv2[] = {"prog", "--server"};
  CHECK_FALSE(o.ParseArgs(2, const_cast<char**>(argv2)).ok());
  unlink(path.c_str());
  CHECK(o.LoadFile("/nonexistent/tapmap.conf", true).ok());
  CHECK_FALSE(o.LoadFile("/nonexistent/tapmap.conf", false).ok());
}

}  // namespace tapmap
