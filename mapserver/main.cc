// mapserver: the tapmap file server.
//
//   mapserver format --pool PATH --meta DIR --size SIZE [--block-size 64K] [--force] [--preallocate]
//                    [--object-size 4M]
//   (PATH is a file, a block device or rados:CEPHPOOL/PREFIX[?conf=F&id=NAME&timeout=S],
//   protocol/pool_location.h)
//   mapserver serve  --pool PATH --meta DIR [--listen ADDR] [--secret-file F] [--standby]
//   mapserver fsck   --pool PATH --meta DIR   (a rados: pool: --meta not needed)
//
// A rados: pool keeps its metadata in RADOS too (doc/metadata_rados.md): --meta is
// then the local working copy, rebuilt from RADOS when serve starts or takes over.
//
// Settings come from the [mapserver] section of the config file (--config, default
// /etc/tapmap/tapmap.conf), overridden by flags.
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "common/logging.h"
#include "common/options.h"
#include "common/units.h"
#include "protocol/auth.h"
#include "protocol/remote_status.h"
#include "protocol/server_address.h"
#include "mapserver/certificate_authority.h"
#include "mapserver/credential_registry.h"
#include "mapserver/active_role.h"
#include "mapserver/fsck.h"
#include "mapserver/mapping_service.h"
#include "mapserver/rados_pool_fencer.h"
#include "mapserver/temp_meta_dir.h"
#include "protocol/pool_location.h"
#include "protocol/superblock_file.h"
#include "protocol/tls.h"
#include "mapserver/server.h"
#include "mapserver/volume_store.h"

