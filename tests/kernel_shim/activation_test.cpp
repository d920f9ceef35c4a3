// kernel_shim: activations start pinned (timer slack 1 µs), run processor_added, park idle
// processors on a futex and wake them; the shim's stats count them.

#include <catch2/catch.hpp>

#include <sa/shim/shim.hpp>
#include <sched.h>
#include <sys/prctl.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "null_upcalls.hpp"
#include "test_support.hpp"

namespace {

struct Recorder final : sa::shim::UpcallHandler {
  std::atomic<int> added{0};
  std::atomic<int> mismatch{0};
  std::atomic<uint32_t> word{1};
  std::atomic<bool> woke{false};
  sa::shim::Shim* shim = nullptr;
  void processor_added(int vp) noexcept override {
    ++added;
    auto* a = sa::shim::Activation::current();
    if (!a || a->vproc.load() != vp || a->state() != sa::shim::ActivationState::Running) ++mismatch;
    if (shim->cpu_of(vp) >= 0 && sched_getcpu() != shim->cpu_of(vp)) ++mismatch;
    // Timers end in this thread's waits: it must not add the default slack.
    if (::prctl(PR_GET_TIMERSLACK) != static_cast<int>(sa::shim::Activation::kTimerSlackNs)) ++mismatch;
    if (vp == 0) {
      // Park until the test changes the word and wakes us.
      while (word.load() == 1) shim->this_processor_is_idle(0, word, 1, sa::shim::Clock::time_point::max());
      woke = true;
    }
  }
  void activation_blocked(int, sa::shim::Activation&) noexcept override { ++mismatch; }
  void activation_unblocked(sa::shim::Activation&) noexcept override { ++mismatch; }
  void held_queued() noexcept override { ++mismatch; }
  void activation_held(sa::shim::Activation&) noexcept override { ++mismatch; }
  void processor_taken(int, sa::shim::Activation&) noexcept override { ++mismatch; }
  void processor_preempted(int, sa::shim::Activation&) noexcept override { ++mismatch; }
};

}  // namespace

TEST_CASE("activations run processor_added on their pinned CPU and park when idle") {
  sa_test::Watchdog wd{std::chrono::seconds(20), "shim idle/wake"};
  auto topo = sa::shim::Topology::discover();
  Recorder rec;
  sa::shim::Shim shim({.processors = 2, .pin = true, .cpus = topo.cpus()}, rec);
  rec.shim = &shim;
  shim.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(rec.added == 2);
  CHECK_FALSE(rec.woke);
  rec.word = 0;
  shim.wake_processor(0, rec.word);
  while (!rec.woke) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto s = shim.stats();
  CHECK(s.processor_added == 2);
  CHECK(s.activations_started == 2);  // plain mode: no spares
  CHECK_FALSE(s.activations);
  shim.stop();
  CHECK(rec.mismatch == 0);
}

TEST_CASE("this_processor_is_idle returns at its deadline") {
  sa_test::Watchdog wd{std::chrono::seconds(20), "shim idle deadline"};
  auto topo = sa::shim::Topology::discover();
  struct TimeoutHandler final : sa_test::NullUpcalls {
    sa::shim::Shim* shim = nullptr;
    std::atomic<uint32_t> word{1};
    std::atomic<int> result{-1};
    void processor_added(int) noexcept override {
      auto t0 = sa::shim::Clock::now();
      // May return early (spuriously): wait until the deadline has passed.
      while (sa::shim::Clock::now() - t0 < std::chrono::milliseconds(20))
        shim->this_processor_is_idle(0, word, 1, t0 + std::chrono::milliseconds(20));
      result = word.load() == 1 ? 1 : 0;
    }
  } h;
  sa::shim::Shim shim({.processors = 1, .pin = false, .cpus = topo.cpus()}, h);
  h.shim = &shim;
  shim.start();
  while (h.result == -1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  shim.stop();
  CHECK(h.result == 1);
}
