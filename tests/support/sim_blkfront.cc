#include "tests/support/sim_blkfront.h"

#include <poll.h>

#include <cstring>
#include <map>

#include "common/units.h"

namespace tapmap::testing {

using blkif::Abi;

namespace {

// A request in ABI-independent form, to be laid out in a slot.
struct Encoded {
  uint8_t operation = 0;
  uint8_t indirect_op = 0;
  uint16_t nr_segments = 0;
  uint64_t id = 0;
  uint64_t sector = 0;
  uint64_t nr_sectors = 0;
  std::vector<blkif_request_segment> segments;  // direct (<= 11)
  std::vector<grant_ref_t> indirect_grefs;
};

class FrontRingOps {
 public:
  virtual ~FrontRingOps() = default;
  virtual uint32_t size() const = 0;
  virtual uint32_t free_slots() const = 0;
  virtual size_t slot_size() const = 0;
  virtual void Put(const Encoded& e) = 0;
  virtual void PutRaw(std::span<const uint8_t> bytes) = 0;
  virtual bool Push() = 0;  // true: notify the backend
  virtual void ForceProducer(uint32_t delta) = 0;
  virtual bool NextResponse(SimCompletion* out) = 0;
  virtual bool FinalCheck() = 0;
  virtual bool HasUnconsumedResponses() = 0;
};

// T: a blkif::RingTypes<abi> (ring_abi.h).
template <typename T>
class FrontRing : public FrontRingOps {
 public:
  FrontRing(void* sring, size_t pages) {
    auto* s = static_cast<typename T::SharedRing*>(sring);
    SHARED_RING_INIT(s);
    FRONT_RING_INIT(&ring_, s, pages * 4096);
  }
  uint32_t size() const override { return RING_SIZE(&ring_); }
  uint32_t free_slots() const override { return RING_FREE_REQUESTS(&ring_); }
  size_t slot_size() const override { return sizeof(typename T::Request); }

  void Put(const Encoded& e) override {
    typename T::Request slot;
    std::memset(&slot, 0, sizeof(slot));
    if (e.operation == BLKIF_OP_INDIRECT) {
      typename T::Indirect ind;
      std::memset(&ind, 0, sizeof(ind));
      ind.operation = e.operation;
      ind.indirect_op = e.indirect_op;
      ind.nr_segments = e.nr_segments;
      ind.id = e.id;
      ind.sector_number = e.sector;
      for (size_t i = 0; i < e.indirect_grefs.size(); ++i) ind.indirect_grefs[i] = e.indirect_grefs[i];
      std::memcpy(&slot, &ind, sizeof(ind));
    } else if (e.operation == BLKIF_OP_DISCARD) {
      typename T::Discard d;
      std::memset(&d, 0, sizeof(d));
      d.operation = e.operation;
      d.id = e.id;
      d.sector_number = e.sector;
      d.nr_sectors = e.nr_sectors;
      std::memcpy(&slot, &d, sizeof(d));
    } else {
      slot.operation = e.operation;
      slot.nr_segments = static_cast<uint8_t>(e.nr_segments);
      slot.id = e.id;
      slot.sector_number = e.sector;
      for (size_t i = 0; i < e.segments.size() && i < BLKIF_MAX_SEGMENTS_PER_REQUEST; ++i) slot.seg[i] = e.segments[i];
    }
    std::memcpy(RING_GET_REQUEST(&ring_, ring_.req_prod_pvt), &slot, sizeof(slot));
    ++ring_.req_prod_pvt;
  }

  void PutRaw(std::span<const uint8_t> bytes) override {
    typename T::Request slot;
    std::memset(&slot, 0, sizeof(slot));
    std::memcpy(&slot, bytes.data(), std::min(bytes.size(), sizeof(slot)));
    std::memcpy(RING_GET_REQUEST(&ring_, ring_.req_prod_pvt), &slot, sizeof(slot));
    ++ring_.req_prod_pvt;
  }

  bool Push() override {
    int notify = 0;
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&ring_, notify);
    return notify != 0;
  }

  void ForceProducer(uint32_t delta) override {
    ring_.req_prod_pvt += delta;
    xen_wmb();
    ring_.sring->req_prod = ring_.req_prod_pvt;
  }

