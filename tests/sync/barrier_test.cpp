// sa::Barrier, sa::WaitGroup, sa::Latch, sa::Event.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <thread>

#include "test_support.hpp"

using namespace std::chrono_literals;

TEST_CASE("a barrier holds every party until the last arrives, round after round") {
  const int vprocs = GENERATE(1, 2, 4);
  sa_test::Watchdog wd{30s, "barrier rounds"};
  sa::Runtime rt{{.vprocs = vprocs}};
  rt.run([] {
    constexpr int kParties = 16, kRounds = 50;
    sa::Barrier barrier{kParties};
    std::atomic<int> arrived[kRounds] = {};
    std::atomic<int> early{0}, serial{0};
    std::vector<sa::Fiber> fibers;
    for (int p = 0; p < kParties; ++p)
      fibers.push_back(sa::spawn([&] {
        for (int r = 0; r < kRounds; ++r) {
          ++arrived[r];
          if (barrier.arrive_and_wait()) ++serial;
          if (arrived[r] != kParties) ++early;  // released before everyone arrived
        }
      }));
    for (auto& f : fibers) f.join();
    CHECK(early == 0);
    CHECK(serial == kRounds);
  });
  CHECK_THROWS_AS(sa::Barrier(0), std::invalid_argument);
}

TEST_CASE("WaitGroup waits for every done(), also from outside threads") {
  sa_test::Watchdog wd{30s, "waitgroup"};
  sa::Runtime rt{{.vprocs = 2}};
  sa::WaitGroup wg;
  std::atomic<int> n{0};
  wg.add(101);
  std::thread outsider([&] {
    ++n;
    wg.done();
  });
  rt.run([&] {
    for (int i = 0; i < 100; ++i) sa::spawn([&] {
      sa::this_fiber::yield();
      ++n;
      wg.done();
    }).detach();
    wg.wait();
    CHECK(n == 101);
    CHECK(wg.count() == 0);
    wg.wait();  // already zero: returns at once
    wg.add(1);
    CHECK_FALSE(wg.wait_for(5ms));
    wg.done();
  });
  outsider.join();
  CHECK_THROWS_AS(wg.done(), std::logic_error);
}

TEST_CASE("Latch opens once at zero") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    sa::Latch latch{3};
    std::atomic<int> passed{0};
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 5; ++i) fibers.push_back(sa::spawn([&] {
      latch.wait();
      ++passed;
    }));
    sa::this_fiber::sleep_for(5ms);
    CHECK(passed == 0);
    CHECK_FALSE(latch.try_wait());
    latch.count_down(2);
    latch.arrive_and_wait();
    for (auto& f : fibers) f.join();
    CHECK(passed == 5);
    CHECK(latch.try_wait());
    CHECK_THROWS_AS(latch.count_down(), std::logic_error);
  });
}

TEST_CASE("Event wakes all waiters and stays set until reset") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    sa::Event ev;
    CHECK_FALSE(ev.wait_for(5ms));
    std::atomic<int> woke{0};
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 10; ++i) fibers.push_back(sa::spawn([&] {
      ev.wait();
      ++woke;
    }));
    sa::this_fiber::sleep_for(5ms);
    ev.set();
    for (auto& f : fibers) f.join();
    CHECK(woke == 10);
    CHECK(ev.wait_for(1ms));
    ev.reset();
    CHECK_FALSE(ev.is_set());
  });
}
