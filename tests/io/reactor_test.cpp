// The reactor in the scheduler: idle VProcs sleep in io_uring without
// burning CPU, completions and new work wake them, and more fibers blocked
// in reads than VProcs still complete.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace std::chrono_literals;

TEST_CASE("reactor: an idle runtime with reactors sleeping uses no CPU, and I/O wakes it") {
  sa_test::Watchdog wd{20s, "reactor idle"};
  sa::Runtime rt{{.vprocs = 2}};
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  std::atomic<bool> parked{false};
  std::atomic<int> got{0};
  // One fiber per VProc installs its reactor; one of them stays parked in a
  // read (an operation in flight) through the idle period.
  sa::Fiber touch = rt.spawn(sa::SpawnOptions{.vproc = 1}, [] { sa::io::usleep(0); pollfd p{0, 0, 0}; sa::io::poll(&p, 1, 1); });
  touch.join();
  sa::Fiber reader = rt.spawn(sa::SpawnOptions{.vproc = 0}, [&] {
    char b;
    parked = true;
    got = static_cast<int>(sa::io::read(fds[0], &b, 1));
  });
  while (!parked) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(50ms);  // let the VProcs finish searching and sleep
  const double cpu0 = sa_test::process_cpu_seconds();
  std::this_thread::sleep_for(300ms);
  const double cpu = sa_test::process_cpu_seconds() - cpu0;
  INFO("CPU over 300 ms idle: " << cpu * 1000 << " ms");
  CHECK(cpu < 0.015);  // < 5% of one CPU
  CHECK(got == 0);
  REQUIRE(::write(fds[1], "!", 1) == 1);  // a plain thread's write wakes the sleeping VProc
  reader.join();
  CHECK(got == 1);
  // New work from outside wakes a VProc that sleeps in io_uring_enter.
  std::atomic<int> ran{0};
  for (int i = 0; i < 50; ++i) {
    sa::Fiber f = rt.spawn([&] { ++ran; });
    f.join();
    std::this_thread::sleep_for(1ms);
  }
  CHECK(ran == 50);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_CASE("reactor: more fibers blocked in reads than VProcs, writer started last, all complete") {
  const int vprocs = GENERATE(1, 2);
  sa_test::Watchdog wd{20s, "reactor progress"};
  sa::Runtime rt{{.vprocs = vprocs}};
  rt.run([] {
    constexpr int kReaders = 64;
    std::vector<std::array<int, 2>> pipes(kReaders);
    for (auto& p : pipes) REQUIRE(::pipe2(p.data(), O_CLOEXEC) == 0);
    std::atomic<int> sum{0};
    std::vector<sa::Fiber> readers;
    for (int i = 0; i < kReaders; ++i)
      readers.push_back(sa::spawn([&, i] {
        int v = 0;
        if (sa::io::read(pipes[static_cast<std::size_t>(i)][0], &v, sizeof v) == sizeof v) sum += v;
      }));
    sa::this_fiber::sleep_for(10ms);
    sa::Fiber writer = sa::spawn([&] {
      for (int i = 0; i < kReaders; ++i) {
        const int v = i + 1;
        CHECK(sa::io::write(pipes[static_cast<std::size_t>(i)][1], &v, sizeof v) == sizeof v);
      }
    });
    writer.join();
    for (auto& f : readers) f.join();
    CHECK(sum == kReaders * (kReaders + 1) / 2);
    for (auto& p : pipes) {
      ::close(p[0]);
      ::close(p[1]);
    }
  });
}

TEST_CASE("reactor: many timed operations expire and the ring drains") {
  sa_test::Watchdog wd{20s, "reactor timeouts"};
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    std::atomic<int> timed_out{0};
    std::vector<sa::Fiber> fs;
    for (int i = 0; i < 500; ++i)
      fs.push_back(sa::spawn([&, i] {
        char b;
        if (sa::io::read(fds[0], &b, 1, sa::io::deadline_after(std::chrono::milliseconds(5 + i % 20))) == -1 &&
            errno == ETIMEDOUT)
          ++timed_out;
      }));
    for (auto& f : fs) f.join();
    CHECK(timed_out == 500);
    ::close(fds[0]);
    ::close(fds[1]);
  });
}