  bool NextResponse(SimCompletion* out) override {
    RING_IDX prod = ring_.sring->rsp_prod;
    xen_rmb();
    if (ring_.rsp_cons == prod) return false;
    typename T::Response rsp;
    std::memcpy(&rsp, RING_GET_RESPONSE(&ring_, ring_.rsp_cons), sizeof(rsp));
    ++ring_.rsp_cons;
    out->id = rsp.id;
    out->operation = rsp.operation;
    out->status = rsp.status;
    return true;
  }

  bool FinalCheck() override {
    int more = 0;
    RING_FINAL_CHECK_FOR_RESPONSES(&ring_, more);
    return more != 0;
  }

  bool HasUnconsumedResponses() override {
    xen_mb();
    return RING_HAS_UNCONSUMED_RESPONSES(&ring_) != 0;
  }

 private:
  typename T::FrontPrivateRing ring_;
};

struct Pending {
  SimIo io;
  std::vector<size_t> pfns;
  std::vector<xen::GrantRef> grefs;
  std::vector<size_t> indirect_pfns;
  std::vector<xen::GrantRef> indirect_refs;
  size_t bytes = 0;
};

}  // namespace

struct SimBlkfront::Queue {
  std::vector<size_t> ring_pfns;
  std::vector<xen::GrantRef> ring_refs;
  std::unique_ptr<xen::EventChannel> channel;
  std::unique_ptr<FrontRingOps> ring;
  std::map<uint64_t, Pending> pending;
  std::map<uint64_t, std::vector<uint8_t>> read_data;
  std::vector<std::pair<size_t, xen::GrantRef>> persistent_pool;  // free persistently granted pages
};

SimBlkfront::SimBlkfront(std::shared_ptr<xen::SimulatedHypervisor> hv, xen::DomainId self, xen::DomainId backend,
                         SimBlkfrontOptions options)
    : hv_(std::move(hv)), self_(self), backend_(backend), options_(options) {}

SimBlkfront::~SimBlkfront() = default;

Result<size_t> SimBlkfront::AllocPage() {
  if (!free_pages_.empty()) {
    size_t p = free_pages_.back();
    free_pages_.pop_back();
    return p;
  }
  auto page = hv_->GuestPage(self_, next_page_);
  if (!page.ok()) return Status::NoSpace("simulated guest out of memory pages");
  return next_page_++;
}

void SimBlkfront::FreePage(size_t pfn) { free_pages_.push_back(pfn); }

Status SimBlkfront::SetupRings() {
  uint32_t pages = 1u << options_.ring_page_order;
  for (uint32_t q = 0; q < options_.queues; ++q) {
    auto queue = std::make_unique<Queue>();
    // A multi-page ring must be contiguous in the guest's view: take fresh pages.
    size_t first = next_page_;
    for (uint32_t i = 0; i < pages; ++i) {
      auto pfn = hv_->GuestPage(self_, next_page_);
      if (!pfn.ok()) return pfn.status();
      std::memset(*pfn, 0, kPageSize);
      queue->ring_pfns.push_back(next_page_++);
      auto ref = hv_->GrantAccess(self_, backend_, queue->ring_pfns.back(), false);
      if (!ref.ok()) return ref.status();
      queue->ring_refs.push_back(*ref);
    }
    uint8_t* base = *hv_->GuestPage(self_, first);
    queue->ring = blkif::WithRingTypes(options_.abi, [&](auto types) -> std::unique_ptr<FrontRingOps> {
      return std::make_unique<FrontRing<decltype(types)>>(base, pages);
    });
    auto ch = hv_->AllocUnbound(self_, backend_);
    if (!ch.ok()) return ch.status();
    queue->channel = std::move(*ch);
    queues_.push_back(std::move(queue));
  }
  return Status::Ok();
}

std::vector<xen::GrantRef> SimBlkfront::ring_refs(uint32_t q) const { return queues_.at(q)->ring_refs; }
xen::EventPort SimBlkfront::event_port(uint32_t q) const { return queues_.at(q)->channel->local_port(); }
uint32_t SimBlkfront::ring_size() const { return queues_.at(0)->ring->size(); }
uint32_t SimBlkfront::in_flight(uint32_t q) const { return static_cast<uint32_t>(queues_.at(q)->pending.size()); }

