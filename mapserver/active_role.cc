#include "mapserver/active_role.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>

#include "common/unique_fd.h"

namespace tapmap::mapserver {
namespace {

constexpr auto kFollowInterval = std::chrono::milliseconds(200);
constexpr auto kLockTryInterval = std::chrono::milliseconds(500);
constexpr uint32_t kBlocklistSeconds = 3600;

// A SIGTERM or SIGINT waiting (they are blocked in every thread of a server, which
// takes them from its event loop; before it has one, the waits below look).
bool StopSignalPending() {
  sigset_t pending;
  if (sigpending(&pending) != 0) return false;
  return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
}

// The lock VolumeStore::Open takes on the metadata directory (mapserver.lock): held
// while the directory is being rebuilt and followed, so that a standby pointed at a
// directory another mapserver process uses refuses instead of overwriting it.
Result<UniqueFd> LockMetaDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::FromErrno("create metadata directory " + dir, errno);
  }
  const std::string path = dir + "/mapserver.lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Status::FromErrno("open " + path, errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return Status::Busy("metadata " + dir + " is in use by another mapserver process");
    return Status::FromErrno("lock " + path, errno);
  }
  return fd;
}

std::string Cookie(rados::RadosCluster& cluster) {
  return "mapserver-" + std::to_string(cluster.rados().get_instance_id());
}

}  // namespace

RadosActiveRole::RadosActiveRole(std::unique_ptr<rados::RadosCluster> cluster, std::string prefix,
                                 ActiveRoleOptions options, Logger logger)
    : cluster_(std::move(cluster)),
      options_(std::move(options)),
      logger_(std::move(logger)),
      journal_(*cluster_, prefix, logger_),
      lock_(cluster_->ioctx(), journal_.journal_oid(), RadosMetadataJournal::kLockName, Cookie(*cluster_),
            options_.lock_duration) {}

RadosActiveRole::~RadosActiveRole() { StopRenewing(); }

Status RadosActiveRole::FollowUntilLocked() {
  if (Status s = journal_.Restore(options_.meta_dir); !s.ok()) return s;
  logger_.Infof("standby: following the metadata journal in RADOS from seq %llu",
                static_cast<unsigned long long>(journal_.next_seq()));
  auto opened = MetadataStore::Open(options_.meta_dir);
  if (!opened.ok()) return opened.status();
  std::unique_ptr<MetadataStore> follower = std::move(*opened);
  follower->SetSync(false);
  auto last_try = std::chrono::steady_clock::now() - kLockTryInterval;
  std::string seen_holder;
  for (;;) {
    if (StopSignalPending()) return Status::Aborted("standby: stopped by a signal before becoming active");
    // A standby rides out trouble (a checkpoint it missed, the cluster unreachable for
    // a while): it retries rather than exits.
    Status caught = follower ? journal_.CatchUp(*follower) : Status::Aborted("no local copy");
    if (caught.code() == StatusCode::kAborted) {
      logger_.Infof("standby: %s; restoring from the current checkpoint", caught.message().c_str());
      follower.reset();
      if (Status s = journal_.Restore(options_.meta_dir); !s.ok()) {
        logger_.Warnf("standby: restore: %s; retrying", s.ToString().c_str());
      } else if (auto reopened = MetadataStore::Open(options_.meta_dir); !reopened.ok()) {
        logger_.Warnf("standby: %s; retrying", reopened.status().ToString().c_str());
      } else {
        follower = std::move(*reopened);
        follower->SetSync(false);
      }
    } else if (!caught.ok()) {
      logger_.Warnf("standby: following the journal: %s", caught.ToString().c_str());
    }
    if (std::chrono::steady_clock::now() - last_try >= kLockTryInterval) {
      last_try = std::chrono::steady_clock::now();
      Status taken = lock_.TryAcquire();
      if (taken.ok()) break;
      if (taken.code() != StatusCode::kBusy) {
        logger_.Warnf("standby: trying the active lock: %s", taken.ToString().c_str());
      } else if (auto holder = lock_.CurrentHolder(); holder.ok() && *holder && (*holder)->client != seen_holder) {
        seen_holder = (*holder)->client;
        logger_.Infof("standby: the active is %s (%s)", (*holder)->client.c_str(), (*holder)->address.c_str());
      }
    }
    std::this_thread::sleep_for(kFollowInterval);
  }
  return Status::Ok();
}

Status RadosActiveRole::WaitForLock() {
  const auto deadline = std::chrono::steady_clock::now() + options_.lock_duration + std::chrono::seconds(2);
  for (;;) {
    Status taken = lock_.TryAcquire();
    if (taken.ok()) return taken;
    if (StopSignalPending()) return Status::Aborted("stopped by a signal while waiting for the active lock");
    if (taken.code() != StatusCode::kBusy || std::chrono::steady_clock::now() > deadline) {
      if (taken.code() == StatusCode::kBusy) {
        std::string who;
        if (auto holder = lock_.CurrentHolder(); holder.ok() && *holder) who = " (" + (*holder)->address + ")";
        return Status::Busy("another mapserver is active on this pool" + who +
                            "; start this one with --standby to take over when it stops");
      }
      return taken;
    }
    std::this_thread::sleep_for(kLockTryInterval);
  }
}

