// kernel_shim: activations start pinned, run processor_added, park idle
// processors on a futex and wake them.

#include <catch2/catch.hpp>

#include <sa/shim/shim.hpp>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace {

struct Recorder final : sa::shim::UpcallHandler {
  std::atomic<int> added{0};
  std::atomic<int> cpu_mismatch{0};
  std::atomic<uint32_t> word{1};
  std::atomic<bool> woke{false};
  sa::shim::Shim* shim = nullptr;
  void processor_added(int vp) noexcept override {
    ++added;
    auto* a = sa::shim::Activation::current();
    if (!a || a->vproc() != vp || a->state() != sa::shim::ActivationState::Running) ++cpu_mismatch;
    if (a && a->cpu() >= 0 && sched_getcpu() != a->cpu()) ++cpu_mismatch;
    if (vp == 0) {
      // Park until the test changes the word and wakes us.
      while (word.load() == 1) shim->this_processor_is_idle(0, word, 1, sa::shim::Clock::time_point::max());
      woke = true;
    }
  }
};

}  // namespace

TEST_CASE("activations run processor_added on their pinned CPU and park when idle") {
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
  shim.join();
  CHECK(rec.woke);
  CHECK(rec.cpu_mismatch == 0);
}

TEST_CASE("this_processor_is_idle returns at its deadline") {
  auto topo = sa::shim::Topology::discover();
  struct TimeoutHandler final : sa::shim::UpcallHandler {
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
  shim.join();
  CHECK(h.result == 1);
}