Status SimBlkfront::Publish(xen::XenStore& xs, const std::string& fe) {
  return xen::RunTransaction(xs, [&](xen::TransactionId tx) -> Status {
    auto put = [&](const std::string& path, const std::string& value) { return xs.Write(tx, path, value); };
    // Transport nodes of an earlier connection must not linger.
    for (const char* stale : {"ring-ref", "ring-page-order", "multi-queue-num-queues", "protocol", "event-channel"}) {
      TAPMAP_RETURN_IF_ERROR(xs.Remove(tx, fe + "/" + stale));
    }
    auto children = xs.Directory(tx, fe);
    if (children.ok()) {
      for (const std::string& c : *children) {
        if (c.rfind("queue-", 0) == 0 || c.rfind("ring-ref", 0) == 0) TAPMAP_RETURN_IF_ERROR(xs.Remove(tx, fe + "/" + c));
      }
    }
    for (uint32_t q = 0; q < queues_.size(); ++q) {
      std::string base = queues_.size() == 1 ? fe : fe + "/queue-" + std::to_string(q);
      const Queue& queue = *queues_[q];
      if (options_.ring_page_order == 0) {
        TAPMAP_RETURN_IF_ERROR(put(base + "/ring-ref", std::to_string(queue.ring_refs[0])));
      } else {
        for (size_t i = 0; i < queue.ring_refs.size(); ++i) {
          TAPMAP_RETURN_IF_ERROR(put(base + "/ring-ref" + std::to_string(i), std::to_string(queue.ring_refs[i])));
        }
      }
      TAPMAP_RETURN_IF_ERROR(put(base + "/event-channel", std::to_string(queue.channel->local_port())));
    }
    if (options_.ring_page_order > 0) {
      TAPMAP_RETURN_IF_ERROR(put(fe + "/ring-page-order", std::to_string(options_.ring_page_order)));
    }
    if (queues_.size() > 1) {
      TAPMAP_RETURN_IF_ERROR(put(fe + "/multi-queue-num-queues", std::to_string(queues_.size())));
    }
    if (options_.abi != Abi::kNative) {
      TAPMAP_RETURN_IF_ERROR(put(fe + "/protocol", blkif::AbiName(options_.abi)));
    }
    TAPMAP_RETURN_IF_ERROR(put(fe + "/feature-persistent", options_.persistent_grants ? "1" : "0"));
    return put(fe + "/state", std::to_string(XenbusStateInitialised));
  });
}

