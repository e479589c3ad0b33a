#include "rados/exclusive_lock.h"

#include <sys/time.h>

#include <cerrno>
#include <list>

#include "rados/rados_cluster.h"

namespace tapmap::rados {
namespace {

constexpr uint8_t kExclusiveLockType = 1;  // cls_lock ClsLockType::EXCLUSIVE

void EncodeU32(librados::bufferlist* bl, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
  bl->append(b, 4);
}
void EncodeString(librados::bufferlist* bl, const std::string& s) {
  EncodeU32(bl, static_cast<uint32_t>(s.size()));
  bl->append(s.data(), s.size());
}

}  // namespace

RadosExclusiveLock::RadosExclusiveLock(librados::IoCtx& ioctx, std::string oid, std::string name,
                                       std::string cookie, std::chrono::milliseconds duration)
    : ioctx_(ioctx), oid_(std::move(oid)), name_(std::move(name)), cookie_(std::move(cookie)), duration_(duration) {}

Status RadosExclusiveLock::Lock(uint8_t flags, const char* what) {
  timeval tv{};
  tv.tv_sec = duration_.count() / 1000;
  tv.tv_usec = (duration_.count() % 1000) * 1000;
  int r = ioctx_.lock_exclusive(oid_, name_, cookie_, "tapmap active mapserver", &tv, flags);
  if (r == -EBUSY || r == -EEXIST) return Status::Busy(std::string(what) + " lock " + name_ + " on " + oid_ + ": held by another client");
  if (r < 0) return RadosStatus(r, std::string(what) + " lock " + name_ + " on " + oid_);
  return Status::Ok();
}

Status RadosExclusiveLock::TryAcquire() { return Lock(0, "take"); }

Status RadosExclusiveLock::Renew() { return Lock(LIBRADOS_LOCK_FLAG_MUST_RENEW, "renew"); }

Status RadosExclusiveLock::Release() {
  int r = ioctx_.unlock(oid_, name_, cookie_);
  if (r < 0 && r != -ENOENT) return RadosStatus(r, "release lock " + name_ + " on " + oid_);
  return Status::Ok();
}

Result<std::optional<RadosExclusiveLock::Holder>> RadosExclusiveLock::CurrentHolder() {
  int exclusive = 0;
  std::string tag;
  std::list<librados::locker_t> lockers;
  int r = ioctx_.list_lockers(oid_, name_, &exclusive, &tag, &lockers);
  if (r == -ENOENT) return std::optional<Holder>();
  if (r < 0) return RadosStatus(r, "list lockers of " + oid_);
  if (lockers.empty()) return std::optional<Holder>();
  const auto& l = lockers.front();
  return std::optional<Holder>(Holder{l.client, l.cookie, l.address});
}

void RadosExclusiveLock::AssertHeld(librados::ObjectWriteOperation* op) const {
  // cls_lock_assert_op, as Ceph encodes it: ENCODE_START(1, 1) (u8 version, u8
  // compat, u32 length), then name, u8 type, cookie, tag (strings: u32 length, bytes).
  librados::bufferlist body;
  EncodeString(&body, name_);
  char type = static_cast<char>(kExclusiveLockType);
  body.append(&type, 1);
  EncodeString(&body, cookie_);
  EncodeString(&body, "");  // lock_exclusive takes the lock with an empty tag
  librados::bufferlist in;
  const char header[2] = {1, 1};
  in.append(header, 2);
  EncodeU32(&in, body.length());
  in.append(body);
  op->exec("lock", "assert_locked", in);
}

Status BlocklistClient(librados::Rados& rados, const std::string& address, uint32_t expire_seconds) {
  int r = rados.blocklist_add(address, expire_seconds);
  if (r < 0) return RadosStatus(r, "blocklist client " + address);
  r = rados.wait_for_latest_osdmap();
  if (r < 0) return RadosStatus(r, "wait for the osd map blocklisting " + address);
  return Status::Ok();
}

}  // namespace tapmap::rados