namespace tapmap::mapserver {
namespace {

constexpr const char* kDefaultConfig = "/etc/tapmap/tapmap.conf";

const char* kUsage =
    "usage: mapserver COMMAND [flags]\n"
    "\n"
    "commands:\n"
    "  format   create a pool: write its superblock and empty metadata\n"
    "           (--pool, --meta, --size; --block-size, --force, --preallocate,\n"
    "           --object-size)\n"
    "  serve    serve the mapping protocol (--pool, --meta; --listen, --secret-file)\n"
    "  fsck     check the metadata's consistency (--pool, --meta); exit 0 if clean\n"
    "  credential init-ca      make the cluster CA (--ca; --cluster-name, --days)\n"
    "  credential issue-server the mapserver's TLS files (--ca, --out; --days)\n"
    "  credential issue        a host's or admin's TLS files and registry record\n"
    "                          (--ca, --credentials, --host, --out; --role, --scope, --days)\n"
    "  credential list         the registry (--credentials)\n"
    "  credential revoke       revoke --id ID, or every credential of --host (--credentials)\n"
    "  (doc/trust.md: TCP needs --tls-dir and --credentials, unless\n"
    "   --insecure-plaintext-tcp; unix sockets use the shared secret)\n"
    "\n"
    "flags (also keys of the [mapserver] section of the config file):\n";

std::vector<OptionSpec> Specs() {
  return {
      {"config", kDefaultConfig, "config file (a missing default file is ignored)"},
      {"pool", "", "pool file, block device or rados:CEPHPOOL/PREFIX[?conf=FILE&id=NAME&timeout=SECONDS]"},
      {"meta", "", "metadata directory (LMDB)"},
      {"size", "", "format: pool size, e.g. 100G (default for a device: its size)"},
      {"block-size", "64K", "format: pool block size, 4K..1M, power of two"},
      {"force", "", "format: overwrite an existing pool superblock and metadata", true},
      {"preallocate", "", "format: reserve a pool file's space in the host filesystem (not sparse)", true},
      {"object-size", "4M", "format: bytes of the pool per RADOS object (rados: pools; power of two >= block size)"},
      {"listen", std::string(protocol::kDefaultServerAddress), "serve: unix:PATH or tcp:HOST:PORT"},
      {"secret-file", std::string(protocol::kDefaultSecretFile), "serve: shared secret of the hosts"},
      {"recall-timeout", "10", "serve: seconds an opener has to answer a recall"},
      {"lease-seconds", "15", "serve: host lease time T (0.2..600, decimals allowed; doc/leases.md)"},
      {"tls-dir", "", "serve: ca.crt, server.crt, server.key: mutual TLS on TCP (doc/trust.md)"},
      {"credentials", "", "serve, credential: the credential registry directory"},
      {"insecure-plaintext-tcp", "",
       "serve: allow TCP without TLS (shared secret, no encryption, no per-host authority)", true},
      {"ca", "", "credential: the CA directory (ca.key, ca.crt)"},
      {"out", "", "credential issue*: directory to write the TLS files into"},
      {"host", "", "credential issue/revoke: the host name"},
      {"id", "", "credential revoke: the credential id"},
      {"role", "host", "credential issue: host (open volumes in scope) or admin (also create/delete/...)"},
      {"scope", "*", "credential issue: comma-separated volume name patterns, or set:VOLUME for VOLUME's version set"},
      {"days", "825", "credential: validity of a certificate in days (init-ca: 3650 if not given)"},
      {"cluster-name", "tapmap", "credential init-ca: a name for the CA"},
      {"max-connections", "1024", "serve: connections at once, all peers (doc/trust.md)"},
      {"max-connections-per-address", "64", "serve: connections at once from one IP address"},
      {"login-timeout", "10", "serve: seconds a new connection has to log in"},
      {"log-level", "info", "debug, info, warning or error"},
      {"standby", "", "serve (rados: pool): follow the active's metadata and take over when its lock expires", true},
      {"lock-seconds", "6", "serve (rados: pool): duration of the active lock, renewed every sixth of it (2..60)"},
      {"checkpoint-every", "1000", "serve (rados: pool): metadata journal records between checkpoints"},
  };
}

// The RADOS metadata of `pool` if it is a rados: location, else null.
Result<std::unique_ptr<RadosMetadataJournal>> RadosJournalFor(const std::string& pool,
                                                              std::unique_ptr<rados::RadosCluster>* cluster,
                                                              const Logger& logger) {
  auto location = protocol::ParsePoolLocation(pool);
  if (!location.ok()) return location.status();
  if (!location->is_rados()) return std::unique_ptr<RadosMetadataJournal>();
  auto connected = rados::RadosCluster::Connect(location->rados);
  if (!connected.ok()) return connected.status();
  *cluster = std::move(*connected);
  return std::make_unique<RadosMetadataJournal>(**cluster, location->prefix, logger);
}

int Usage(const Options& options, FILE* out, int rc) {
  std::fputs(kUsage, out);
  std::fputs(options.FlagHelp().c_str(), out);
  return rc;
}

int Fail(const Status& status) {
  std::fprintf(stderr, "mapserver: %s\n", status.ToString().c_str());
  return 1;
}

Status Require(const Options& options, const char* name) {
  if (!options.Has(name)) return Status::InvalidArgument(std::string("--") + name + " is required");
  return Status::Ok();
}

int Format(const Options& options) {
  for (const char* name : {"pool", "meta"}) {
    if (Status s = Require(options, name); !s.ok()) return Fail(s);
  }
  protocol::FormatOptions fo;
  fo.path = options.Get("pool");
  fo.force = options.GetBool("force");
  fo.preallocate = options.GetBool("preallocate");
  if (options.Has("size")) {
    auto size = options.GetSize("size");
    if (!size.ok()) return Fail(size.status());
    fo.size_bytes = *size;
  }
  auto bs = options.GetSize("block-size");
  if (!bs.ok()) return Fail(bs.status());
  if (*bs > kMaxBlockSize) return Fail(Status::InvalidArgument("--block-size must be 4K..1M"));
  fo.block_size = static_cast<uint32_t>(*bs);
  auto object_size = options.GetSize("object-size");
  if (!object_size.ok()) return Fail(object_size.status());
  fo.object_bytes = *object_size;
  // Refuse before touching the pool if the metadata directory is in use.
  std::string data_file = options.Get("meta") + "/data.mdb";
  struct stat st;
  if (!fo.force && ::stat(data_file.c_str(), &st) == 0 && st.st_size > 0) {
    return Fail(
        Status::AlreadyExists("metadata directory " + options.Get("meta") +
                              " already holds tapmap metadata (use --force to replace it)"));
  }
  // A RADOS pool's metadata in RADOS: refused before anything is written if present.
  std::unique_ptr<rados::RadosCluster> cluster;
  auto journal = RadosJournalFor(fo.path, &cluster, Logger("mapserver", LogLevel::kWarning));
  if (!journal.ok()) return Fail(journal.status());
  if (*journal && !fo.force) {
    auto exists = (*journal)->Exists();
    if (!exists.ok()) return Fail(exists.status());
    if (*exists) {
      return Fail(Status::AlreadyExists("RADOS object " + (*journal)->journal_oid() +
                                        " already holds mapserver metadata (use --force to replace it)"));
    }
  }
  auto sb = protocol::FormatPool(fo);
  if (!sb.ok()) return Fail(sb.status());
  Status s = VolumeStore::InitMetadata(*sb, options.Get("meta"), fo.force);
  if (!s.ok()) return Fail(s);
  if (*journal && !(s = (*journal)->Format(options.Get("meta"), fo.force)).ok()) return Fail(s);
  std::printf("formatted pool %s: uuid %s, %llu blocks of %s (%s), metadata in %s\n",
              fo.path.c_str(), protocol::FormatUuid(sb->uuid).c_str(),
              static_cast<unsigned long long>(sb->total_blocks), FormatSize(sb->block_size).c_str(),
              FormatSize(sb->total_blocks * sb->block_size).c_str(), options.Get("meta").c_str());
  return 0;
}

int Fsck(const Options& options, const Logger& logger) {
  if (Status s = Require(options, "pool"); !s.ok()) return Fail(s);
  auto sb = protocol::ReadPoolSuperblock(options.Get("pool"));
  if (!sb.ok()) return Fail(sb.status());
  // A rados: pool: check what RADOS holds (checkpoint + journal), loaded into a
  // scratch directory; the same checks as for LMDB.
  std::unique_ptr<rados::RadosCluster> cluster;
  auto journal = RadosJournalFor(options.Get("pool"), &cluster, logger);
  if (!journal.ok()) return Fail(journal.status());
  std::unique_ptr<TempMetaDir> scratch;
  std::string meta_dir = options.Get("meta");
  if (*journal) {
    auto made = TempMetaDir::Make();
    if (!made.ok()) return Fail(made.status());
    scratch = std::move(*made);
    meta_dir = scratch->path();
    if (Status s = (*journal)->Restore(meta_dir); !s.ok()) return Fail(s);
  } else if (Status s = Require(options, "meta"); !s.ok()) {
    return Fail(s);
  }
  auto store = VolumeStore::Open(*sb, meta_dir, logger);
  if (!store.ok()) return Fail(store.status());
  FsckReport report = CheckMetadata((*store)->metadata(), *sb);
  for (const auto& p : report.problems) std::printf("problem: %s\n", p.c_str());
  std::printf("fsck %s\n", report.Summary().c_str());
  return report.clean() ? 0 : 2;
}

// The active/standby role for a rados: pool (null for a file pool).
Result<std::unique_ptr<RadosActiveRole>> MakeActiveRole(const Options& options, const Logger& logger) {
  auto location = protocol::ParsePoolLocation(options.Get("pool"));
  if (!location.ok()) return location.status();
  if (!location->is_rados()) {
    if (options.GetBool("standby")) return Status::InvalidArgument("--standby needs a rados: pool");
    return std::unique_ptr<RadosActiveRole>();
  }
  ActiveRoleOptions ro;
  ro.meta_dir = options.Get("meta");
  ro.standby = options.GetBool("standby");
  auto lock_seconds = options.GetUint("lock-seconds");
  if (!lock_seconds.ok()) return lock_seconds.status();
  if (*lock_seconds < 2 || *lock_seconds > 60) return Status::InvalidArgument("--lock-seconds must be 2..60");
  ro.lock_duration = std::chrono::seconds(*lock_seconds);
  auto every = options.GetUint("checkpoint-every");
  if (!every.ok()) return every.status();
  if (*every == 0 || *every > 1000000) return Status::InvalidArgument("--checkpoint-every must be 1..1000000");
  ro.checkpoint_every = static_cast<uint32_t>(*every);
  auto cluster = rados::RadosCluster::Connect(location->rados);
  if (!cluster.ok()) return cluster.status();
  return std::make_unique<RadosActiveRole>(std::move(*cluster), location->prefix, ro, logger);
}

int Serve(const Options& options, const Logger& logger) {
  for (const char* name : {"pool", "meta"}) {
    if (Status s = Require(options, name); !s.ok()) return Fail(s);
  }
  auto address = protocol::ParseServerAddress(options.Get("listen"));
  if (!address.ok()) return Fail(address.status());
  auto timeout = options.GetUint("recall-timeout");
  if (!timeout.ok()) return Fail(timeout.status());
  if (*timeout == 0 || *timeout > 3600) {
    return Fail(Status::InvalidArgument("--recall-timeout must be 1..3600 seconds"));
  }
  double lease_seconds = 0;
  try {
    size_t used = 0;
    lease_seconds = std::stod(options.Get("lease-seconds"), &used);
    if (used != options.Get("lease-seconds").size()) lease_seconds = -1;
  } catch (const std::exception&) {
    lease_seconds = -1;
  }
  if (!(lease_seconds >= 0.2 && lease_seconds <= 600)) {
    return Fail(Status::InvalidArgument("--lease-seconds must be a number of seconds in 0.2..600"));
  }
  ServerLimits limits;
  for (auto [flag, field] : {std::pair{"max-connections", &limits.max_connections},
                             std::pair{"max-connections-per-address", &limits.max_connections_per_peer}}) {
    auto n = options.GetUint(flag);
    if (!n.ok()) return Fail(n.status());
    if (*n == 0 || *n > 1000000) {
      return Fail(Status::InvalidArgument(std::string("--") + flag + " must be 1..1000000"));
    }
    *field = *n;
  }
  limits.max_anonymous_per_peer = std::min(limits.max_anonymous_per_peer, limits.max_connections_per_peer);
  auto login_timeout = options.GetUint("login-timeout");
  if (!login_timeout.ok()) return Fail(login_timeout.status());
  if (*login_timeout == 0 || *login_timeout > 600) {
    return Fail(Status::InvalidArgument("--login-timeout must be 1..600 seconds"));
  }
  limits.login_timeout = *login_timeout * kj::SECONDS;
  // TCP is TLS unless the operator says, loudly, that it may be plaintext.
  bool tls = options.Has("tls-dir");
  if (address->kind == protocol::ServerAddress::Kind::kTcp && !tls && !options.GetBool("insecure-plaintext-tcp")) {
    return Fail(Status::InvalidArgument(
        "refusing to serve TCP without TLS: give --tls-dir and --credentials (doc/trust.md), or "
        "--insecure-plaintext-tcp on a network where every peer is trusted"));
  }
  if (tls && !options.Has("credentials")) {
    return Fail(Status::InvalidArgument("--tls-dir needs --credentials (the registry of host credentials)"));
  }
  std::string secret_text;
  if (address->kind == protocol::ServerAddress::Kind::kUnix || !tls) {
    auto secret = protocol::ReadSecretFile(options.Get("secret-file"));
    if (!secret.ok()) return Fail(secret.status());
    secret_text = *secret;
  }
  auto sb = protocol::ReadPoolSuperblock(options.Get("pool"));
  if (!sb.ok()) return Fail(sb.status());
  // Before any thread starts (librados's): every thread then has them blocked and
  // the event loop (or a standby's wait) takes them.
  ::signal(SIGPIPE, SIG_IGN);
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  // A rados: pool: become the active mapserver first (doc/metadata_rados.md).
  std::unique_ptr<RadosActiveRole> role;
  if (auto made = MakeActiveRole(options, logger); !made.ok()) {
    return Fail(made.status());
  } else if ((role = std::move(*made)) != nullptr) {
    Status s = role->BecomeActive();
    if (s.code() == StatusCode::kAborted) {
      logger.Infof("%s", s.message().c_str());
      return 0;
    }
    if (!s.ok()) return Fail(s);
  }
  auto store =
      VolumeStore::Open(*sb, options.Get("meta"), logger.WithContext("pool", protocol::FormatUuid(sb->uuid)));
  if (!store.ok()) return Fail(store.status());
  if (role) role->Attach((*store)->metadata());

  auto io = kj::setupAsyncIo();
  ServiceOptions service_options;
  service_options.callback_timeout = *timeout * kj::SECONDS;
  service_options.lease_time = static_cast<int64_t>(lease_seconds * 1000) * kj::MILLISECONDS;
  if (options.Has("credentials")) service_options.credentials_dir = options.Get("credentials");
  // A rados: pool: an expired host's librados clients are blocklisted before its
  // volumes move on (pool_fencer.h). Outlives the service (declared before it).
  std::unique_ptr<RadosPoolFencer> fencer;
  if (auto location = protocol::ParsePoolLocation(options.Get("pool")); location.ok() && location->is_rados()) {
    auto made = RadosPoolFencer::Create(location->rados, logger.WithContext("layer", "fencing"));
    if (!made.ok()) return Fail(made.status());
    fencer = std::move(*made);
    service_options.fencer = fencer.get();
  }
  std::unique_ptr<protocol::TlsConfig> tls_config;
  if (tls) {
    auto loaded = protocol::TlsConfig::LoadServer(options.Get("tls-dir"), io.provider->getTimer(),
                                                  limits.login_timeout);
    if (!loaded.ok()) return Fail(loaded.status());
    tls_config = std::move(*loaded);
  } else if (address->kind == protocol::ServerAddress::Kind::kTcp) {
    logger.Warnf("INSECURE: serving plaintext TCP (--insecure-plaintext-tcp): traffic is neither "
                 "encrypted nor authenticated per host");
  }
  auto service = std::make_unique<MappingService>(**store, secret_text, io.provider->getTimer(), logger,
                                                  service_options);
  auto server = std::make_unique<Server>(io, *service, logger, limits);
  Status listening = server->Listen(*address, io.waitScope, tls_config.get());
  if (!listening.ok()) return Fail(listening);
  logger.Infof("listening on %s%s (pool %s, %llu blocks of %s)", server->bound_address().c_str(),
               tls ? " with mutual TLS" : "",
               protocol::FormatUuid(sb->uuid).c_str(), static_cast<unsigned long long>(sb->total_blocks),
               FormatSize(sb->block_size).c_str());
  if (role) {
    if (Status s = role->Announce(server->bound_address()); !s.ok()) logger.Warnf("%s", s.ToString().c_str());
  }
  std::printf("listening on %s\n", server->bound_address().c_str());
  std::fflush(stdout);

  auto stop = io.unixEventPort.onSignal(SIGTERM).exclusiveJoin(io.unixEventPort.onSignal(SIGINT));
  siginfo_t info = stop.wait(io.waitScope);
  logger.Infof("signal %d: closing connections and exiting", info.si_signo);
  server.reset();  // drops connections; held rw leases stay recorded for the next grace period
  service.reset();
  if (role) {
    if (Status s = role->Shutdown(); !s.ok()) logger.Warnf("last metadata checkpoint: %s", s.ToString().c_str());
  }
  store->reset();  // every acknowledged change is already durable
  return 0;
}

Result<int> DaysOf(const Options& options, int default_days) {
  if (!options.Has("days")) return default_days;
  auto days = options.GetUint("days");
  if (!days.ok()) return days.status();
  if (*days == 0 || *days > 36500) return Status::InvalidArgument("--days must be 1..36500");
  return static_cast<int>(*days);
}

int CredentialCommand(const std::string& verb, const Options& options) {
  if (verb == "init-ca") {
    if (Status s = Require(options, "ca"); !s.ok()) return Fail(s);
    auto days = DaysOf(options, 3650);
    if (!days.ok()) return Fail(days.status());
    Status s = CertificateAuthority::Init(options.Get("ca"), options.Get("cluster-name"), *days);
    if (!s.ok()) return Fail(s);
    std::printf("made the cluster CA in %s (ca.key: keep it off the storage network)\n", options.Get("ca").c_str());
    return 0;
  }
  if (verb == "issue-server") {
    for (const char* name : {"ca", "out"}) {
      if (Status s = Require(options, name); !s.ok()) return Fail(s);
    }
    auto days = DaysOf(options, 825);
    if (!days.ok()) return Fail(days.status());
    auto ca = CertificateAuthority::Load(options.Get("ca"));
    if (!ca.ok()) return Fail(ca.status());
    if (Status s = ca->IssueServer(options.Get("out"), *days); !s.ok()) return Fail(s);
    std::printf("wrote ca.crt, server.crt, server.key to %s (mapserver serve --tls-dir %s)\n",
                options.Get("out").c_str(), options.Get("out").c_str());
    return 0;
  }
  if (verb == "issue") {
    for (const char* name : {"ca", "credentials", "host", "out"}) {
      if (Status s = Require(options, name); !s.ok()) return Fail(s);
    }
    auto days = DaysOf(options, 825);
    if (!days.ok()) return Fail(days.status());
    Credential c;
    c.host = options.Get("host");
    if (!protocol::IsValidHostName(c.host) || c.host.find('/') != std::string::npos) {
      return Fail(Status::InvalidArgument("bad host name '" + c.host + "'"));
    }
    if (!ParseRole(options.Get("role"), &c.role)) {
      return Fail(Status::InvalidArgument("--role must be host or admin"));
    }
    std::string scope = options.Get("scope");
    for (size_t start = 0; start <= scope.size();) {
      size_t comma = scope.find(',', start);
      std::string pattern = scope.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (pattern.empty() || pattern.find_first_of(" \t\n") != std::string::npos) {
        return Fail(Status::InvalidArgument("--scope: empty pattern or one with spaces in '" + scope + "'"));
      }
      c.scope.push_back(pattern);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    c.id = CredentialRegistry::NewId();
    c.issued = CredentialRegistry::Now();
    auto ca = CertificateAuthority::Load(options.Get("ca"));
    if (!ca.ok()) return Fail(ca.status());
    CredentialRegistry registry(options.Get("credentials"));
    // The record first: a certificate without one is useless, never the reverse.
    if (Status s = registry.Add(c); !s.ok()) return Fail(s);
    if (Status s = ca->IssueHost({c.host, c.id}, options.Get("out"), *days); !s.ok()) return Fail(s);
    std::printf("credential %s: host %s, role %s, scope %s; wrote ca.crt, host.crt, host.key to %s\n",
                c.id.c_str(), c.host.c_str(), RoleName(c.role), scope.c_str(), options.Get("out").c_str());
    return 0;
  }
  if (verb == "list") {
    if (Status s = Require(options, "credentials"); !s.ok()) return Fail(s);
    auto all = CredentialRegistry(options.Get("credentials")).List();
    if (!all.ok()) return Fail(all.status());
    std::printf("%-16s  %-20s  %-5s  %-20s  %-20s  %s\n", "ID", "HOST", "ROLE", "ISSUED", "REVOKED", "SCOPE");
    for (const auto& c : *all) {
      std::string scope;
      for (const auto& p : c.scope) scope += (scope.empty() ? "" : ",") + p;
      std::printf("%-16s  %-20s  %-5s  %-20s  %-20s  %s\n", c.id.c_str(), c.host.c_str(), RoleName(c.role),
                  c.issued.c_str(), c.revoked.empty() ? "-" : c.revoked.c_str(), scope.c_str());
    }
    return 0;
  }
  if (verb == "revoke") {
    if (Status s = Require(options, "credentials"); !s.ok()) return Fail(s);
    if (options.Has("id") == options.Has("host")) {
      return Fail(Status::InvalidArgument("revoke needs exactly one of --id and --host"));
    }
    CredentialRegistry registry(options.Get("credentials"));
    std::vector<std::string> ids;
    if (options.Has("id")) {
      ids.push_back(options.Get("id"));
    } else {
      auto all = registry.List();
      if (!all.ok()) return Fail(all.status());
      for (const auto& c : *all) {
        if (c.host == options.Get("host") && c.revoked.empty()) ids.push_back(c.id);
      }
      if (ids.empty()) return Fail(Status::NotFound("host " + options.Get("host") + " has no valid credential"));
    }
    for (const auto& id : ids) {
      if (Status s = registry.Revoke(id); !s.ok()) return Fail(s);
      std::printf("revoked credential %s\n", id.c_str());
    }
    return 0;
  }
  std::fprintf(stderr, "mapserver: unknown credential command '%s'\n", verb.c_str());
  return 2;
}

int Main(int argc, char** argv) {
  Options options("mapserver", Specs());
  if (argc < 2) return Usage(options, stderr, 2);
  std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") return Usage(options, stdout, 0);
  // --config is needed before the file is read: find it first.
  std::string config = kDefaultConfig;
  bool config_given = false;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      config = argv[i + 1];
      config_given = true;
    } else if (arg.rfind("--config=", 0) == 0) {
      config = arg.substr(9);
      config_given = true;
    }
  }
  if (Status s = options.LoadFile(config, !config_given); !s.ok()) return Fail(s);
  // "credential VERB": the verb is the second word.
  int first_flag = 2;
  std::string verb;
  if (command == "credential") {
    if (argc < 3 || argv[2][0] == '-') {
      std::fprintf(stderr, "mapserver: credential needs a command (init-ca, issue-server, issue, list, revoke)\n");
      return 2;
    }
    verb = argv[2];
    first_flag = 3;
  }
  if (Status s = options.ParseArgs(argc, argv, first_flag); !s.ok()) return Fail(s);
  if (options.help_requested()) return Usage(options, stdout, 0);
  if (!options.positional().empty()) {
    return Fail(Status::InvalidArgument("unexpected argument '" + options.positional()[0] + "'"));
  }
  LogLevel level;
  if (!ParseLogLevel(options.Get("log-level"), &level)) {
    return Fail(Status::InvalidArgument("bad --log-level '" + options.Get("log-level") + "'"));
  }
  Logger logger("mapserver", level);
  try {
    if (command == "format") return Format(options);
    if (command == "serve") return Serve(options, logger);
    if (command == "fsck") return Fsck(options, logger);
    if (command == "credential") return CredentialCommand(verb, options);
  } catch (const StatusError& e) {
    return Fail(e.status());
  } catch (const kj::Exception& e) {
    return Fail(protocol::StatusFromException(e));
  }
  std::fprintf(stderr, "mapserver: unknown command '%s'\n", command.c_str());
  return Usage(options, stderr, 2);
}

}  // namespace
}  // namespace tapmap::mapserver

int main(int argc, char** argv) { return tapmap::mapserver::Main(argc, argv); }