Result<uint64_t> SimBlkfront::Submit(uint32_t q, const SimIo& io, std::span<const uint8_t> data) {
  Queue& queue = *queues_.at(q);
  if (queue.ring->free_slots() == 0) return Status::Busy("ring full");
  Pending p;
  p.io = io;
  Encoded e;
  e.id = next_id_++;
  e.operation = io.operation;
  e.sector = io.sector;
  bool is_write = io.operation != BLKIF_OP_READ;
  if (io.operation == BLKIF_OP_DISCARD) {
    e.nr_sectors = io.sectors;
  } else {
    p.bytes = size_t{io.sectors} * kSectorSize;
    size_t npages = (p.bytes + kPageSize - 1) / kPageSize;
    std::vector<blkif_request_segment> segs;
    for (size_t i = 0; i < npages; ++i) {
      size_t pfn;
      xen::GrantRef ref;
      if (options_.persistent_grants && !queue.persistent_pool.empty()) {
        std::tie(pfn, ref) = queue.persistent_pool.back();
        queue.persistent_pool.pop_back();
      } else {
        auto page = AllocPage();
        if (!page.ok()) return page.status();
        pfn = *page;
        // Like blkfront: data the backend only reads is granted read-only, unless
        // the grant is persistent (then always read-write).
        auto g = hv_->GrantAccess(self_, backend_, pfn, is_write && !options_.persistent_grants);
        if (!g.ok()) return g.status();
        ref = *g;
      }
      uint8_t* mem = *hv_->GuestPage(self_, pfn);
      size_t chunk = std::min<size_t>(kPageSize, p.bytes - i * kPageSize);
      if (is_write && !data.empty()) std::memcpy(mem, data.data() + i * kPageSize, chunk);
      p.pfns.push_back(pfn);
      p.grefs.push_back(ref);
      segs.push_back(blkif_request_segment{ref, 0, static_cast<uint8_t>(chunk / kSectorSize - 1)});
    }
    bool indirect = io.force_indirect || segs.size() > BLKIF_MAX_SEGMENTS_PER_REQUEST;
    if (indirect) {
      if (options_.indirect_segments == 0 && !io.force_indirect) {
        return Status::InvalidArgument("request too large without indirect segments");
      }
      size_t ipages = (segs.size() + blkif::kSegmentsPerIndirectPage - 1) / blkif::kSegmentsPerIndirectPage;
      for (size_t i = 0; i < ipages; ++i) {
        auto page = AllocPage();
        if (!page.ok()) return page.status();
        uint8_t* mem = *hv_->GuestPage(self_, *page);
        size_t first = i * blkif::kSegmentsPerIndirectPage;
        size_t n = std::min<size_t>(blkif::kSegmentsPerIndirectPage, segs.size() - first);
        std::memset(mem, 0, kPageSize);
        std::memcpy(mem, segs.data() + first, n * sizeof(blkif_request_segment));
        auto g = hv_->GrantAccess(self_, backend_, *page, true);
        if (!g.ok()) return g.status();
        p.indirect_pfns.push_back(*page);
        p.indirect_refs.push_back(*g);
      }
      e.operation = BLKIF_OP_INDIRECT;
      e.indirect_op = io.operation;
      e.nr_segments = static_cast<uint16_t>(segs.size());
      e.indirect_grefs = p.indirect_refs;
    } else {
      e.nr_segments = static_cast<uint16_t>(segs.size());
      e.segments = segs;
    }
  }
  queue.ring->Put(e);
  queue.pending.emplace(e.id, std::move(p));
  return e.id;
}

Status SimBlkfront::Kick(uint32_t q) {
  Queue& queue = *queues_.at(q);
  if (queue.ring->Push()) return queue.channel->Notify();
  return Status::Ok();
}

Result<std::vector<SimCompletion>> SimBlkfront::Poll(uint32_t q, std::chrono::milliseconds timeout) {
  Queue& queue = *queues_.at(q);
  std::vector<SimCompletion> done;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    SimCompletion c;
    while (queue.ring->NextResponse(&c)) done.push_back(c);
    if (!done.empty()) break;
    // FinalCheck armed rsp_event: from here on the backend must notify us of the
    // next response (RING_PUSH_RESPONSES_AND_CHECK_NOTIFY), as a real guest relies on.
    if (queue.ring->FinalCheck()) continue;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd pfd{queue.channel->fd(), POLLIN, 0};
    bool notified = poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 100))) > 0;
    auto pending = queue.channel->ConsumePending();
    notified = notified || (pending.ok() && *pending);
    if (!notified && queue.ring->HasUnconsumedResponses()) {
      // Published without an event so far; the backend notifies right after
      // publishing, so give the event ample time before calling it lost.
      pfd.revents = 0;
      notified = poll(&pfd, 1, 5000) > 0;
      pending = queue.channel->ConsumePending();
      notified = notified || (pending.ok() && *pending);
      if (!notified) {
        return Status::Corruption("backend published responses without notifying the frontend "
                                  "(a real guest would wait forever)");
      }
    }
  }
  for (const SimCompletion& c : done) {
    auto it = queue.pending.find(c.id);
    if (it == queue.pending.end()) continue;  // unknown id (raw request): nothing to free
    Pending& p = it->second;
    // As Linux blkfront checks since XSA-376 (it disables the device otherwise): the
    // response carries the request's operation — for an indirect request, its
    // indirect_op.
    if (c.operation != p.io.operation) {
      return Status::Corruption("response to request " + std::to_string(c.id) + " has operation " +
                                std::to_string(c.operation) + " instead of " + std::to_string(p.io.operation) +
                                " (Linux blkfront would disable the device)");
    }
    if (p.io.operation == BLKIF_OP_READ) {
      std::vector<uint8_t> data(p.bytes);
      for (size_t i = 0; i < p.pfns.size(); ++i) {
        size_t chunk = std::min<size_t>(kPageSize, p.bytes - i * kPageSize);
        std::memcpy(data.data() + i * kPageSize, *hv_->GuestPage(self_, p.pfns[i]), chunk);
      }
      queue.read_data[c.id] = std::move(data);
    }
    for (size_t i = 0; i < p.pfns.size(); ++i) {
      if (options_.persistent_grants) {
        queue.persistent_pool.emplace_back(p.pfns[i], p.grefs[i]);
      } else if (hv_->EndAccess(self_, p.grefs[i]).ok()) {
        FreePage(p.pfns[i]);
      }
    }
    for (size_t i = 0; i < p.indirect_pfns.size(); ++i) {
      if (hv_->EndAccess(self_, p.indirect_refs[i]).ok()) FreePage(p.indirect_pfns[i]);
    }
    queue.pending.erase(it);
  }
  return done;
}

