// The scheduler: yield order, work spreading over VProcs, wake-ups.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <atomic>
#include <vector>

#include "test_support.hpp"

TEST_CASE("yield lets the other ready fibers of the VProc run in FIFO order") {
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    std::vector<int> order;
    std::vector<sa::Fiber> fibers;
    for (int id = 0; id < 3; ++id)
      fibers.push_back(sa::spawn([&order, id] {
        for (int round = 0; round < 3; ++round) {
          order.push_back(id);
          sa::this_fiber::yield();
        }
      }));
    for (auto& f : fibers) f.join();
    // Each round visits every fiber once before any fiber's next round.
    REQUIRE(order.size() == 9);
    for (int round = 0; round < 3; ++round) {
      std::vector<int> seen(order.begin() + round * 3, order.begin() + round * 3 + 3);
      std::sort(seen.begin(), seen.end());
      CHECK(seen == std::vector<int>{0, 1, 2});
    }
  });
}

TEST_CASE("yield with nothing else ready returns at once") {
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    for (int i = 0; i < 1000; ++i) sa::this_fiber::yield();
  });
  SUCCEED();
}

TEST_CASE("a one-VProc run queue (no thief: plain pops) spills over and loses no fiber") {
  // More ready fibers than the run queue holds (RunQueue::kCapacity = 256):
  // yields spill half of the ring to the global queue, which the periodic
  // pick and the loop take back from.
  sa_test::Watchdog wd{std::chrono::seconds(30), "one-VProc spill"};
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    constexpr int kFibers = 700, kRounds = 20;
    int runs = 0;
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < kFibers; ++i)
      fibers.push_back(sa::spawn([&runs] {
        for (int r = 0; r < kRounds; ++r) {
          ++runs;  // one VProc: no data race
          sa::this_fiber::yield();
        }
      }));
    for (auto& f : fibers) f.join();
    CHECK(runs == kFibers * kRounds);
  });
}

TEST_CASE("compute work spreads over every VProc") {
  const int vprocs = GENERATE(2, 4);
  sa_test::Watchdog wd{std::chrono::seconds(30), "work spreading"};
  sa::Runtime rt{{.vprocs = vprocs}};
  std::vector<std::atomic<int>> ran_on(static_cast<size_t>(vprocs));
  auto all_seen = [&] {
    for (auto& n : ran_on)
      if (n.load() == 0) return false;
    return true;
  };
  rt.run([&] {
    // More VProcs than CPUs on a machine busy with other tests: a VProc's
    // thread may wait a while for a CPU, so the fibers keep going (up to a
    // bound) until every VProc has run one; a VProc that never gets work
    // still fails.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 64; ++i)
      fibers.push_back(sa::spawn([&] {
        // ~1 ms of work, in slices, so that each fiber is seen running.
        volatile uint64_t x = 0;
        for (int slice = 0; slice < 10 || (!all_seen() && std::chrono::steady_clock::now() < until); ++slice) {
          ++ran_on[static_cast<size_t>(sa::this_fiber::vproc())];
          for (int k = 0; k < 20'000; ++k) x = x + static_cast<uint64_t>(k);
          sa::this_fiber::yield();
        }
      }));
    for (auto& f : fibers) f.join();
  });
  auto s = rt.stats();
  for (int v = 0; v < vprocs; ++v) {
    INFO("VProc " << v << ": slices " << ran_on[static_cast<size_t>(v)] << ", fibers_run "
                  << s.vprocs[static_cast<size_t>(v)].fibers_run << ", steals " << s.vprocs[static_cast<size_t>(v)].steals);
    CHECK(ran_on[static_cast<size_t>(v)] > 0);
    CHECK(s.vprocs[static_cast<size_t>(v)].fibers_run > 0);
  }
  CHECK(s.total().steals > 0);
}

TEST_CASE("a fiber woken from another VProc or thread always runs") {
  const int vprocs = GENERATE(1, 2, 4);
  sa_test::Watchdog wd{std::chrono::seconds(30), "cross wake-ups"};
  sa::Runtime rt{{.vprocs = vprocs}};
  // Many rounds of park / wake across VProcs: a lost wake-up hangs here.
  rt.run([] {
    constexpr int kRounds = 20'000;
    sa::Channel<int> a{0}, b{0};
    sa::Fiber ping = sa::spawn([&] {
      for (int i = 0; i < kRounds; ++i) {
        a.send(i);
        CHECK(b.recv() == i);
      }
    });
    sa::Fiber pong = sa::spawn([&] {
      for (int i = 0; i < kRounds; ++i) b.send(*a.recv());
    });
    ping.join();
    pong.join();
  });
  SUCCEED();
}

TEST_CASE("sleeping VProcs wake for work spawned from outside") {
  sa_test::Watchdog wd{std::chrono::seconds(30), "outside wake-ups"};
  sa::Runtime rt{{.vprocs = 2}};
  for (int round = 0; round < 200; ++round) {
    if (round % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // let VProcs sleep
    std::atomic<bool> ran{false};
    sa::Fiber f = rt.spawn([&] { ran = true; });
    f.join();
    REQUIRE(ran);
  }
  CHECK(rt.stats().total().idle_wakeups > 0);
}

TEST_CASE("fibers readied onto a VProc's inbox run in the order they were readied") {
  sa_test::Watchdog wd{std::chrono::seconds(30), "inbox order"};
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    // Spawned from VProc 0 in a burst, the fibers bound to VProc 1 reach its
    // inbox together; it must still run them oldest first.
    sa::Fiber spawner = sa::spawn(sa::SpawnOptions{.vproc = 0}, [] {
      constexpr int kFibers = 200;
      std::vector<int> order;
      std::vector<sa::Fiber> fibers;
      for (int i = 0; i < kFibers; ++i)
        fibers.push_back(sa::spawn(sa::SpawnOptions{.vproc = 1}, [&order, i] { order.push_back(i); }));
      for (auto& f : fibers) f.join();
      SA_FIBER_CHECK(order.size() == kFibers);
      for (int i = 0; i < kFibers && i < static_cast<int>(order.size()); ++i)
        SA_FIBER_CHECK(order[static_cast<size_t>(i)] == i);
    });
    spawner.join();
  });
  CHECK(sa_test::fiber_failures() == 0);
}

TEST_CASE("bound fibers on two VProcs handing values back and forth lose no wake-up") {
  sa_test::Watchdog wd{std::chrono::seconds(60), "bound ping-pong"};
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    constexpr int kRounds = 50'000;
    sa::Channel<int> a{0}, b{0};
    sa::Fiber ping = sa::spawn(sa::SpawnOptions{.vproc = 0}, [&] {
      for (int i = 0; i < kRounds; ++i) {
        a.send(i);
        SA_FIBER_CHECK(b.recv() == i + 1);
      }
      a.close();
    });
    sa::Fiber pong = sa::spawn(sa::SpawnOptions{.vproc = 1}, [&] {
      while (std::optional<int> v = a.recv()) b.send(*v + 1);
    });
    ping.join();
    pong.join();
  });
  CHECK(sa_test::fiber_failures() == 0);
}
