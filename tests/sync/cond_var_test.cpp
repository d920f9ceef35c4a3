// sa::CondVar with std::unique_lock<sa::Mutex>.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <deque>
#include <mutex>
#include <thread>

#include "test_support.hpp"

using namespace std::chrono_literals;

TEST_CASE("producer and consumers hand over every item through a CondVar") {
  const int vprocs = GENERATE(1, 2, 4);
  sa_test::Watchdog wd{30s, "condvar queue"};
  sa::Runtime rt{{.vprocs = vprocs}};
  rt.run([] {
    sa::Mutex m;
    sa::CondVar cv;
    std::deque<int> q;
    bool finished = false;
    long sum = 0;
    std::vector<sa::Fiber> consumers;
    for (int c = 0; c < 8; ++c)
      consumers.push_back(sa::spawn([&] {
        std::unique_lock lk(m);
        for (;;) {
          cv.wait(lk, [&] { return !q.empty() || finished; });
          if (q.empty()) return;
          sum += q.front();
          q.pop_front();
        }
      }));
    for (int i = 1; i <= 10'000; ++i) {
      {
        std::lock_guard g(m);
        q.push_back(i);
      }
      cv.notify_one();
      if (i % 100 == 0) sa::this_fiber::yield();
    }
    {
      std::lock_guard g(m);
      finished = true;
    }
    cv.notify_all();
    for (auto& c : consumers) c.join();
    CHECK(sum == 10'000L * 10'001L / 2);
  });
}

TEST_CASE("wait_for times out and relocks; wait_until with a predicate") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    sa::Mutex m;
    sa::CondVar cv;
    std::unique_lock lk(m);
    auto t0 = std::chrono::steady_clock::now();
    CHECK(cv.wait_for(lk, 20ms) == std::cv_status::timeout);
    CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
    CHECK(lk.owns_lock());
    bool flag = false;
    sa::Fiber setter = sa::spawn([&] {
      std::lock_guard g(m);
      flag = true;
      cv.notify_all();
    });
    CHECK(cv.wait_until(lk, std::chrono::steady_clock::now() + 5s, [&] { return flag; }));
    lk.unlock();
    setter.join();
  });
}

TEST_CASE("a notify that races a timeout is never lost") {
  sa_test::Watchdog wd{30s, "notify vs timeout"};
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    sa::Mutex m;
    sa::CondVar cv;
    int tokens = 0, consumed = 0;
    constexpr int kTokens = 2000;
    std::vector<sa::Fiber> waiters;
    for (int w = 0; w < 4; ++w)
      waiters.push_back(sa::spawn([&] {
        std::unique_lock lk(m);
        while (consumed < kTokens) {
          if (tokens > 0) {
            --tokens;
            ++consumed;
            continue;
          }
          cv.wait_for(lk, std::chrono::microseconds(50));  // short: timeouts race the notifies
        }
        cv.notify_all();
      }));
    for (int i = 0; i < kTokens; ++i) {
      {
        std::lock_guard g(m);
        ++tokens;
      }
      cv.notify_one();
      if (i % 16 == 0) sa::this_fiber::yield();
    }
    for (auto& w : waiters) w.join();
    CHECK(consumed == kTokens);
  });
}

TEST_CASE("notify from a thread outside the runtime wakes a fiber") {
  sa_test::Watchdog wd{30s, "outside notify"};
  sa::Runtime rt{{.vprocs = 2}};
  sa::Mutex m;
  sa::CondVar cv;
  bool ready = false;
  sa::Fiber f = rt.spawn([&] {
    std::unique_lock lk(m);
    cv.wait(lk, [&] { return ready; });
  });
  std::this_thread::sleep_for(10ms);
  {
    std::lock_guard g(m);
    ready = true;
  }
  cv.notify_one();
  f.join();
  CHECK(ready);
}
