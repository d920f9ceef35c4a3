// sa::Fiber handles: join, detach, ids, exceptions, arguments, binding.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <atomic>
#include <cfenv>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "test_support.hpp"

TEST_CASE("join waits for the fiber; joinable and id follow the handle") {
  const int vprocs = GENERATE(1, 2, 4);
  sa::Runtime rt{{.vprocs = vprocs}};
  rt.run([] {
    std::atomic<bool> done{false};
    sa::Fiber f = sa::spawn([&] {
      sa::this_fiber::sleep_for(std::chrono::milliseconds(5));
      done = true;
    });
    CHECK(f.joinable());
    CHECK(f.id() != 0);
    CHECK(f.id() != sa::this_fiber::id());
    f.join();
    CHECK(done);
    CHECK_FALSE(f.joinable());
    CHECK(f.id() == 0);
  });
}

TEST_CASE("join rethrows the fiber's exception, with its type") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    sa::Fiber f = sa::spawn([] { throw std::out_of_range("index 9"); });
    CHECK_THROWS_AS(f.join(), std::out_of_range);
    sa::Fiber g = sa::spawn([] {
      sa::this_fiber::yield();
      throw 42;
    });
    try {
      g.join();
      FAIL("no exception");
    } catch (int v) {
      CHECK(v == 42);
    }
  });
}

TEST_CASE("join and detach misuse are clear errors") {
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    sa::Fiber empty;
    try {
      empty.join();
      FAIL("join of an empty handle");
    } catch (const std::system_error& e) {
      CHECK(e.code().value() == EINVAL);
    }
    CHECK_THROWS_AS(empty.detach(), std::system_error);

    // A fiber that joins itself.
    auto self = std::make_shared<sa::Fiber>();
    sa::Channel<int> go{1};
    std::atomic<int> err{0};
    *self = sa::spawn([&, self] {
      go.recv();
      try {
        self->join();
      } catch (const std::system_error& e) {
        err = e.code().value();
      }
    });
    go.send(1);
    self->join();  // the fiber's own join failed; ours waits for it
    CHECK(err == EDEADLK);
  });
}

TEST_CASE("detached fibers run to completion") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    sa::WaitGroup wg;
    std::atomic<int> n{0};
    for (int i = 0; i < 100; ++i) {
      wg.add(1);
      sa::spawn([&] {
        sa::this_fiber::yield();
        ++n;
        wg.done();
      }).detach();
    }
    wg.wait();
    CHECK(n == 100);
  });
}

TEST_CASE("spawn copies or moves its arguments like std::thread") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    std::string s = "hello";
    auto p = std::make_unique<int>(5);
    std::string out;
    int got = 0;
    sa::Fiber f = sa::spawn(
        [&](std::string a, std::unique_ptr<int> b, int c) {
          out = a + "!";
          got = *b + c;
        },
        s, std::move(p), 10);
    s = "changed";  // the fiber has its own copy
    f.join();
    CHECK(out == "hello!");
    CHECK(got == 15);
  });
}

TEST_CASE("fiber ids are unique") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    std::set<sa::FiberId> ids;
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 1000; ++i) fibers.push_back(sa::spawn([] {}));
    for (auto& f : fibers) {
      ids.insert(f.id());
      f.join();
    }
    CHECK(ids.size() == 1000);
  });
}

