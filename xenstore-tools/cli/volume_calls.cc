#include "xenstore-tools/cli/volume_calls.h"

#include <chrono>
#include <thread>

#include "xenstore-tools/cli/server_session.h"
#include "xenstore-tools/cli/volume_command.h"

namespace tapmap::cli {

Result<Json> CreateVolume(Invocation& inv, const std::string& name, uint64_t size_bytes) {
  auto s = ServerSession::Open(inv);
  if (!s.ok()) return s.status();
  auto req = (*s)->session().createRequest();
  req.setName(name);
  req.setSizeBytes(size_bytes);
  auto r = (*s)->Wait(req.send());
  if (!r.ok()) return r.status().WithContext("create " + name);
  return VolumeJson(r->getInfo());
}

Result<Json> GetVolume(Invocation& inv, const std::string& name) {
  auto s = ServerSession::Open(inv);
  if (!s.ok()) return s.status();
  auto req = (*s)->session().infoRequest();
  req.setName(name);
  auto r = (*s)->Wait(req.send());
  if (!r.ok()) return r.status().WithContext("info " + name);
  return VolumeJson(r->getInfo());
}

Result<Json> ResizeVolume(Invocation& inv, const std::string& name, uint64_t size_bytes,
                          bool allow_shrink) {
  auto s = ServerSession::Open(inv);
  if (!s.ok()) return s.status();
  auto req = (*s)->session().resizeRequest();
  req.setName(name);
  req.setSizeBytes(size_bytes);
  req.setAllowShrink(allow_shrink);
  auto r = (*s)->Wait(req.send());
  if (!r.ok()) return r.status().WithContext("resize " + name);
  return VolumeJson(r->getInfo());
}

Status DeleteVolumeWhenClosed(Invocation& inv, const std::string& name) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(inv.timeout_ms());
  auto s = ServerSession::Open(inv);
  if (!s.ok()) return s.status();
  for (;;) {
    auto req = (*s)->session().deleteRequest();
    req.setName(name);
    auto r = (*s)->Wait(req.send());
    if (r.ok()) return Status::Ok();
    if (r.status().code() != StatusCode::kBusy || std::chrono::steady_clock::now() >= deadline) {
      return r.status().WithContext("delete " + name);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

Result<std::vector<IncrementalExtent>> DiffVolumes(Invocation& inv, const std::string& from,
                                                   const std::string& to) {
  auto s = ServerSession::Open(inv);
  if (!s.ok()) return s.status();
  std::vector<IncrementalExtent> extents;
  uint64_t start = 0;
  do {
    auto req = (*s)->session().diffRequest();
    req.setFrom(from);
    req.setTo(to);
    req.setStartOffset(start);
    req.setMaxExtents(65536);
    auto r = (*s)->Wait(req.send());
    if (!r.ok()) return r.status().WithContext("diff " + from + " " + to);
    for (auto e : r->getExtents()) extents.push_back({e.getOffset(), e.getLength(), e.getZero()});
    start = r->getNextOffset();
  } while (start != 0);
  return extents;
}

}  // namespace tapmap::cli