TEST_CASE("reactor: a fiber whose writes all complete at once still lets its VProc's timers fire") {
  sa_test::Watchdog wd{20s, "reactor inline completions"};
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    // A plain thread drains the pipe, so every write finds room: each one
    // completes inline and the writing fiber, alone on the VProc, would
    // never switch if nothing made it.
    std::thread drain([&] {
      char buf[4096];
      while (::read(fds[0], buf, sizeof buf) > 0) {
      }
    });
    std::atomic<bool> woke{false};
    sa::Fiber sleeper = sa::spawn([&] {
      sa::this_fiber::sleep_for(5ms);
      woke = true;
    });
    long writes = 0;
    while (!woke) {
      REQUIRE(sa::io::write(fds[1], "x", 1) == 1);
      ++writes;
    }
    sleeper.join();
    CHECK(writes > 0);
    ::close(fds[1]);
    drain.join();
    ::close(fds[0]);
  });
}

TEST_CASE("reactor: operations that complete inline or park, with and without deadlines, lose and repeat nothing") {
  // Pairs of fibers ping-pong sequence numbers over socketpairs. Alone on a
  // VProc a fiber submits and reaps its own operation (OpState::Inline) and
  // wakes its peer from there; with others ready it parks (InKernel). Every
  // third read has a deadline that has passed already: it either returns
  // data or fails with ETIMEDOUT having consumed nothing. With the shim on
  // too: the reactor's calls then run in RuntimeSections.
  const int vprocs = GENERATE(1, 2);
  const sa::ShimMode shim = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  INFO((shim == sa::ShimMode::on ? "shim on" : "shim off"));
  sa_test::Watchdog wd{60s, "reactor inline completions with deadlines"};
  sa::Runtime rt{{.vprocs = vprocs, .shim = shim}};
  rt.run([] {
    constexpr int kPairs = 4;
    constexpr uint32_t kRounds = 3000;
    std::atomic<long> timed_out{0};
    // read_u32() reads one 4-byte number, retrying reads that timed out.
    auto read_u32 = [&](int fd, uint32_t& round, uint32_t& v) {
      std::size_t got = 0;
      while (got < sizeof v) {
        const bool expired = ++round % 3 == 0;
        const sa::io::Deadline dl = expired ? sa::io::Clock::now() - 1ms : sa::io::deadline_after(10s);
        const ssize_t n = sa::io::read(fd, reinterpret_cast<char*>(&v) + got, sizeof v - got, dl);
        if (n < 0 && errno == ETIMEDOUT && expired) {
          ++timed_out;
          continue;
        }
        if (n <= 0) return false;
        got += static_cast<std::size_t>(n);
      }
      return true;
    };
    std::vector<sa::Fiber> fs;
    std::vector<std::array<int, 2>> socks(kPairs);
    for (auto& s : socks) REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s.data()) == 0);
    for (int p = 0; p < kPairs; ++p) {
      const int a = socks[static_cast<std::size_t>(p)][0], b = socks[static_cast<std::size_t>(p)][1];
      fs.push_back(sa::spawn([=, &read_u32] {
        uint32_t round = 0;
        for (uint32_t i = 0; i < kRounds; ++i) {
          SA_FIBER_CHECK(sa::io::write(a, &i, sizeof i) == sizeof i);
          uint32_t back = 0;
          SA_FIBER_CHECK(read_u32(a, round, back));
          SA_FIBER_CHECK(back == i + 1);
        }
      }));
      fs.push_back(sa::spawn([=, &read_u32] {
        uint32_t round = 1;
        for (uint32_t i = 0; i < kRounds; ++i) {
          uint32_t v = 0;
          SA_FIBER_CHECK(read_u32(b, round, v));
          SA_FIBER_CHECK(v == i);
          const uint32_t next = v + 1;
          SA_FIBER_CHECK(sa::io::write(b, &next, sizeof next) == sizeof next);
        }
      }));
    }
    for (auto& f : fs) f.join();
    CHECK(sa_test::fiber_failures() == 0);
    INFO("reads that timed out and were retried: " << timed_out.load());
    for (auto& s : socks) {
      ::close(s[0]);
      ::close(s[1]);
    }
  });
}