Status RadosActiveRole::BecomeActive() {
  auto exists = journal_.Exists();
  if (!exists.ok()) return exists.status();
  if (!*exists) {
    return Status::NotFound("no mapserver metadata in RADOS object " + journal_.journal_oid() +
                            " (run mapserver format --pool rados:...)");
  }
  // Released when this returns, just before the caller's VolumeStore::Open takes it.
  auto dir_lock = LockMetaDir(options_.meta_dir);
  if (!dir_lock.ok()) return dir_lock.status();
  Status locked = options_.standby ? FollowUntilLocked() : WaitForLock();
  if (!locked.ok()) return locked;
  const auto t0 = std::chrono::steady_clock::now();
  StartRenewing();
  // Fence the previous active before reading the journal's end: once it is
  // blocklisted, nothing more can be appended by it.
  auto me = lock_.CurrentHolder();
  if (!me.ok()) return me.status();
  if (!*me || (*me)->cookie != lock_.cookie()) return Status::Busy("lost the active lock right after taking it");
  auto previous = journal_.SwapHolder(lock_, (*me)->address);
  if (!previous.ok()) return previous.status();
  if (!previous->empty() && *previous != (*me)->address) {
    if (Status s = rados::BlocklistClient(cluster_->rados(), *previous, kBlocklistSeconds); !s.ok()) return s;
    logger_.Infof("fenced the previous active mapserver: blocklisted %s", previous->c_str());
  }
  if (options_.standby) {
    // The follower is closed: from its copy, catch up to the journal's end.
    Status caught = Status::Aborted("no local copy");
    if (auto follower = MetadataStore::Open(options_.meta_dir); follower.ok()) {
      (*follower)->SetSync(false);
      caught = journal_.CatchUp(**follower);
    }
    if (!caught.ok()) caught = journal_.Restore(options_.meta_dir);
    if (!caught.ok()) return caught;
  } else {
    if (Status s = journal_.Restore(options_.meta_dir); !s.ok()) return s;
  }
  logger_.Infof("active: holding the lock on %s as %s; metadata up to journal seq %llu (%.2f s after taking the lock)",
                lock_.oid().c_str(), (*me)->address.c_str(), static_cast<unsigned long long>(journal_.next_seq() - 1),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return Status::Ok();
}

void RadosActiveRole::Attach(MetadataStore& store) {
  journal_.Attach(&store, &lock_, options_.checkpoint_every);
  store.SetJournal(&journal_);
}

Status RadosActiveRole::Announce(const std::string& address) { return journal_.Announce(address); }

Status RadosActiveRole::Shutdown() {
  Status checkpoint = journal_.Checkpoint();
  StopRenewing();
  Status released = lock_.Release();
  return checkpoint.ok() ? released : checkpoint;
}

void RadosActiveRole::StartRenewing() {
  const auto interval = std::max(options_.lock_duration / 6, std::chrono::milliseconds(200));
  // The renewal thread must not take the process's signals (SIGTERM is the event
  // loop's): it starts with every signal blocked.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  renewer_ = std::thread([this, interval] {
    // Sent-time of the last renewal that succeeded: the lock holds until at least a
    // duration after it (by the OSD's clock, which runs at about the same rate).
    auto renewed_at = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, interval, [this] { return stop_renewing_; })) {
      lock.unlock();
      const auto sent = std::chrono::steady_clock::now();
      if (sent - renewed_at >= options_.lock_duration) {
        // This process did not run for a lock duration (frozen, or a renewal stuck):
        // the lock may be someone else's already; do not wait for the OSD to say so.
        logger_.Errorf("FATAL: no lock renewal for %.1f s, longer than the lock's %.1f s: stopping at once "
                       "(another mapserver may be active)",
                       std::chrono::duration<double>(sent - renewed_at).count(),
                       std::chrono::duration<double>(options_.lock_duration).count());
        std::_Exit(3);
      }
      Status renewed = lock_.Renew();
      if (!renewed.ok()) {
        logger_.Errorf("FATAL: lost the active lock: %s: stopping at once (another mapserver may be active)",
                       renewed.ToString().c_str());
        std::_Exit(3);
      }
      renewed_at = sent;
      lock.lock();
    }
  });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void RadosActiveRole::StopRenewing() {
  {
    std::lock_guard<std::mutex> guard(mu_);
    stop_renewing_ = true;
  }
  cv_.notify_all();
  if (renewer_.joinable()) renewer_.join();
}

}  // namespace tapmap::mapserver
