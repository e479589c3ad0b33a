#include "tests/tools/tapmap_stack.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

namespace tapmap::testing {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TapmapStack::TapmapStack(Config config) : dir_("tools-stack") {
  std::ofstream(dir_ / "empty.conf") << "# no settings\n";
  std::ofstream(dir_ / "secret") << "tapmap test secret\n";
  REQUIRE(::chmod((dir_ / "secret").c_str(), 0600) == 0);

  std::string out;
  int rc = RunCommand({TAPMAP_BIN_DIR "/mapserver", "format", "--pool", dir_ / "pool", "--meta",
                       dir_ / "meta", "--size", config.pool_size, "--config", dir_ / "empty.conf"},
                      &out);
  INFO(out);
  REQUIRE(rc == 0);
  mapserver_ = std::make_unique<ChildProcess>(
      std::vector<std::string>{TAPMAP_BIN_DIR "/mapserver", "serve", "--pool", dir_ / "pool",
                               "--meta", dir_ / "meta", "--listen", server(), "--secret-file",
                               dir_ / "secret", "--config", dir_ / "empty.conf"},
      dir_ / "mapserver.log");
  INFO(Logs());
  REQUIRE(WaitForPath(dir_ / "mapserver.sock", std::chrono::seconds(20)));

  std::vector<std::string> argv = {"env"};
  if (config.xen) {
    auto xsd = XenstoredInstance::Start(config.guest_domids);
    REQUIRE(xsd.ok());
    xenstored_ = std::move(*xsd);
    auto xs = xenstored_->Connect();  // exports XENSTORED_PATH for every child
    REQUIRE(xs.ok());
    xs_ = std::move(*xs);
    std::string domids;
    for (uint32_t d : config.guest_domids)
      domids += (domids.empty() ? "" : ",") + std::to_string(d);
    argv.push_back(std::string("LD_PRELOAD=") + TAPMAP_XENSTORED_SHIM);
    argv.push_back("XENSTORED_SHIM_DOMIDS=" + domids);
    argv.push_back(xenstored_->EnvironmentAssignment());
  }
  for (const std::string& a :
       {std::string(TAPMAP_BIN_DIR "/tapdisk-map"), std::string("--pool"), dir_ / "pool",
        std::string("--server"), server(), std::string("--secret-file"), dir_ / "secret",
        std::string("--control"), control(), std::string("--nbd"), "unix:" + nbd_socket(),
        std::string("--cache-size"), std::string("64M"), std::string("--host-name"),
        std::string("test-host"), std::string("--config"), dir_ / "empty.conf",
        std::string("--xen"), std::string(config.xen ? "on" : "off")}) {
    argv.push_back(a);
  }
  tapdisk_map_ = std::make_unique<ChildProcess>(argv, dir_ / "tapdisk-map.log");
  bool up = WaitForPath(control(), std::chrono::seconds(30));
  INFO(Logs());
  REQUIRE(up);
}

TapmapStack::~TapmapStack() {
  // tapdisk-map first: it holds leases on the server.
  if (tapdisk_map_) tapdisk_map_->Stop();
  if (mapserver_) mapserver_->Stop();
}

std::string TapmapStack::NbdUrl(const std::string& volume) const {
  return "nbd+unix:///" + volume + "?socket=" + nbd_socket();
}

std::vector<std::string> TapmapStack::TapmapArgv(std::vector<std::string> args) const {
  std::vector<std::string> argv = {TAPMAP_BIN_DIR "/tapmap"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--config");
  argv.push_back(dir_ / "empty.conf");
  // Shared flags only where the command takes them (tapmap rejects foreign flags).
  const std::string family = args.empty() ? std::string() : args[0];
  const std::string verb = args.size() < 2 ? std::string() : args[1];
  const bool copies = family == "volume" && (verb == "import" || verb == "export");
  const bool daemon_only = family == "volume" && (verb == "flatten" || verb == "qos");
  if ((family == "volume" && !daemon_only) || family == "snapshot-live") {
    for (const std::string& a :
         {std::string("--server"), server(), std::string("--secret-file"), dir_ / "secret",
          std::string("--host-name"), std::string("cli-host")}) {
      argv.push_back(a);
    }
  }
  if (family == "vbd" || family == "nbd" || family == "stats" || family == "snapshot-live" || copies ||
      daemon_only) {
    argv.push_back("--control");
    argv.push_back(control());
  }
  return argv;
}

int TapmapStack::Tapmap(std::vector<std::string> args, std::string* out, std::string* err) {
  std::vector<std::string> argv = {"sh", "-c", "exec \"$@\" 2>\"$TAPMAP_TEST_ERR\"", "sh"};
  for (auto& a : TapmapArgv(std::move(args))) argv.push_back(std::move(a));
  std::string err_path = dir_ / "tapmap.err";
  ::setenv("TAPMAP_TEST_ERR", err_path.c_str(), 1);
  std::string stdout_text;
  int rc = RunCommand(argv, &stdout_text);
  if (out) *out = stdout_text;
  if (err) *err = Slurp(err_path);
  return rc;
}

std::string TapmapStack::Logs() const {
  return "--- mapserver.log\n" + Slurp(dir_ / "mapserver.log") + "--- tapdisk-map.log\n" +
         Slurp(dir_ / "tapdisk-map.log");
}

}  // namespace tapmap::testing
