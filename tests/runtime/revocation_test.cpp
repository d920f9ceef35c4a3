// Processor revocation (issue 5): a revoked VProc stands down at a safe point,
// never inside a critical section, and comes back when restored.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <atomic>
#include <mutex>
#include <thread>

#include "test_support.hpp"

using namespace std::chrono_literals;

TEST_CASE("a revoked VProc runs no fibers until it is restored") {
  const auto mode = GENERATE(sa::ShimMode::on, sa::ShimMode::off);
  sa_test::Watchdog wd{30s, "revocation"};
  sa::Runtime rt{{.vprocs = 2, .shim = mode}};
  std::atomic<bool> started{false}, revoked{false}, restored{false}, stop{false};
  std::atomic<long> on_revoked_while_revoked{0}, on_vp1_after_restore{0}, iterations{0};
  std::thread controller([&] {
    while (!started) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(20ms);
    SA_FIBER_CHECK(rt.revoke_processor(1, 5s));
    revoked = true;
    std::this_thread::sleep_for(100ms);
    revoked = false;
    rt.restore_processor(1);
    restored = true;
    std::this_thread::sleep_for(100ms);
    stop = true;
  });
  rt.run([&] {
    std::vector<sa::Fiber> fs;
    for (int i = 0; i < 8; ++i)
      fs.push_back(sa::spawn([&] {
        while (!stop) {
          const int vp = sa::this_fiber::vproc();
          if (revoked && vp == 1) ++on_revoked_while_revoked;
          if (restored && vp == 1) ++on_vp1_after_restore;
          ++iterations;
          sa::this_fiber::yield();
        }
      }));
    started = true;
    for (auto& f : fs) f.join();
  });
  controller.join();
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(iterations > 0);
  CHECK(on_revoked_while_revoked == 0);
  CHECK(on_vp1_after_restore > 0);  // the workers spread back onto it
}

TEST_CASE("revocation waits for a fiber to leave its Spinlock critical section") {
  sa_test::Watchdog wd{30s, "revocation and a critical section"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  std::atomic<bool> in_section{false}, left_section{false};
  std::thread controller;
  rt.run([&] {
    sa::Spinlock sl;
    sa::Fiber holder = sa::spawn(sa::SpawnOptions{.vproc = 1}, [&] {
      std::lock_guard g(sl);
      in_section = true;
      // 100 ms of compute and no system call (a blocking one would hand the
      // VProc to a spare, which may stand down while we hold the lock).
      const auto until = std::chrono::steady_clock::now() + 100ms;
      while (std::chrono::steady_clock::now() < until) {
      }
      left_section = true;
    });
    while (!in_section) sa::this_fiber::yield();
    controller = std::thread([&] {
      SA_FIBER_CHECK(rt.revoke_processor(1, 5s));  // returns once it stood down
      SA_FIBER_CHECK(left_section);
      rt.restore_processor(1);  // the holder is bound to VProc 1: it resumes there
    });
    holder.join();
    controller.join();
  });
  CHECK(sa_test::fiber_failures() == 0);
}

TEST_CASE("revoke_processor rejects bad indices and calls from inside the runtime") {
  sa::Runtime rt{{.vprocs = 1}};
  CHECK_THROWS_AS(rt.revoke_processor(3), std::out_of_range);
  CHECK_THROWS_AS(rt.restore_processor(-1), std::out_of_range);
  rt.run([&] { CHECK_THROWS_AS(rt.revoke_processor(0), std::logic_error); });
}

TEST_CASE("a runtime with a revoked VProc shuts down cleanly") {
  sa_test::Watchdog wd{30s, "shutdown while revoked"};
  {
    sa::Runtime rt{{.vprocs = 2}};
    rt.run([] {});
    CHECK(rt.revoke_processor(1, 5s));
  }
  SUCCEED("destroyed");
}
