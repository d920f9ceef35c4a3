// sa::Semaphore: permits bound concurrency; timed acquire; outside release.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <thread>

#include "test_support.hpp"

using namespace std::chrono_literals;

TEST_CASE("a semaphore of 3 never lets more than 3 fibers in") {
  const int vprocs = GENERATE(1, 2, 4);
  sa_test::Watchdog wd{30s, "semaphore bound"};
  sa::Runtime rt{{.vprocs = vprocs}};
  rt.run([] {
    sa::Semaphore sem{3};
    std::atomic<int> inside{0}, max_inside{0}, passes{0};
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 100; ++i)
      fibers.push_back(sa::spawn([&] {
        for (int k = 0; k < 20; ++k) {
          sem.acquire();
          int now = ++inside;
          int seen = max_inside.load();
          while (now > seen && !max_inside.compare_exchange_weak(seen, now)) {
          }
          sa::this_fiber::yield();
          --inside;
          ++passes;
          sem.release();
        }
      }));
    for (auto& f : fibers) f.join();
    CHECK(max_inside <= 3);
    CHECK(passes == 2000);
    CHECK(sem.available() == 3);
  });
}

TEST_CASE("try_acquire, try_acquire_for and release(n)") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    sa::Semaphore sem{1};
    CHECK(sem.try_acquire());
    CHECK_FALSE(sem.try_acquire());
    auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(sem.try_acquire_for(15ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 15ms);
    std::atomic<int> got{0};
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 4; ++i) fibers.push_back(sa::spawn([&] { if (sem.try_acquire_for(5s)) ++got; }));
    sa::this_fiber::sleep_for(5ms);
    sem.release(4);
    for (auto& f : fibers) f.join();
    CHECK(got == 4);
    CHECK(sem.available() == 0);
  });
  CHECK_THROWS_AS(sa::Semaphore(-1), std::invalid_argument);
}

TEST_CASE("release from a thread outside the runtime wakes fibers") {
  sa_test::Watchdog wd{30s, "outside release"};
  sa::Runtime rt{{.vprocs = 2}};
  sa::Semaphore sem{0};
  std::atomic<int> got{0};
  std::vector<sa::Fiber> fibers;
  for (int i = 0; i < 10; ++i) fibers.push_back(rt.spawn([&] {
    sem.acquire();
    ++got;
  }));
  std::this_thread::sleep_for(10ms);
  for (int i = 0; i < 10; ++i) sem.release();
  for (auto& f : fibers) f.join();
  CHECK(got == 10);
}
