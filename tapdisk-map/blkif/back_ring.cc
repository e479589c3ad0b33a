#include "tapdisk-map/blkif/back_ring.h"

#include <atomic>

namespace tapmap::blkif {

namespace {

// T: a RingTypes<abi> of ring_abi.h.
template <typename T>
class BackRingImpl : public BackRing {
 public:
  BackRingImpl(void* sring, size_t pages) {
    auto* s = static_cast<typename T::SharedRing*>(sring);
    // The response index is ours; reading it once here is the only time we trust it
    // as a starting point (a later inconsistency shows as a broken ring).
    RING_IDX start = s->rsp_prod;
    BACK_RING_ATTACH(&ring_, s, start, pages * 4096);
  }

  Abi abi() const override { return T::kAbi; }
  uint32_t size() const override { return RING_SIZE(&ring_); }

  Result<uint32_t> Fetch(uint32_t max, std::vector<RingRequest>* out) override {
    RING_IDX prod = ring_.sring->req_prod;
    xen_rmb();  // see the requests up to `prod`
    if (RING_REQUEST_PROD_OVERFLOW(&ring_, prod)) {
      return Status::Corruption("ring broken: producer index " + std::to_string(prod) +
                                " is more than " + std::to_string(size()) +
                                " slots ahead of responses at " + std::to_string(ring_.rsp_prod_pvt));
    }
    uint32_t n = 0;
    while (n < max && ring_.req_cons != prod && !RING_REQUEST_CONS_OVERFLOW(&ring_, ring_.req_cons)) {
      typename T::Request copy;
      std::memcpy(&copy, RING_GET_REQUEST(&ring_, ring_.req_cons), sizeof(copy));
      // Everything below reads the private copy only.
      std::atomic_signal_fence(std::memory_order_seq_cst);
      ++ring_.req_cons;
      out->push_back(Decode(copy));
      ++n;
    }
    return n;
  }

  bool FinalCheckForRequests() override {
    int more = 0;
    RING_FINAL_CHECK_FOR_REQUESTS(&ring_, more);
    return more != 0;
  }

  void PutResponse(uint64_t id, uint8_t operation, int16_t status) override {
    typename T::Response rsp;
    std::memset(&rsp, 0, sizeof(rsp));  // no stale bytes in padding
    rsp.id = id;
    rsp.operation = operation;
    rsp.status = status;
    std::memcpy(RING_GET_RESPONSE(&ring_, ring_.rsp_prod_pvt), &rsp, sizeof(rsp));
    ++ring_.rsp_prod_pvt;
  }

  bool PushResponses() override {
    int notify = 0;
    RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&ring_, notify);
    return notify != 0;
  }

  Indices indices() const override {
    const volatile auto* s = ring_.sring;
    return Indices{s->req_prod, s->req_event, s->rsp_prod, s->rsp_event, ring_.req_cons, ring_.rsp_prod_pvt};
  }

 private:
  static RingRequest Decode(const typename T::Request& raw) {
    RingRequest r;
    r.operation = raw.operation;
    if (raw.operation == BLKIF_OP_INDIRECT) {
      typename T::Indirect ind;
      static_assert(sizeof(ind) <= sizeof(raw));
      std::memcpy(&ind, &raw, sizeof(ind));
      r.indirect_op = ind.indirect_op;
      r.nr_segments = ind.nr_segments;
      r.id = ind.id;
      r.sector_number = ind.sector_number;
      r.handle = ind.handle;
      std::memcpy(r.indirect_grefs.data(), ind.indirect_grefs, sizeof(ind.indirect_grefs));
    } else if (raw.operation == BLKIF_OP_DISCARD) {
      typename T::Discard d;
      static_assert(sizeof(d) <= sizeof(raw));
      std::memcpy(&d, &raw, sizeof(d));
      r.discard_flag = d.flag;
      r.handle = d.handle;
      r.id = d.id;
      r.sector_number = d.sector_number;
      r.nr_sectors = d.nr_sectors;
    } else {
      r.nr_segments = raw.nr_segments;
      r.handle = raw.handle;
      r.id = raw.id;
      r.sector_number = raw.sector_number;
      std::memcpy(r.segments.data(), raw.seg, sizeof(raw.seg));
    }
    return r;
  }

  typename T::BackPrivateRing ring_;
};

}  // namespace

std::unique_ptr<BackRing> BackRing::Attach(Abi abi, void* sring, size_t pages) {
  return WithRingTypes(abi, [&](auto types) -> std::unique_ptr<BackRing> {
    return std::make_unique<BackRingImpl<decltype(types)>>(sring, pages);
  });
}

}  // namespace tapmap::blkif