TEST_CASE("ids stay unique and spawns and ends are counted whichever VProc or thread spawns and ends them") {
  // Ids come in blocks per VProc, and spawns and ends are counted where
  // they happen: fibers spawned on each VProc (some bound to the other, so
  // they end there) and from a thread outside, all alive at once, then all
  // ended.
  sa_test::Watchdog wd{std::chrono::seconds(30), "ids and counts across VProcs"};
  sa::Runtime rt{{.vprocs = 2}};
  constexpr int kPerSpawner = 600;
  constexpr int kOutside = 300;
  constexpr int kFibers = 2 * kPerSpawner + kOutside;
  sa::Event go;
  sa::Mutex m;
  std::vector<sa::FiberId> ids;
  auto body = [&] {
    go.wait();
    std::lock_guard g(m);
    ids.push_back(sa::this_fiber::id());
  };
  int64_t live_before_go = 0;
  rt.run([&] {
    std::vector<sa::Fiber> all;
    sa::Mutex all_lock;  // the spawners and the outside thread add to `all`
    std::thread outside([&] {
      for (int i = 0; i < kOutside; ++i) {
        sa::Fiber f = rt.spawn(body);
        std::lock_guard g(all_lock);
        all.push_back(std::move(f));
      }
    });
    std::vector<sa::Fiber> spawners;
    for (int vp = 0; vp < 2; ++vp)
      spawners.push_back(sa::spawn(sa::SpawnOptions{.vproc = vp}, [&, vp] {
        for (int i = 0; i < kPerSpawner; ++i) {
          sa::Fiber f = i % 3 == 0 ? sa::spawn(sa::SpawnOptions{.vproc = 1 - vp}, body) : sa::spawn(body);
          std::lock_guard g(all_lock);
          all.push_back(std::move(f));
        }
      }));
    for (auto& s : spawners) s.join();
    outside.join();
    // All parked on `go`, besides this main fiber.
    live_before_go = rt.stats().fibers_live;
    go.set();
    for (auto& f : all) f.join();
  });
  CHECK(live_before_go >= kFibers + 1);
  const auto s = rt.stats();
  CHECK(s.fibers_spawned == static_cast<uint64_t>(kFibers) + 3);  // + the main fiber and the two spawners
  CHECK(s.fibers_live == 0);
  CHECK(ids.size() == static_cast<size_t>(kFibers));
  CHECK(std::set<sa::FiberId>(ids.begin(), ids.end()).size() == static_cast<size_t>(kFibers));
}

TEST_CASE("100k fibers spawn and join with an exact count") {
  const int vprocs = GENERATE(1, 2, 4);
  sa_test::Watchdog wd{std::chrono::seconds(60), "100k spawn/join"};
  sa::Runtime rt{{.vprocs = vprocs}};
  std::atomic<long> sum{0};
#if defined(SA_TSAN)
  constexpr int kFibers = 10'000;  // ThreadSanitizer makes each fiber ~100x dearer
#else
  constexpr int kFibers = 100'000;
#endif
  rt.run([&] {
    std::vector<sa::Fiber> fibers;
    fibers.reserve(kFibers);
    for (int i = 0; i < kFibers; ++i) fibers.push_back(sa::spawn([&sum, i] { sum += i; }));
    for (auto& f : fibers) f.join();
  });
  CHECK(sum == static_cast<long>(kFibers) * (kFibers - 1) / 2);
  CHECK(rt.stats().fibers_live == 0);
}

TEST_CASE("a bound fiber always runs on its VProc") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    std::atomic<int> wrong{0};
    std::vector<sa::Fiber> fibers;
    for (int vp = 0; vp < 2; ++vp)
      for (int i = 0; i < 10; ++i)
        fibers.push_back(sa::spawn(sa::SpawnOptions{.vproc = vp}, [&wrong, vp] {
          for (int k = 0; k < 100; ++k) {
            if (sa::this_fiber::vproc() != vp) ++wrong;
            if (k % 10 == 0) sa::this_fiber::sleep_for(std::chrono::microseconds(50));
            else sa::this_fiber::yield();
          }
        }));
    for (auto& f : fibers) f.join();
    CHECK(wrong == 0);
    CHECK_THROWS_AS(sa::spawn(sa::SpawnOptions{.vproc = 2}, [] {}), std::invalid_argument);
  });
}

TEST_CASE("each fiber keeps its own floating-point rounding mode across switches") {
  // The context switch (Boost.Context) saves and restores the FP control
  // words (MXCSR, x87).
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    int wrong = 0;
    auto body = [&wrong](int mode) {
      std::fesetround(mode);
      for (int i = 0; i < 100; ++i) {
        sa::this_fiber::yield();
        if (std::fegetround() != mode) ++wrong;
      }
      std::fesetround(FE_TONEAREST);
    };
    sa::Fiber up = sa::spawn([&] { body(FE_UPWARD); });
    sa::Fiber down = sa::spawn([&] { body(FE_DOWNWARD); });
    sa::Fiber near = sa::spawn([&] { body(FE_TONEAREST); });
    up.join();
    down.join();
    near.join();
    CHECK(wrong == 0);
  });
}
