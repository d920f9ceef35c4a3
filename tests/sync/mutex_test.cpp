// sa::Mutex: exclusion across VProcs, timed locking, outside threads.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <mutex>
#include <thread>

#include "test_support.hpp"

using namespace std::chrono_literals;

TEST_CASE("1000 fibers incrementing under sa::Mutex on every VProc get an exact count") {
  const int vprocs = GENERATE(1, 2, 4);
  sa_test::Watchdog wd{30s, "mutex stress"};
  sa::Runtime rt{{.vprocs = vprocs}};
  long counter = 0;  // guarded by m; a plain long so a race would lose counts
  sa::Mutex m;
  rt.run([&] {
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 1000; ++i)
      fibers.push_back(sa::spawn([&, i] {
        for (int k = 0; k < 200; ++k) {
          std::lock_guard g(m);
          long v = counter;
          if (k % 50 == i % 50) sa::this_fiber::yield();  // hold it across a switch now and then
          counter = v + 1;
        }
      }));
    for (auto& f : fibers) f.join();
  });
  CHECK(counter == 1000L * 200L);
}

TEST_CASE("try_lock and try_lock_for") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    sa::Mutex m;
    CHECK(m.try_lock());
    CHECK_FALSE(m.try_lock());
    sa::Fiber other = sa::spawn([&] {
      auto t0 = std::chrono::steady_clock::now();
      CHECK_FALSE(m.try_lock_for(20ms));
      CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
    });
    other.join();
    m.unlock();
    sa::Fiber again = sa::spawn([&] {
      CHECK(m.try_lock_for(1s));
      m.unlock();
    });
    again.join();
  });
}

TEST_CASE("a fiber waiting in try_lock_for gets the lock when it is released in time") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    sa::Mutex m;
    m.lock();
    std::atomic<bool> got{false};
    sa::Fiber waiter = sa::spawn([&] {
      got = m.try_lock_for(5s);
      if (got) m.unlock();
    });
    sa::this_fiber::sleep_for(10ms);
    m.unlock();
    waiter.join();
    CHECK(got);
  });
}

TEST_CASE("std::scoped_lock over two sa::Mutexes does not deadlock") {
  sa_test::Watchdog wd{30s, "scoped_lock"};
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    sa::Mutex a, b;
    int n = 0;
    sa::Fiber f1 = sa::spawn([&] {
      for (int i = 0; i < 2000; ++i) {
        std::scoped_lock lk(a, b);
        ++n;
      }
    });
    sa::Fiber f2 = sa::spawn([&] {
      for (int i = 0; i < 2000; ++i) {
        std::scoped_lock lk(b, a);
        ++n;
      }
    });
    f1.join();
    f2.join();
    CHECK(n == 4000);
  });
}

TEST_CASE("a thread outside the runtime can lock and unlock, waking fibers") {
  sa_test::Watchdog wd{30s, "outside mutex"};
  sa::Runtime rt{{.vprocs = 2}};
  sa::Mutex m;
  long counter = 0;
  m.lock();  // held by this (outside) thread
  sa::Fiber f = rt.spawn([&] {
    for (int i = 0; i < 1000; ++i) {
      std::lock_guard g(m);
      ++counter;
    }
  });
  std::this_thread::sleep_for(10ms);  // the fiber parks on m
  m.unlock();                         // from outside: wakes it
  for (int i = 0; i < 1000; ++i) {
    std::lock_guard g(m);  // outside thread contends with the fiber
    ++counter;
  }
  f.join();
  CHECK(counter == 2000);
}
