// sa::Spinlock: exclusion across VProcs; the holder is recorded.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <mutex>

#include "test_support.hpp"

using namespace std::chrono_literals;

TEST_CASE("fibers on every VProc increment under sa::Spinlock with an exact count") {
  const int vprocs = GENERATE(1, 2, 4);
  sa_test::Watchdog wd{30s, "spinlock stress"};
  sa::Runtime rt{{.vprocs = vprocs}};
  long counter = 0;
  sa::Spinlock sl;
  rt.run([&] {
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 16; ++i)
      fibers.push_back(sa::spawn([&] {
        for (int k = 0; k < 20'000; ++k) {
          std::lock_guard g(sl);
          ++counter;
        }
      }));
    for (auto& f : fibers) f.join();
  });
  CHECK(counter == 16L * 20'000L);
}

TEST_CASE("a spinlock waiter lets a holder that yielded on the same VProc finish") {
  sa_test::Watchdog wd{30s, "spinlock holder yields"};
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    sa::Spinlock sl;
    int n = 0;
    sa::Fiber holder = sa::spawn([&] {
      std::lock_guard g(sl);
      sa::this_fiber::yield();  // bad practice, but must not hang the VProc
      ++n;
    });
    sa::Fiber waiter = sa::spawn([&] {
      std::lock_guard g(sl);
      ++n;
    });
    holder.join();
    waiter.join();
    CHECK(n == 2);
  });
}

TEST_CASE("holder() names the fiber holding the lock") {
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    sa::Spinlock sl;
    CHECK(sl.holder() == 0);
    sl.lock();
    CHECK(sl.holder() == sa::this_fiber::id());
    CHECK_FALSE(sl.try_lock());
    sl.unlock();
    CHECK(sl.holder() == 0);
  });
}
