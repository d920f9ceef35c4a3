// yield()'s fast path (runtime/src/sched.cpp) and the cases it leaves to
// the slow path: two fibers yielding to each other on one VProc must still
// let a timer fire, a fiber in the inbox or the global queue run, and a
// revoked VProc stand down; the switch counter still counts every yield.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <atomic>
#include <thread>

#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

// yielders() spawns two fibers that yield to each other until `done`.
struct Yielders {
  explicit Yielders(std::atomic<bool>& done, std::atomic<long>& yields) {
    for (auto& f : fibers)
      f = sa::spawn([&done, &yields] {
        while (!done.load(std::memory_order_relaxed)) {
          yields.fetch_add(1, std::memory_order_relaxed);
          sa::this_fiber::yield();
        }
      });
  }
  void join() {
    for (auto& f : fibers) f.join();
  }
  sa::Fiber fibers[2];
};

}  // namespace

TEST_CASE("two fibers yielding to each other let a timer fire") {
  const auto mode = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  sa_test::Watchdog wd{30s, "yielders and a timer"};
  sa::Runtime rt{{.vprocs = 1, .shim = mode}};
  rt.run([] {
    std::atomic<bool> done{false};
    std::atomic<long> yields{0};
    Yielders y{done, yields};
    sa::Fiber sleeper = sa::spawn([&] {
      sa::this_fiber::sleep_for(5ms);
      done = true;
    });
    sleeper.join();
    y.join();
    CHECK(yields > 0);
  });
}

TEST_CASE("two fibers yielding to each other let a fiber readied onto their VProc's inbox run") {
  const auto mode = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  sa_test::Watchdog wd{30s, "yielders and the inbox"};
  sa::Runtime rt{{.vprocs = 1, .shim = mode}};
  rt.run([] {
    std::atomic<bool> done{false};
    std::atomic<long> yields{0};
    Yielders y{done, yields};
    while (yields < 100) sa::this_fiber::yield();  // they are going
    // Bound to VProc 0: it goes to the inbox, not the run queue.
    sa::Fiber bound = sa::spawn(sa::SpawnOptions{.vproc = 0}, [&] { done = true; });
    bound.join();
    y.join();
  });
}

TEST_CASE("two fibers yielding to each other let a fiber from the global queue run") {
  const auto mode = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  sa_test::Watchdog wd{30s, "yielders and the global queue"};
  sa::Runtime rt{{.vprocs = 1, .shim = mode}};
  std::atomic<bool> done{false}, started{false};
  std::atomic<long> yields{0};
  std::thread outside([&] {
    while (!started) std::this_thread::sleep_for(1ms);
    // Spawned from a thread outside the runtime: the global queue.
    sa::Fiber f = rt.spawn([&] { done = true; });
    f.join();
  });
  rt.run([&] {
    Yielders y{done, yields};
    started = true;
    y.join();
  });
  outside.join();
  CHECK(yields > 0);
}

TEST_CASE("a VProc whose fibers only yield to each other stands down when revoked") {
  const auto mode = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  sa_test::Watchdog wd{30s, "yielders and revocation"};
  sa::Runtime rt{{.vprocs = 1, .shim = mode}};
  std::atomic<bool> done{false}, started{false};
  std::atomic<long> yields{0};
  std::thread controller([&] {
    while (yields < 1000) std::this_thread::sleep_for(1ms);
    SA_FIBER_CHECK(rt.revoke_processor(0, 5s));  // the yielders' safe point
    const long at_revocation = yields;
    std::this_thread::sleep_for(20ms);
    SA_FIBER_CHECK(yields == at_revocation);  // nobody runs on a stood-down VProc
    rt.restore_processor(0);
    while (yields < at_revocation + 1000) std::this_thread::sleep_for(1ms);
    done = true;
  });
  rt.run([&] {
    Yielders y{done, yields};
    started = true;
    y.join();
  });
  controller.join();
  CHECK(sa_test::fiber_failures() == 0);
}

TEST_CASE("every yield to another fiber counts as a switch") {
  sa::Runtime rt{{.vprocs = 1}};
  constexpr long kRounds = 10'000;
  uint64_t before = 0;
  rt.run([&] {
    before = rt.stats().total().switches;
    auto body = [] {
      for (long i = 0; i < kRounds; ++i) sa::this_fiber::yield();
    };
    sa::Fiber a = sa::spawn(body);
    sa::Fiber b = sa::spawn(body);
    a.join();
    b.join();
  });
  // 2 * kRounds yields, each a switch; a few more to start, finish and join.
  const uint64_t switches = rt.stats().total().switches - before;
  CHECK(switches >= 2 * kRounds);
  CHECK(switches <= 2 * kRounds + 10);
}
