// kernel_shim: the held queue's order. take_held() gives a processor the
// longest-held activation, unless one of the next few was last pinned to
// the processor's CPU (no migration); the longest-held is passed over at
// most twice, so none waits for ever.

#include <catch2/catch.hpp>

#include <sa/shim/shim.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "null_upcalls.hpp"
#include "shim_test_access.hpp"
#include "test_support.hpp"

namespace {

// A kernel thread pinned to `cpu` that waits for the test to end: an
// activation whose pinned_cpu() is `cpu`, never started by the shim.
std::unique_ptr<sa::shim::Activation> pinned_to(int id, int cpu, std::atomic<bool>& release) {
  std::atomic<bool> pinned{false};
  auto a = std::make_unique<sa::shim::Activation>(id, [cpu, &pinned, &release](sa::shim::Activation& self) {
    self.pin(cpu);
    pinned = true;
    pinned.notify_one();
    release.wait(false);
  });
  pinned.wait(false);
  return a;
}

}  // namespace

TEST_CASE("take_held prefers an activation pinned to the processor's CPU, and passes the longest-held over at most twice") {
  sa_test::Watchdog wd{std::chrono::seconds(20), "held queue order"};
  auto topo = sa::shim::Topology::discover();
  if (topo.cpus().size() < 2) {
    WARN("one CPU: nothing to prefer");
    return;
  }
  sa_test::NullUpcalls quiet;
  // Not started: no activations of its own, no monitor; processors 0 and 1
  // are laid on the first two CPUs.
  sa::shim::Shim shim({.processors = 2, .pin = true, .cpus = topo.cpus()}, quiet);
  const int c0 = shim.cpu_of(0), c1 = shim.cpu_of(1);
  REQUIRE(c0 != c1);
  std::atomic<bool> release{false};
  std::vector<std::unique_ptr<sa::shim::Activation>> h;
  // Held in this order: h0 on c1, h1 on c0, h2 on c1, h3 on c0, h4 on c0.
  const int pins[] = {c1, c0, c1, c0, c0};
  for (int i = 0; i < 5; ++i) {
    h.push_back(pinned_to(100 + i, pins[i], release));
    sa::shim::ShimTestAccess::push_held(shim, *h.back());
  }
  CHECK(shim.has_held());
  CHECK(shim.take_held(0) == h[1].get());  // h0 (c1) passed over once for h1 (c0)
  CHECK(shim.take_held(0) == h[3].get());  // ... twice, for h3 beyond h2 (c1)
  CHECK(shim.take_held(0) == h[0].get());  // twice is the limit: h0 now, though h4 is on c0
  CHECK(shim.take_held(0) == h[4].get());  // h2 (c1) passed over for h4
  CHECK(shim.take_held(1) == h[2].get());
  CHECK_FALSE(shim.has_held());
  CHECK(shim.take_held(0) == nullptr);
  release = true;
  release.notify_all();
  for (auto& a : h) a->join();
}
