#include "tapdisk-map/xen/real_grant_access.h"

#include <sys/mman.h>

#include <cerrno>
#include <vector>

extern "C" {
#include <xengnttab.h>
#include <xen/grant_table.h>
}

namespace tapmap::xen {

namespace {

class RealGrantMapping : public GrantMapping {
 public:
  RealGrantMapping(xengnttab_handle* handle, void* addr, size_t pages)
      : handle_(handle), addr_(addr), pages_(pages) {}
  ~RealGrantMapping() override { xengnttab_unmap(handle_, addr_, static_cast<uint32_t>(pages_)); }
  uint8_t* data() const override { return static_cast<uint8_t*>(addr_); }
  size_t page_count() const override { return pages_; }

 private:
  xengnttab_handle* const handle_;
  void* const addr_;
  const size_t pages_;
};

}  // namespace

Result<std::unique_ptr<RealGrantAccess>> RealGrantAccess::Open(ToollogBridge& log) {
  xengnttab_handle* h = xengnttab_open(log.get(), 0);
  if (h == nullptr) {
    int err = errno;
    if (err == ENOENT) {
      return Status::Unavailable("no Xen hypervisor interface: /dev/xen/gntdev missing — run in dom0");
    }
    return Status::FromErrno("open /dev/xen/gntdev", err);
  }
  return std::unique_ptr<RealGrantAccess>(new RealGrantAccess(h));
}

RealGrantAccess::~RealGrantAccess() { xengnttab_close(handle_); }

Result<std::unique_ptr<GrantMapping>> RealGrantAccess::Map(DomainId domid,
                                                           std::span<const GrantRef> refs,
                                                           bool writable) {
  if (refs.empty()) return Status::InvalidArgument("grant map of zero references");
  std::vector<uint32_t> list(refs.begin(), refs.end());
  void* addr = xengnttab_map_domain_grant_refs(handle_, static_cast<uint32_t>(list.size()), domid,
                                               list.data(), writable ? PROT_READ | PROT_WRITE : PROT_READ);
  if (addr == nullptr) {
    int err = errno;
    return Status::PermissionDenied("grant map of " + std::to_string(list.size()) +
                                    " refs (first " + std::to_string(list[0]) + ") from domain " +
                                    std::to_string(domid) + " refused: " +
                                    Status::FromErrno("gntdev", err).message());
  }
  return std::unique_ptr<GrantMapping>(new RealGrantMapping(handle_, addr, list.size()));
}

Status RealGrantAccess::Copy(DomainId domid, std::span<const GrantCopySegment> segments, bool in) {
  if (segments.empty()) return Status::Ok();
  std::vector<xengnttab_grant_copy_segment_t> ops(segments.size());
  for (size_t i = 0; i < segments.size(); ++i) {
    const GrantCopySegment& s = segments[i];
    xengnttab_grant_copy_segment_t& op = ops[i];
    op = {};
    op.len = s.length;
    if (in) {
      op.source.foreign.ref = s.ref;
      op.source.foreign.offset = s.page_offset;
      op.source.foreign.domid = static_cast<uint16_t>(domid);
      op.dest.virt = s.local;
      op.flags = GNTCOPY_source_gref;
    } else {
      op.source.virt = s.local;
      op.dest.foreign.ref = s.ref;
      op.dest.foreign.offset = s.page_offset;
      op.dest.foreign.domid = static_cast<uint16_t>(domid);
      op.flags = GNTCOPY_dest_gref;
    }
  }
  if (xengnttab_grant_copy(handle_, static_cast<uint32_t>(ops.size()), ops.data()) != 0) {
    return Status::FromErrno("grant copy", errno);
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].status != GNTST_okay) {
      return Status::PermissionDenied("grant copy " + std::string(in ? "from" : "to") + " ref " +
                                      std::to_string(segments[i].ref) + " of domain " +
                                      std::to_string(domid) + " refused (status " +
                                      std::to_string(ops[i].status) + ")");
    }
  }
  return Status::Ok();
}

Status RealGrantAccess::CopyIn(DomainId domid, std::span<const GrantCopySegment> segments) {
  return Copy(domid, segments, /*in=*/true);
}

Status RealGrantAccess::CopyOut(DomainId domid, std::span<const GrantCopySegment> segments) {
  return Copy(domid, segments, /*in=*/false);
}

}  // namespace tapmap::xen