std::span<const uint8_t> SimBlkfront::ReadData(uint64_t id) const {
  for (const auto& q : queues_) {
    auto it = q->read_data.find(id);
    if (it != q->read_data.end()) return it->second;
  }
  return {};
}

Result<int16_t> SimBlkfront::Wait(uint32_t q, uint64_t id) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  TAPMAP_RETURN_IF_ERROR(Kick(q));
  while (std::chrono::steady_clock::now() < deadline) {
    auto done = Poll(q, std::chrono::milliseconds(200));
    if (!done.ok()) return done.status();
    for (const SimCompletion& c : *done) {
      if (c.id == id) return c.status;
    }
  }
  return Status::Unavailable("no response to request " + std::to_string(id) + " within 10 s");
}

Result<int16_t> SimBlkfront::Read(uint32_t q, uint64_t sector, std::span<uint8_t> data, bool force_indirect) {
  SimIo io{BLKIF_OP_READ, sector, static_cast<uint32_t>(data.size() / kSectorSize), force_indirect};
  auto id = Submit(q, io);
  if (!id.ok()) return id.status();
  auto st = Wait(q, *id);
  if (st.ok() && *st == BLKIF_RSP_OKAY) {
    auto got = ReadData(*id);
    std::memcpy(data.data(), got.data(), std::min(got.size(), data.size()));
  }
  queues_.at(q)->read_data.erase(*id);
  return st;
}

Result<int16_t> SimBlkfront::Write(uint32_t q, uint64_t sector, std::span<const uint8_t> data, bool force_indirect) {
  SimIo io{BLKIF_OP_WRITE, sector, static_cast<uint32_t>(data.size() / kSectorSize), force_indirect};
  auto id = Submit(q, io, data);
  if (!id.ok()) return id.status();
  return Wait(q, *id);
}

Result<int16_t> SimBlkfront::Simple(uint32_t q, uint8_t operation, uint64_t sector, uint64_t nr_sectors) {
  SimIo io{operation, sector, static_cast<uint32_t>(nr_sectors), false};
  if (operation != BLKIF_OP_DISCARD) io.sectors = 0;
  auto id = Submit(q, io);
  if (!id.ok()) return id.status();
  return Wait(q, *id);
}

Status SimBlkfront::SubmitRaw(uint32_t q, std::span<const uint8_t> bytes) {
  Queue& queue = *queues_.at(q);
  queue.ring->PutRaw(bytes);
  return Kick(q);
}

Status SimBlkfront::ForceProducer(uint32_t q, uint32_t delta) {
  Queue& queue = *queues_.at(q);
  queue.ring->ForceProducer(delta);
  return queue.channel->Notify();
}

Result<std::pair<xen::GrantRef, uint8_t*>> SimBlkfront::GrantScratchPage(bool read_only, std::optional<xen::DomainId> to) {
  auto page = AllocPage();
  if (!page.ok()) return page.status();
  auto ref = hv_->GrantAccess(self_, to.value_or(backend_), *page, read_only);
  if (!ref.ok()) return ref.status();
  return std::make_pair(*ref, *hv_->GuestPage(self_, *page));
}

}  // namespace tapmap::testing
