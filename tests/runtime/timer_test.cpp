// Timers: sleep_for / sleep_until durations and ordering.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <algorithm>
#include <chrono>
#include <vector>

#include "test_support.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST_CASE("sleep_for sleeps at least its duration") {
  const int vprocs = GENERATE(1, 2);
  sa::Runtime rt{{.vprocs = vprocs}};
  rt.run([] {
    for (auto d : {1ms, 5ms, 20ms}) {
      auto t0 = Clock::now();
      sa::this_fiber::sleep_for(d);
      CHECK(Clock::now() - t0 >= d);
    }
    auto t0 = Clock::now();
    sa::this_fiber::sleep_for(0ms);  // a yield
    sa::this_fiber::sleep_for(-5ms);
    CHECK(Clock::now() - t0 < 1s);
  });
}

TEST_CASE("timers fire in deadline order") {
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    std::vector<int> woke;
    std::vector<sa::Fiber> fibers;
    const auto base = Clock::now() + 200ms;  // far enough that every fiber arms before the first fires
    // Deadlines in scrambled order.
    const int offsets_ms[] = {9, 3, 7, 1, 5, 0, 4, 6};
    for (int i = 0; i < 8; ++i)
      fibers.push_back(sa::spawn([&woke, i, deadline = base + 2 * std::chrono::milliseconds(offsets_ms[i])] {
        sa::this_fiber::sleep_until(deadline);
        woke.push_back(i);
      }));
    for (auto& f : fibers) f.join();
    CHECK(woke == std::vector<int>{5, 3, 1, 6, 4, 7, 2, 0});
  });
}

TEST_CASE("many sleepers on every VProc all wake after their deadlines") {
  const int vprocs = GENERATE(1, 2, 4);
  sa_test::Watchdog wd{std::chrono::seconds(30), "many sleepers"};
  sa::Runtime rt{{.vprocs = vprocs}};
  rt.run([] {
    std::atomic<int> early{0}, done{0};
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 2000; ++i)
      fibers.push_back(sa::spawn([&, i] {
        auto d = std::chrono::microseconds((i * 37) % 5000);
        auto t0 = Clock::now();
        sa::this_fiber::sleep_for(d);
        if (Clock::now() - t0 < d) ++early;
        ++done;
      }));
    for (auto& f : fibers) f.join();
    CHECK(early == 0);
    CHECK(done == 2000);
  });
}

TEST_CASE("sleep outside the runtime sleeps the thread") {
  auto t0 = Clock::now();
  sa::this_fiber::sleep_for(5ms);
  CHECK(Clock::now() - t0 >= 5ms);
}

TEST_CASE("a deadline that expires while its fiber is parking does not resume it before it is saved") {
  // Every kGlobalEvery-th pick fires the VProc's expired timers. A fiber
  // that parks with a deadline of 1 ns passes through that pick on its way
  // out: its own timer has expired by then, and the fiber is not saved yet.
  // Before the fix, the pick readied it and switched to its stale context
  // (a crash, or a fiber running twice). Many rounds, so that some of the
  // parks hit the periodic pick; alone and beside a yielding fiber; with no
  // lock (sleep) and with one (CondVar).
  const int vprocs = GENERATE(1, 2);
  const bool company = GENERATE(false, true);
  sa_test::Watchdog wd{std::chrono::seconds(30), "parks with expired deadlines"};
  sa::Runtime rt{{.vprocs = vprocs}};
  rt.run([company] {
    std::atomic<bool> stop{false};
    sa::Fiber yielder;
    if (company)
      yielder = sa::spawn([&stop] {
        while (!stop.load(std::memory_order_relaxed)) sa::this_fiber::yield();
      });
    long timeouts = 0;
    for (int i = 0; i < 20000; ++i) {
      sa::this_fiber::sleep_for(1ns);
      sa::this_fiber::sleep_until(Clock::now());
    }
    sa::Mutex m;
    sa::CondVar cv;
    for (int i = 0; i < 20000; ++i) {
      std::unique_lock lk(m);
      if (cv.wait_for(lk, 1ns) == std::cv_status::timeout) ++timeouts;
    }
    stop = true;
    if (company) yielder.join();
    CHECK(timeouts == 20000);
  });
}
