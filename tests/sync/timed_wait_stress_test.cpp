// Stress: short timed waits of every kind (sleep, CondVar::wait_for,
// Mutex::try_lock_for, Semaphore::try_acquire_for, Event::wait_for) mixed
// with the notifies, unlocks, releases and sets that race their deadlines, on every VProc, with the
// shim off and on. Deadlines of a few microseconds expire while their
// fibers park, in the very pick that switches away from them: the case that
// once resumed a fiber on its stale context (timer_test.cpp).

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

// A small deterministic generator per fiber (xorshift64*).
struct Rng {
  uint64_t s;
  uint32_t next() noexcept {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return static_cast<uint32_t>((s * 0x2545F4914F6CDD1DULL) >> 32);
  }
  std::chrono::microseconds short_wait() noexcept { return std::chrono::microseconds(next() % 20); }
};

}  // namespace

TEST_CASE("short timed waits of every kind racing their wake-ups keep exact counts") {
  const sa::ShimMode shim = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  INFO((shim == sa::ShimMode::on ? "shim on" : "shim off"));
  sa_test::Watchdog wd{60s, "timed-wait stress"};
  static constexpr int kFibers = 32, kOps = 4000, kPermits = 3;
  sa::Runtime rt{{.vprocs = 2, .shim = shim}};
  rt.run([] {
    sa::Mutex m;
    sa::CondVar cv;
    sa::Semaphore sem{kPermits};
    sa::Event event;
    std::atomic<long> event_seen{0};
    long counter = 0;  // under m
    long tokens = 0;   // under m: produced and not yet consumed
    std::atomic<long> locked{0}, produced{0}, consumed{0}, timeouts{0};
    std::atomic<int> inside{0}, most_inside{0};
    std::atomic<bool> stop{false};
    // A thread outside the runtime notifies and releases too.
    std::thread outside([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        {
          std::lock_guard g(m);
          ++tokens;
        }
        produced.fetch_add(1, std::memory_order_relaxed);
        cv.notify_one();
        std::this_thread::sleep_for(50us);
      }
    });
    std::vector<sa::Fiber> fibers;
    for (int f = 0; f < kFibers; ++f)
      fibers.push_back(sa::spawn([&, f] {
        Rng rng{0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(f + 1)};
        for (int i = 0; i < kOps; ++i) {
          switch (rng.next() % 8) {
            case 0:
              sa::this_fiber::sleep_for(rng.short_wait() + 1us);
              break;
            case 1:
              if (m.try_lock_for(rng.short_wait())) {
                ++counter;
                m.unlock();
                locked.fetch_add(1, std::memory_order_relaxed);
              } else {
                timeouts.fetch_add(1, std::memory_order_relaxed);
              }
              break;
            case 2: {
              std::unique_lock lk(m);
              if (cv.wait_for(lk, rng.short_wait(), [&] { return tokens > 0; })) {
                --tokens;
                consumed.fetch_add(1, std::memory_order_relaxed);
              } else {
                timeouts.fetch_add(1, std::memory_order_relaxed);
              }
              break;
            }
            case 3: {
              {
                std::lock_guard g(m);
                ++tokens;
              }
              produced.fetch_add(1, std::memory_order_relaxed);
              if (rng.next() % 2) cv.notify_one();
              else cv.notify_all();
              break;
            }
            case 4:
              if (sem.try_acquire_for(rng.short_wait())) {
                const int now = inside.fetch_add(1) + 1;
                int seen = most_inside.load();
                while (now > seen && !most_inside.compare_exchange_weak(seen, now)) {
                }
                sa::this_fiber::yield();
                inside.fetch_sub(1);
                sem.release();
              } else {
                timeouts.fetch_add(1, std::memory_order_relaxed);
              }
              break;
            case 6:
              if (event.wait_for(rng.short_wait())) event_seen.fetch_add(1, std::memory_order_relaxed);
              else timeouts.fetch_add(1, std::memory_order_relaxed);
              break;
            case 7:
              if (rng.next() % 2) event.set();
              else event.reset();
              break;
            default:
              sa::this_fiber::yield();
          }
        }
      }));
    for (auto& f : fibers) f.join();
    stop = true;
    outside.join();
    std::lock_guard g(m);
    INFO("locked " << locked << " produced " << produced << " consumed " << consumed << " timeouts " << timeouts);
    CHECK(counter == locked.load());
    CHECK(tokens == produced.load() - consumed.load());
    CHECK(most_inside.load() <= kPermits);
    CHECK(most_inside.load() >= 1);
    CHECK(timeouts.load() >= 1);  // some deadlines really expired
    CHECK(event_seen.load() >= 1);
  });
  CHECK(sa_test::fiber_failures() == 0);
}
