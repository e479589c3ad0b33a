// The simulated hypervisor refuses grants and ports the way Xen does.
#include <catch2/catch.hpp>

#include <cstring>

#include "tapdisk-map/xen/sim_platform.h"

namespace tapmap::xen {
namespace {

constexpr DomainId kBackend = 0;
constexpr DomainId kGuest = 5;
constexpr DomainId kOther = 6;

struct Fixture {
  std::shared_ptr<SimulatedHypervisor> hv = std::make_shared<SimulatedHypervisor>();
  XenPlatform platform;
  Fixture() {
    REQUIRE(hv->CreateDomain(kBackend, 0).ok());
    REQUIRE(hv->CreateDomain(kGuest, 16).ok());
    REQUIRE(hv->CreateDomain(kOther, 4).ok());
    platform = MakeSimulatedPlatform(hv, kBackend, nullptr);
  }
};

TEST_CASE_METHOD(Fixture, "a mapping shares the granted pages with the guest") {
  GrantRef a = *hv->GrantAccess(kGuest, kBackend, 3, false);
  GrantRef b = *hv->GrantAccess(kGuest, kBackend, 7, false);
  std::memcpy(*hv->GuestPage(kGuest, 3), "page3", 5);
  std::memcpy(*hv->GuestPage(kGuest, 7), "page7", 5);
  GrantRef refs[] = {a, b};
  auto m = platform.grants->Map(kGuest, refs, true);
  REQUIRE(m.ok());
  CHECK(std::memcmp((*m)->data(), "page3", 5) == 0);
  CHECK(std::memcmp((*m)->data() + 4096, "page7", 5) == 0);
  std::memcpy((*m)->data() + 4096, "back!", 5);
  CHECK(std::memcmp(*hv->GuestPage(kGuest, 7), "back!", 5) == 0);
  CHECK(hv->ActiveMappings(kGuest) == 2);
  CHECK(hv->EndAccess(kGuest, a).code() == StatusCode::kBusy);
  m->reset();
  CHECK(hv->ActiveMappings(kGuest) == 0);
  CHECK(hv->EndAccess(kGuest, a).ok());
}

TEST_CASE_METHOD(Fixture, "bad, foreign, revoked and read-only references are refused") {
  GrantRef mine = *hv->GrantAccess(kGuest, kBackend, 1, false);
  GrantRef ro = *hv->GrantAccess(kGuest, kBackend, 2, true);
  GrantRef foreign = *hv->GrantAccess(kGuest, kOther, 3, false);
  GrantRef revoked = *hv->GrantAccess(kGuest, kBackend, 4, false);
  REQUIRE(hv->EndAccess(kGuest, revoked).ok());

  auto refuse = [&](GrantRef r, bool write) {
    GrantRef refs[] = {mine, r};
    auto m = platform.grants->Map(kGuest, refs, write);
    CHECK_FALSE(m.ok());
    CHECK(m.status().code() == StatusCode::kPermissionDenied);
  };
  refuse(foreign, false);
  refuse(revoked, false);
  refuse(12345, false);
  refuse(0, false);
  refuse(ro, true);
  CHECK(hv->ActiveMappings(kGuest) == 0);  // nothing half-mapped
  GrantRef ro_only[] = {ro};
  CHECK(platform.grants->Map(kGuest, ro_only, false).ok());
  // Grants of the wrong domain id are not found either.
  GrantRef refs[] = {mine};
  CHECK_FALSE(platform.grants->Map(kOther, refs, false).ok());

  uint8_t buf[512] = {};
  GrantCopySegment seg{ro, 0, 512, buf};
  CHECK(platform.grants->CopyIn(kGuest, {&seg, 1}).ok());
  CHECK(platform.grants->CopyOut(kGuest, {&seg, 1}).code() == StatusCode::kPermissionDenied);
  GrantCopySegment bad{foreign, 0, 512, buf};
  CHECK_FALSE(platform.grants->CopyIn(kGuest, {&bad, 1}).ok());
  GrantCopySegment crossing{mine, 4000, 512, buf};
  CHECK_FALSE(platform.grants->CopyIn(kGuest, {&crossing, 1}).ok());
}

TEST_CASE_METHOD(Fixture, "grant copy moves bytes both ways") {
  GrantRef r = *hv->GrantAccess(kGuest, kBackend, 9, false);
  uint8_t out[100];
  std::memset(out, 0xab, sizeof out);
  GrantCopySegment seg{r, 200, 100, out};
  REQUIRE(platform.grants->CopyOut(kGuest, {&seg, 1}).ok());
  CHECK((*hv->GuestPage(kGuest, 9))[200] == 0xab);
  CHECK((*hv->GuestPage(kGuest, 9))[199] == 0);
  uint8_t in[100] = {};
  GrantCopySegment back{r, 200, 100, in};
  REQUIRE(platform.grants->CopyIn(kGuest, {&back, 1}).ok());
  CHECK(std::memcmp(in, out, 100) == 0);
}

TEST_CASE_METHOD(Fixture, "event channels: only the offered domain binds and notifications cross") {
  auto guest_end = hv->AllocUnbound(kGuest, kBackend);
  REQUIRE(guest_end.ok());
  EventPort port = (*guest_end)->local_port();
  CHECK_FALSE(hv->BindInterdomain(kOther, kGuest, port).ok());
  CHECK_FALSE(platform.event_channels->BindInterdomain(kGuest, port + 100).ok());
  auto back_end = platform.event_channels->BindInterdomain(kGuest, port);
  REQUIRE(back_end.ok());
  CHECK(*(*back_end)->ConsumePending() == false);
  REQUIRE((*guest_end)->Notify().ok());
  CHECK(*(*back_end)->ConsumePending() == true);
  CHECK(*(*back_end)->ConsumePending() == false);
  REQUIRE((*back_end)->Notify().ok());
  CHECK(*(*guest_end)->ConsumePending() == true);
  // A second bind of the same port is refused.
  CHECK_FALSE(platform.event_channels->BindInterdomain(kGuest, port).ok());
}

TEST_CASE_METHOD(Fixture, "a destroyed domain's grants are gone, existing mappings stay valid") {
  GrantRef r = *hv->GrantAccess(kGuest, kBackend, 0, false);
  GrantRef refs[] = {r};
  auto m = platform.grants->Map(kGuest, refs, true);
  REQUIRE(m.ok());
  CHECK(*platform.domains->IsAlive(kGuest));
  hv->DestroyDomain(kGuest);
  CHECK_FALSE(*platform.domains->IsAlive(kGuest));
  (*m)->data()[0] = 1;  // still mapped memory
  CHECK_FALSE(platform.grants->Map(kGuest, refs, true).ok());
}

}  // namespace
}  // namespace tapmap::xen
