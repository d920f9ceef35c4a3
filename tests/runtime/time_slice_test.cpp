// Cooperative time slices (Options::time_slice): a fiber that keeps its
// VProc past its slice while others wait yields at its next maybe_yield();
// never inside an sa::Spinlock's critical section, never when nobody waits.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// spin_until() calls maybe_yield() until `done` or `bound` passed; true if
// `done` came first.
bool spin_until(const std::atomic<bool>& done, std::chrono::milliseconds bound) {
  const auto t0 = Clock::now();
  while (!done.load(std::memory_order_relaxed)) {
    if (Clock::now() - t0 > bound) return false;
    sa::this_fiber::maybe_yield();
  }
  return true;
}

}  // namespace

TEST_CASE("time slices: a fiber looping in maybe_yield lets the fiber queued behind it run") {
  const sa::ShimMode shim = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  INFO((shim == sa::ShimMode::on ? "shim on" : "shim off"));
  sa_test::Watchdog wd{30s, "time slice"};
  sa::Runtime rt{{.vprocs = 1, .shim = shim, .time_slice = 1ms}};
  rt.run([] {
    std::atomic<bool> ran{false};
    sa::Fiber other = sa::spawn([&] { ran = true; });  // behind us on the one VProc
    CHECK(spin_until(ran, 10s));
    other.join();
  });
  CHECK(rt.stats().total().slice_yields >= 1);
}

TEST_CASE("time slices off: the same loop keeps its VProc (the bound expires first)") {
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    std::atomic<bool> ran{false};
    sa::Fiber other = sa::spawn([&] { ran = true; });
    CHECK_FALSE(spin_until(ran, 200ms));
    other.join();  // (a wait: now it runs)
    CHECK(ran);
  });
  CHECK(rt.stats().total().slice_yields == 0);
}

TEST_CASE("time slices: maybe_yield does not yield when nobody waits, nor inside an sa::Spinlock") {
  sa_test::Watchdog wd{30s, "time slice, no yield"};
  sa::Runtime rt{{.vprocs = 1, .time_slice = 1ms}};
  rt.run([&rt] {
    // Alone: 50 slices' worth of maybe_yield() and no yield.
    std::atomic<bool> never{false};
    CHECK_FALSE(spin_until(never, 50ms));
    CHECK(rt.stats().total().slice_yields == 0);
    // Inside a critical section the fiber behind us waits, past many slices.
    sa::Spinlock lock;
    std::atomic<bool> ran{false};
    lock.lock();
    sa::Fiber other = sa::spawn([&] { ran = true; });
    CHECK_FALSE(spin_until(ran, 50ms));
    lock.unlock();
    CHECK(spin_until(ran, 10s));  // and gets in once the section ends
    other.join();
  });
}

TEST_CASE("time slices: a fiber spawned from outside the runtime runs at the next slice's end") {
  // It waits in the global queue, which a pick looks at only every 61st
  // time: the slice's yield must look there itself, not go on (with a
  // slice yield counted each time) until the 61st.
  sa_test::Watchdog wd{30s, "time slice, global queue"};
  sa::Runtime rt{{.vprocs = 1, .time_slice = 1ms}};
  rt.run([&rt] {
    std::atomic<bool> ran{false};
    sa::Fiber other;
    std::thread outside([&] { other = rt.spawn([&] { ran = true; }); });
    outside.join();
    CHECK(spin_until(ran, 10s));
    other.join();
    // The first slice that ran out let it run (a mark racing with the
    // switch may add one); before the fix, every slice ran out until the
    // 61st pick.
    const sa::VProcStats s = rt.stats().total();
    INFO("slices ran out " << s.slice_marks << " times, yields " << s.slice_yields);
    CHECK(s.slice_yields >= 1);
    CHECK(s.slice_marks <= 3);
  });
}

TEST_CASE("time slices: a fiber queued here is not passed by a stream of fibers from outside") {
  // The slice's look at the global queue comes first only when nothing
  // waits here; otherwise a steady stream from outside would pass L for
  // as long as it lasts.
  sa_test::Watchdog wd{30s, "time slice, local before global"};
  sa::Runtime rt{{.vprocs = 1, .time_slice = 1ms}};
  rt.run([&rt] {
    std::atomic<bool> l_ran{false}, stop{false};
    std::atomic<int> started{0}, started_before_l{-1};
    sa::Fiber l = sa::spawn([&] {
      started_before_l = started.load();
      l_ran = true;
    });
    std::mutex m;
    std::vector<sa::Fiber> outsiders;
    std::thread feeder([&] {
      while (!stop) {
        sa::Fiber f = rt.spawn([&] {
          ++started;
          std::atomic<bool> never{false};
          spin_until(never, 3ms);  // a whole slice and more, yielding at its end
        });
        {
          std::lock_guard g(m);
          outsiders.push_back(std::move(f));
        }
        std::this_thread::sleep_for(500us);
      }
    });
    CHECK(spin_until(l_ran, 10s));
    stop = true;
    feeder.join();
    l.join();
    for (auto& f : outsiders) f.join();
    INFO(started.load() << " fibers from outside started, " << started_before_l.load() << " of them before L");
    CHECK(started_before_l.load() <= 2);
  });
}

TEST_CASE("time slices: a fiber bound to a busy VProc, woken from another, runs at the slice's end") {
  // `echo` waits in the busy VProc's inbox after each wake-up, which the
  // slicer reads from its own thread.
  sa_test::Watchdog wd{30s, "time slice, inbox"};
  static constexpr int kRounds = 200;
  sa::Runtime rt{{.vprocs = 2, .time_slice = 200us}};
  rt.run([] {
    std::atomic<bool> stop{false};
    sa::Channel<int> there{1}, back{1};
    sa::Fiber busy = sa::spawn(sa::SpawnOptions{.vproc = 0}, [&] { SA_FIBER_CHECK(spin_until(stop, 20s)); });
    sa::Fiber echo = sa::spawn(sa::SpawnOptions{.vproc = 0}, [&] {
      while (auto v = there.recv()) back.send(*v);
    });
    int rounds = 0;
    sa::Fiber driver = sa::spawn(sa::SpawnOptions{.vproc = 1}, [&] {
      for (int i = 0; i < kRounds; ++i) {
        there.send(i);
        if (back.recv() == i) ++rounds;
      }
      there.close();
      stop = true;
    });
    driver.join();
    echo.join();
    busy.join();
    CHECK(rounds == kRounds);
  });
  CHECK(sa_test::fiber_failures() == 0);
  // Without slices `echo` would never run (the bound expires). Not one
  // yield per round: when the driver's next message is in before `echo`
  // parks, `echo` takes it at once.
  CHECK(rt.stats().vprocs[0].slice_yields >= 1);
}

TEST_CASE("time slices: a negative slice is a clear error") {
  CHECK_THROWS_AS((sa::Runtime{{.vprocs = 1, .time_slice = -1ms}}), std::invalid_argument);
}
