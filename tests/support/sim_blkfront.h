// SimBlkfront: a simulated xen-blkfront for tests and benchmarks. It plays the guest
// side of the blkif protocol with the real ring ABI (xen/io/ring.h macros on the
// structs of xen/io/blkif.h and tapdisk-map/blkif/ring_abi.h): shared rings in the
// guest's memory of a SimulatedHypervisor, granted to the backend domain, event
// channels, direct and indirect requests, 1..2^order-page rings, several queues, in
// any of the three ABIs. It can also publish its transport parameters in xenstore
// and walk the frontend states like blkfront does, and submit arbitrary raw slots
// (for the malicious-frontend tests).
//
// Threading: one thread (the test's). The backend runs elsewhere.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "tapdisk-map/blkif/ring_abi.h"
#include "tapdisk-map/xen/sim_hypervisor.h"
#include "tapdisk-map/xen/xenstore.h"

namespace tapmap::testing {

struct SimBlkfrontOptions {
  blkif::Abi abi = blkif::Abi::kNative;  // kNative writes no `protocol` node
  uint32_t ring_page_order = 0;
  uint32_t queues = 1;
  bool persistent_grants = false;  // grants data pages once, rw, and reuses them
  uint32_t indirect_segments = 0;  // >0: requests above 11 segments go indirect
};

// One I/O as the test wants it done.
struct SimIo {
  uint8_t operation = BLKIF_OP_READ;  // READ, WRITE, FLUSH_DISKCACHE, WRITE_BARRIER, DISCARD
  uint64_t sector = 0;                // 512-byte units
  uint32_t sectors = 0;               // data length (or discard length) in sectors
  bool force_indirect = false;
};

struct SimCompletion {
  uint64_t id = 0;
  uint8_t operation = 0;
  int16_t status = 0;
};

class SimBlkfront {
 public:
  // The guest is domain `self` (created in `hv` beforehand, with enough pages:
  // rings + data); the backend is `backend`.
  SimBlkfront(std::shared_ptr<xen::SimulatedHypervisor> hv, xen::DomainId self, xen::DomainId backend,
              SimBlkfrontOptions options);
  ~SimBlkfront();

  // Allocates, initialises and grants the rings and allocates the event channels.
  Status SetupRings();
  // What a backend needs to attach queue `q` without xenstore.
  std::vector<xen::GrantRef> ring_refs(uint32_t q) const;
  xen::EventPort event_port(uint32_t q) const;
  uint32_t ring_size() const;  // slots per ring

  // Writes the transport parameters under `frontend_path` (ring-ref(s),
  // event-channel, queue-N/, ring-page-order, multi-queue-num-queues, protocol,
  // feature-persistent) and state=Initialised, in one transaction.
  Status Publish(xen::XenStore& xs, const std::string& frontend_path);

  // --- data I/O (synchronous helpers; 10 s deadline) ---
  // Reads/writes `data` (a multiple of 512 bytes) at `sector` through queue `q`;
  // returns the response status (BLKIF_RSP_*).
  Result<int16_t> Read(uint32_t q, uint64_t sector, std::span<uint8_t> data, bool force_indirect = false);
  Result<int16_t> Write(uint32_t q, uint64_t sector, std::span<const uint8_t> data, bool force_indirect = false);
  Result<int16_t> Simple(uint32_t q, uint8_t operation, uint64_t sector = 0, uint64_t nr_sectors = 0);

  // --- asynchronous ---
  // Queues a request (grants its pages; for writes fills them from `data`); returns
  // its id. kBusy if the ring is full. Publish with Kick().
  Result<uint64_t> Submit(uint32_t q, const SimIo& io, std::span<const uint8_t> data = {});
  // Pushes the queued requests and notifies the backend if the ring says so.
  Status Kick(uint32_t q);
  // Waits until at least one response arrived (or `timeout`), and returns those
  // that did. Data of completed reads is available through ReadData(id) until the
  // next Submit.
  Result<std::vector<SimCompletion>> Poll(uint32_t q, std::chrono::milliseconds timeout);
  // The data a completed read returned.
  std::span<const uint8_t> ReadData(uint64_t id) const;
  uint32_t in_flight(uint32_t q) const;

  // --- raw access (malicious frontends) ---
  // Writes `bytes` (at most one slot) as the next request slot, verbatim.
  Status SubmitRaw(uint32_t q, std::span<const uint8_t> bytes);
  // Moves the shared producer index by `delta` without writing slots, and notifies.
  Status ForceProducer(uint32_t q, uint32_t delta);
  // Notifies the backend of queue `q` with nothing new on the ring (an event storm).
  Status NotifyOnly(uint32_t q) { return ForceProducer(q, 0); }
  // Grants a page of guest memory (to the backend unless `to` given) for crafting
  // requests; returns the ref and the guest's view of the page.
  Result<std::pair<xen::GrantRef, uint8_t*>> GrantScratchPage(bool read_only, std::optional<xen::DomainId> to = {});
  xen::DomainId domid() const { return self_; }

  struct Queue;

 private:
  Result<size_t> AllocPage();
  void FreePage(size_t pfn);
  Result<int16_t> Wait(uint32_t q, uint64_t id);

  std::shared_ptr<xen::SimulatedHypervisor> hv_;
  const xen::DomainId self_;
  const xen::DomainId backend_;
  const SimBlkfrontOptions options_;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::vector<size_t> free_pages_;
  size_t next_page_ = 0;
  uint64_t next_id_ = 1;
};

}  // namespace tapmap::testing
