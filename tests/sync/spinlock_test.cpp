// sa::Spinlock: exclusion across VProcs; the holder is recorded.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

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

TEST_CASE("a fiber that yields while holding a Spinlock is reported, not left to hang its VProc") {
  auto r = sa_test::run_in_child(
      [] {
        sa::Runtime rt{{.vprocs = 1}};
        rt.run([] {
          sa::Spinlock sl;
          std::lock_guard g(sl);
          sa::this_fiber::yield();
        });
      },
      10s);
  CHECK_FALSE(r.timed_out);
  CHECK_FALSE((r.exited && r.status == 0));  // aborted (TSan turns the abort into an exit with its own status)
  CHECK_THAT(r.err, Catch::Contains("yielded while holding an sa::Spinlock"));
}

TEST_CASE("a Spinlock taken while holding another one spins and nests") {
  sa_test::Watchdog wd{30s, "nested spinlocks"};
  sa::Runtime rt{{.vprocs = 2}};
  long n = 0;
  rt.run([&] {
    sa::Spinlock outer, inner;
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 8; ++i)
      fibers.push_back(sa::spawn([&] {
        for (int k = 0; k < 2000; ++k) {
          std::scoped_lock g(outer);
          std::lock_guard h(inner);
          ++n;
        }
      }));
    for (auto& f : fibers) f.join();
  });
  CHECK(n == 8 * 2000);
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

TEST_CASE("kernel threads outside the runtime and fibers share a Spinlock") {
  // A thread outside the runtime has no activation: its lock word names
  // none, and waiters read its state as Unknown (they spin, then yield).
  const sa::ShimMode mode = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  sa_test::Watchdog wd{30s, "spinlock shared with threads"};
  sa::Runtime rt{{.vprocs = 2, .shim = mode}};
  sa::Spinlock sl;
  long counter = 0;
  constexpr int kEach = 20'000;
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      for (int k = 0; k < kEach; ++k) {
        std::lock_guard g(sl);
        ++counter;
      }
    });
  rt.run([&] {
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 4; ++i)
      fibers.push_back(sa::spawn([&] {
        for (int k = 0; k < kEach; ++k) {
          std::lock_guard g(sl);
          ++counter;
        }
      }));
    go.store(true);
    for (auto& f : fibers) f.join();
  });
  for (auto& t : threads) t.join();
  CHECK(counter == 6L * kEach);
  sl.lock();  // from this thread, outside the runtime: no fiber holds it
  CHECK(sl.holder() == 0);
  CHECK_FALSE(sl.try_lock());
  sl.unlock();
  CHECK(sl.try_lock());
  sl.unlock();
}
