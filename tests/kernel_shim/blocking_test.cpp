// ShimMode::on: a fiber blocked in a call announced with sa::blocking does
// not hold its VProc (I3), so programs that need every runnable fiber to run
// finish (I4), and no more activations run user code than VProcs (I1).

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <dirent.h>
#include <csignal>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cpu_hogs.hpp"
#include "scenarios.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using sa_test::deadlock_scenario;
using sa_test::Pipe;

TEST_CASE("I4: more fibers blocked in reads than VProcs, writer last, completes with the shim on") {
  const int vprocs = GENERATE(1, 2);
  sa_test::Watchdog wd{30s, "deadlock scenario, shim on"};
  sa::Runtime rt{{.vprocs = vprocs, .shim = sa::ShimMode::on}};
  long got = 0;
  rt.run([&] { got = deadlock_scenario(vprocs, /*annotate=*/true); });
  CHECK(got == vprocs + 8);
  CHECK(sa_test::fiber_failures() == 0);
  auto s = rt.stats().shim;
  INFO("blocked " << s.activation_blocked << " unblocked " << s.activation_unblocked << " perf " << s.perf);
  CHECK(s.activation_blocked >= 1);
  CHECK(s.activation_unblocked >= 1);
  CHECK(s.activations_high_water <= 4 * vprocs + 8);  // the default activation limit
  CHECK(s.handoffs >= 1);  // each handoff to a spare is measured
}

TEST_CASE("I4: the same with raw, unannounced read() calls completes with the shim on") {
  const int vprocs = GENERATE(1, 2);
  sa_test::Watchdog wd{30s, "deadlock scenario, raw reads, shim on"};
  sa::Runtime rt{{.vprocs = vprocs, .shim = sa::ShimMode::on}};
  long got = 0;
  rt.run([&] { got = deadlock_scenario(vprocs, /*annotate=*/false); });
  CHECK(got == vprocs + 8);
  CHECK(sa_test::fiber_failures() == 0);
  auto s = rt.stats().shim;
  INFO("blocked " << s.activation_blocked << " held " << s.held << " window p50 " << s.held_window_p50_us
                  << " us p99 " << s.held_window_p99_us << " us");
  CHECK(s.activation_blocked >= 1);
  CHECK(s.held >= 1);  // the woken readers held until a VProc took them back
  CHECK(s.activations_running <= vprocs);
  CHECK(s.handoff_detected_p50_us > 0);  // raw reads are measured as detected handoffs
}

TEST_CASE("a held activation keeps computing only once it has a processor again") {
  // Fibers block in raw reads, then compute for a while without calling
  // the runtime: they are signalled and held in the handler, not run beside
  // the spares.
  sa_test::Watchdog wd{30s, "held in the signal handler"};
  constexpr int vprocs = 2;
  sa::Runtime rt{{.vprocs = vprocs, .shim = sa::ShimMode::on}};
  sa_test::RunningSampler sampler([&] { return rt.stats().shim.activations_running; });
  rt.run([] {
    std::vector<Pipe> pipes(6);
    std::vector<sa::Fiber> fibers;
    std::atomic<long> spins{0};
    for (auto& p : pipes)
      fibers.push_back(sa::spawn([&p, &spins] {
        char c;
        SA_FIBER_CHECK(::read(p.fd[0], &c, 1) == 1);
        auto until = std::chrono::steady_clock::now() + 20ms;  // pure user code
        while (std::chrono::steady_clock::now() < until) spins.fetch_add(1, std::memory_order_relaxed);
      }));
    sa::this_fiber::sleep_for(20ms);
    for (auto& p : pipes) SA_FIBER_CHECK(::write(p.fd[1], "x", 1) == 1);
    for (auto& f : fibers) f.join();
    CHECK(spins > 0);
  });
  sampler.stop();
  auto s = rt.stats().shim;
  INFO("held " << s.held << " window p50 " << s.held_window_p50_us << " us p99 " << s.held_window_p99_us << " us");
  CHECK(s.held >= 1);
  CHECK(sampler.max() <= vprocs);
  CHECK(sa_test::fiber_failures() == 0);
}

TEST_CASE("an activation held while its fiber is inside the shim's own lock does not deadlock") {
  // The hold signal arrives just after a raw sleep ends, while the fiber is
  // most likely in rt.stats(), which takes the shim's pool lock: holding
  // must take no lock that interrupted code may hold, and the held one must
  // get a processor without that lock.
  sa_test::Watchdog wd{30s, "held inside the shim's lock"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  std::atomic<uint64_t> reads{0};
  rt.run([&] {
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 4; ++i)
      fibers.push_back(sa::spawn([&] {
        const auto until = std::chrono::steady_clock::now() + 1500ms;
        while (std::chrono::steady_clock::now() < until) {
          timespec ts{0, 100'000};
          ::nanosleep(&ts, nullptr);
          for (int k = 0; k < 50; ++k) reads.fetch_add(rt.stats().shim.activations_started > 0);
        }
      }));
    for (auto& f : fibers) f.join();
  });
  auto s = rt.stats().shim;
  INFO("held " << s.held << ", stats read " << reads.load() << " times");
  CHECK(s.held >= 1);
  CHECK(reads > 0);
}

TEST_CASE("CPU-hog processes preempting the activations are reported as processor_preempted") {
  sa_test::Watchdog wd{30s, "preemption notices"};
  constexpr int kHogs = 2;
  // Hog processes at the same priority, on all CPUs, forked before the runtime.
  std::vector<pid_t> hogs;
  for (int i = 0; i < kHogs; ++i) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      alarm(20);  // never outlive the test
      for (std::atomic<unsigned long> x{0};; x.fetch_add(1, std::memory_order_relaxed)) {
      }
    }
    hogs.push_back(pid);
  }
  uint64_t per_vproc_sum = 0, notices = 0;
  {
    sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
    rt.run([] {
      std::vector<sa::Fiber> fibers;
      for (int i = 0; i < 2; ++i)
        fibers.push_back(sa::spawn(sa::SpawnOptions{.vproc = i}, [] {
          auto until = std::chrono::steady_clock::now() + 300ms;
          while (std::chrono::steady_clock::now() < until) {
          }
        }));
      for (auto& f : fibers) f.join();
    });
    // The monitor runs SCHED_IDLE: while the hogs and the VProcs fill both
    // CPUs it does not run. Stop the hogs and let it read the records (on a
    // machine busy with other tests that may take a while).
    for (pid_t pid : hogs) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    for (int i = 0; i < 500 && rt.stats().total().preemptions == 0; ++i) std::this_thread::sleep_for(10ms);
    auto s = rt.stats();
    notices = s.shim.processor_preempted;
    per_vproc_sum = s.total().preemptions;
  }
  INFO("preemption notices " << notices);
  CHECK(notices > 0);  // 300 ms of compute beside hogs is preempted many times
  // stats() reads the VProcs' counts first, then the shim's; the monitor
  // may add notices in between (the loops still run beside the hogs).
  CHECK(per_vproc_sum > 0);
  CHECK(per_vproc_sum <= notices);
}

TEST_CASE("I4 baseline: the same program with the shim off is stuck when the bound expires") {
  auto r = sa_test::run_in_child(
      [] {
        sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::off}};
        rt.run([] { deadlock_scenario(2, /*annotate=*/false); });
      },
      3s);
  CHECK(r.timed_out);  // every VProc's kernel thread sits in read(); the writer never runs
}

TEST_CASE("the shim hands off VProcs blocked in nanosleep and behind a std::mutex") {
  sa_test::Watchdog wd{30s, "nanosleep and std::mutex"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  rt.run([] {
    // nanosleep: 6 fibers sleep 50 ms each in the kernel on 2 VProcs; a
    // compute fiber still gets to run meanwhile.
    std::atomic<bool> computed{false};
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 6; ++i)
      fibers.push_back(sa::spawn([] {
        timespec ts{0, 50'000'000};
        sa::blocking([&] { return ::nanosleep(&ts, nullptr); });
      }));
    sa::this_fiber::yield();
    auto t0 = std::chrono::steady_clock::now();
    fibers.push_back(sa::spawn([&] { computed = true; }));
    fibers.back().join();
    CHECK(computed);
    CHECK(std::chrono::steady_clock::now() - t0 < 45ms);  // did not wait for a sleeper
    for (auto& f : fibers)
      if (f.joinable()) f.join();

    // std::mutex held by a fiber that blocks: waiters block their kernel
    // threads in the futex, inside sa::blocking; the holder is released by a
    // pipe written by a fiber spawned last.
    std::mutex m;
    Pipe p;
    std::atomic<int> entered{0};
    std::vector<sa::Fiber> lockers;
    lockers.push_back(sa::spawn([&] {
      std::lock_guard g(m);
      char c;
      sa::blocking([&] { return ::read(p.fd[0], &c, 1); });
      ++entered;
    }));
    sa::this_fiber::yield();
    for (int i = 0; i < 4; ++i)
      lockers.push_back(sa::spawn([&] {
        sa::blocking([&] { m.lock(); });
        ++entered;
        m.unlock();
      }));
    sa::this_fiber::yield();
    lockers.push_back(sa::spawn([&] { SA_FIBER_CHECK(::write(p.fd[1], "x", 1) == 1); }));
    for (auto& f : lockers) f.join();
    CHECK(entered == 5);
    CHECK(sa_test::fiber_failures() == 0);
  });
}

TEST_CASE("the fallback monitor (no perf records) hands off VProcs blocked in announced and in raw reads") {
  const bool annotate = GENERATE(true, false);
  INFO((annotate ? "sa::blocking reads" : "raw reads"));
  sa_test::Watchdog wd{30s, "fallback monitor"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on, .use_perf = false}};
  long got = 0;
  rt.run([&] { got = deadlock_scenario(2, annotate); });
  CHECK(got == 10);
  CHECK(sa_test::fiber_failures() == 0);
  auto s = rt.stats().shim;
  CHECK_FALSE(s.perf);
  CHECK(s.activation_blocked >= 1);
  if (!annotate) CHECK(s.held >= 1);  // a raw read's activation wakes Lost and holds
}

TEST_CASE("the sysmon's periodic sweep alone finds blocks whose record wake-up never came") {
  // A record's wake-up is sometimes never delivered (block_monitor.hpp); with
  // SA_MONITOR_SWEEP_ONLY no record wakes the monitor at all, so every
  // handoff and every hold signal here comes from the sysmon's sweep.
  sa_test::Watchdog wd{30s, "monitor sweep only"};
  const sa_test::ScopedEnv sweep_only{"SA_MONITOR_SWEEP_ONLY", "1"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  long got = 0;
  rt.run([&] { got = deadlock_scenario(2, /*annotate=*/false); });
  CHECK(got == 10);
  CHECK(sa_test::fiber_failures() == 0);
  auto s = rt.stats().shim;
  INFO("blocked " << s.activation_blocked << " held " << s.held << " swept " << s.records_swept);
  CHECK(s.perf);
  CHECK(s.activation_blocked >= 1);
  CHECK(s.held >= 1);
  CHECK(s.records_swept >= 1);
  CHECK(s.activations_running <= 2);
}

TEST_CASE("with a CPU hog on every VProc's CPU, the sysmon hands off the blocks the starved monitor cannot reach") {
  // The monitor runs SCHED_IDLE: beside a hog on every CPU it hardly ever
  // gets one (handoffs took 11-20 ms before the sysmon). The sysmon, a
  // normal thread on a timer, must do the handoffs instead.
  sa_test::Watchdog wd{30s, "raw-read deadlock scenario beside CPU hogs"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  std::vector<int> cpus;
  for (const auto& v : rt.stats().vprocs) cpus.push_back(v.cpu);
  sa_hogs::CpuHogs hogs{static_cast<int>(cpus.size()), cpus};
  // Let the hogs reach their CPUs first: a scenario run while they are
  // still starting finds idle moments, and the idle runners (SCHED_IDLE,
  // pinned, no wake-up needed) then make the handoffs before the sysmon
  // (seen once in CI: 7 by the runners, 2 by the monitor, none by the
  // sysmon, the whole scenario in 20 ms).
  std::this_thread::sleep_for(100ms);
  long got = 0;
  rt.run([&] { got = deadlock_scenario(2, /*annotate=*/false); });
  hogs.stop();
  CHECK(got == 10);
  CHECK(sa_test::fiber_failures() == 0);
  auto s = rt.stats().shim;
  INFO("handoffs by monitor " << s.handoffs_by_monitor << ", by sysmon " << s.handoffs_by_sysmon << ", by runner "
                              << s.handoffs_by_runner << "; held " << s.held << " swept " << s.records_swept);
  CHECK(s.perf);
  CHECK(s.handoffs_by_sysmon >= 1);
  // (a spare counts its upcall when it runs; the idle runners get a CPU
  // only when a hog has none to run on it)
  CHECK(s.handoffs_by_monitor + s.handoffs_by_sysmon + s.handoffs_by_runner >= s.activation_blocked);
  CHECK(s.activations_running <= 2);
}

TEST_CASE("raw nanosleep and a raw std::mutex wait are caught without sa::blocking") {
  sa_test::Watchdog wd{30s, "raw nanosleep and std::mutex"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  rt.run([] {
    // 6 fibers sleep 50 ms each in the kernel on 2 VProcs; a fiber spawned
    // after them still runs long before they wake.
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 6; ++i)
      fibers.push_back(sa::spawn([] {
        timespec ts{0, 50'000'000};
        ::nanosleep(&ts, nullptr);
      }));
    sa::this_fiber::yield();
    auto t0 = std::chrono::steady_clock::now();
    sa::Fiber quick = sa::spawn([] {});
    quick.join();
    CHECK(std::chrono::steady_clock::now() - t0 < 45ms);
    for (auto& f : fibers) f.join();

    // A std::mutex held by a fiber blocked in a raw read; 4 fibers wait for
    // it in the kernel (futex); the writer is spawned last.
    std::mutex m;
    Pipe p;
    std::atomic<int> entered{0};
    std::vector<sa::Fiber> lockers;
    lockers.push_back(sa::spawn([&] {
      std::lock_guard g(m);
      char c;
      SA_FIBER_CHECK(::read(p.fd[0], &c, 1) == 1);
      ++entered;
    }));
    sa::this_fiber::yield();
    for (int i = 0; i < 4; ++i)
      lockers.push_back(sa::spawn([&] {
        std::lock_guard g(m);
        ++entered;
      }));
    sa::this_fiber::yield();
    lockers.push_back(sa::spawn([&] { SA_FIBER_CHECK(::write(p.fd[1], "x", 1) == 1); }));
    for (auto& f : lockers) f.join();
    CHECK(entered == 5);
    CHECK(sa_test::fiber_failures() == 0);
  });
}

TEST_CASE("quick calls through sa::blocking take the fast path") {
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  rt.run([] {
    for (int i = 0; i < 10'000; ++i) CHECK(sa::blocking([] { return ::getppid(); }) > 0);
    CHECK_THROWS_AS(sa::blocking([]() -> int { throw std::runtime_error("inside"); }), std::runtime_error);
    sa::blocking([] {});  // void
    CHECK(sa::blocking([] { return sa::blocking([] { return 7; }); }) == 7);  // nested
  });
  auto s = rt.stats().shim;
  CHECK(s.blocking_calls >= 10'000);
  CHECK(s.activation_blocked <= 10);  // getppid does not block; a rare preemption-free switch at most
}

TEST_CASE("after handoffs, the spares running a VProc run on its CPU") {
  // Spares skip the re-pin when they take over the CPU they last ran on
  // (Activation::pin): alternating blocks on two VProcs moves spares between
  // CPUs, so a stale pin would show here.
  sa_test::Watchdog wd{20s, "handoff pinning"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  rt.run([] {
    int cpu_of[2];
    for (int vp = 0; vp < 2; ++vp)
      sa::spawn(sa::SpawnOptions{.vproc = vp}, [&cpu_of, vp] { cpu_of[vp] = sched_getcpu(); }).join();
    Pipe pipe;
    int wrong = 0;
    for (int round = 0; round < 40; ++round) {
      const int vp = round % 2;
      sa::spawn(sa::SpawnOptions{.vproc = vp}, [&] {
        // B waits behind A on A's VProc: it runs once A's processor went to a spare.
        sa::Fiber b = sa::spawn(sa::SpawnOptions{.vproc = vp}, [&] {
          if (sched_getcpu() != cpu_of[vp]) ++wrong;
          SA_FIBER_CHECK(::write(pipe.fd[1], "x", 1) == 1);
        });
        char c;
        SA_FIBER_CHECK(sa::blocking([&] { return ::read(pipe.fd[0], &c, 1); }) == 1);
        b.join();
      }).join();
    }
    CHECK(wrong == 0);
  });
  CHECK(rt.stats().shim.activation_blocked >= 20);
}

// errno_now() reads errno afresh: code that used errno before a call that
// moved it to another kernel thread may reuse the old thread's errno
// address (glibc's __errno_location is a const function; blocking.hpp).
[[gnu::noinline]] int errno_now() { return errno; }

TEST_CASE("errno set in sa::blocking survives the fiber's move to another kernel thread") {
  sa_test::Watchdog wd{30s, "errno across sa::blocking"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  std::atomic<int> moved{0}, right{0};
  constexpr int kFibers = 6, kCalls = 5;
  rt.run([&] {
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < kFibers; ++i)
      fibers.push_back(sa::spawn([&] {
        for (int k = 0; k < kCalls; ++k) {
          const long tid = ::syscall(SYS_gettid);
          const int r = sa::blocking([] {
            timespec ts{0, 10'000'000};
            ::nanosleep(&ts, nullptr);  // long enough to lose the VProc
            errno = ENOTRECOVERABLE;    // nothing in the runtime sets this one
            return -1;
          });
          const int e = errno_now();
          moved += ::syscall(SYS_gettid) != tid;
          right += r == -1 && e == ENOTRECOVERABLE;
        }
      }));
    for (auto& f : fibers) f.join();
  });
  INFO(moved.load() << " of " << kFibers * kCalls << " calls came back on another kernel thread");
  CHECK(moved > 0);  // else this test tests nothing
  CHECK(right == kFibers * kCalls);
}

TEST_CASE("a fiber that parks or yields inside sa::blocking pauses the call; its VProc runs other fibers") {
  sa_test::Watchdog wd{30s, "parking inside sa::blocking"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  rt.run([] {
    sa::Mutex m;
    std::atomic<int> others{0};
    std::unique_lock held(m);
    // Bound to VProc 0 with the others, so they can only run while it waits.
    sa::Fiber caller = sa::spawn(sa::SpawnOptions{.vproc = 0}, [&] {
      const int r = sa::blocking([&] {
        timespec ts{0, 5'000'000};
        ::nanosleep(&ts, nullptr);       // loses the VProc: the pause moves the fiber
        sa::this_fiber::sleep_for(5ms);  // parks with a deadline
        sa::this_fiber::yield();
        std::lock_guard g(m);        // parks until main unlocks
        ::nanosleep(&ts, nullptr);  // and blocks in the kernel, announced again
        return 7;
      });
      SA_FIBER_CHECK(r == 7);
    });
    std::vector<sa::Fiber> fs;
    for (int i = 0; i < 4; ++i) fs.push_back(sa::spawn(sa::SpawnOptions{.vproc = 0}, [&] { ++others; }));
    for (auto& f : fs) f.join();
    CHECK(others == 4);
    held.unlock();
    caller.join();
  });
  CHECK(sa_test::fiber_failures() == 0);
}

TEST_CASE("an exhausted activation pool degrades, warns once, and still completes") {
  auto r = sa_test::run_in_child(
      [] {
        // 2 VProcs and at most 3 activations: one spare for 6 blocked calls.
        sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on, .max_activations = 3}};
        rt.run([] {
          std::vector<Pipe> pipes(6);
          std::vector<sa::Fiber> fibers;
          for (auto& p : pipes)
            fibers.push_back(sa::spawn([&p] {
              char c;
              sa::blocking([&] { return ::read(p.fd[0], &c, 1); });
            }));
          // The writer is a plain thread: the program does not need the pool.
          std::thread writer([&] {
            std::this_thread::sleep_for(200ms);
            for (auto& p : pipes) (void)!::write(p.fd[1], "x", 1);
          });
          for (auto& f : fibers) f.join();
          writer.join();
          auto s = sa::this_fiber::id();  // still a fiber
          (void)s;
        });
        auto s = rt.stats().shim;
        std::fprintf(stderr, "exhausted=%llu started=%d\n", static_cast<unsigned long long>(s.pool_exhausted),
                     s.activations_started);
      },
      20s);
  INFO(r.err);
  CHECK(r.exited);
  CHECK(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("all 3 activations are in use"));
  CHECK_THAT(r.err, Catch::Contains("started=3"));
  CHECK_FALSE(Catch::Contains("exhausted=0").match(r.err));
  // Warned once only.
  CHECK(r.err.find("activations are in use") == r.err.rfind("activations are in use"));
}

TEST_CASE("I1: activations running user code never outnumber VProcs") {
  const int vprocs = 2;
  sa_test::Watchdog wd{30s, "I1 sampling"};
  sa::Runtime rt{{.vprocs = vprocs, .shim = sa::ShimMode::on}};
  int max_running = 0, samples = 0, proc_over = 0;
  std::atomic<bool> done{false};
  // Sample from a plain thread while K fibers block and M compute.
  std::thread sampler([&] {
    while (!done) {
      auto s = rt.stats().shim;
      max_running = std::max(max_running, s.activations_running);
      // Cross-check: sa-act threads in state R according to /proc.
      int r_state = 0;
      if (DIR* d = ::opendir("/proc/self/task")) {
        while (dirent* e = ::readdir(d)) {
          if (e->d_name[0] == '.') continue;
          std::ifstream stat(std::string("/proc/self/task/") + e->d_name + "/stat");
          std::string line;
          std::getline(stat, line);
          auto open = line.find('('), close = line.rfind(')');
          if (open == std::string::npos || close == std::string::npos) continue;
          std::string name = line.substr(open + 1, close - open - 1);
          if (name.rfind("sa-act", 0) == 0 && close + 2 < line.size() && line[close + 2] == 'R') ++r_state;
        }
        ::closedir(d);
      }
      if (r_state > vprocs) ++proc_over;
      ++samples;
      std::this_thread::sleep_for(200us);
    }
  });
  rt.run([&] {
    constexpr int K = 6, M = 4;
    std::vector<Pipe> pipes(K);
    std::vector<sa::Fiber> fibers;
    for (auto& p : pipes)
      fibers.push_back(sa::spawn([&p] {
        char c;
        sa::blocking([&] { return ::read(p.fd[0], &c, 1); });
      }));
    std::atomic<long> work{0};
    for (int i = 0; i < M; ++i)
      fibers.push_back(sa::spawn([&] {
        auto until = std::chrono::steady_clock::now() + 300ms;
        while (std::chrono::steady_clock::now() < until) {
          ++work;
          if (work % 1000 == 0) sa::this_fiber::yield();
        }
      }));
    sa::this_fiber::sleep_for(300ms);
    for (auto& p : pipes) SA_FIBER_CHECK(::write(p.fd[1], "x", 1) == 1);
    for (auto& f : fibers) f.join();
    CHECK(work > 0);
    CHECK(sa_test::fiber_failures() == 0);
  });
  done = true;
  sampler.join();
  INFO("samples " << samples << ", /proc over the bound in " << proc_over);
  CHECK(samples > 10);
  CHECK(max_running <= vprocs);
  // /proc's R means runnable, not running: activations leaving their VProc,
  // spares and held ones just woken wait there too, more so under load, so
  // the kernel's view is reported, not asserted.
  WARN("/proc showed more than " << vprocs << " sa-act threads runnable in " << proc_over << " of " << samples
                                 << " samples");
}

TEST_CASE("shutdown right after blocked activations return leaks nothing and does not hang") {
  auto r = sa_test::run_in_child(
      [] {
        for (int round = 0; round < 5; ++round) {
          sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
          rt.run([] {
            std::vector<Pipe> pipes(4);
            std::vector<sa::Fiber> fibers;
            for (auto& p : pipes)
              fibers.push_back(sa::spawn([&p] {
                char c;
                sa::blocking([&] { return ::read(p.fd[0], &c, 1); });
              }));
            sa::this_fiber::sleep_for(20ms);  // let them block and be handed off
            for (auto& p : pipes) (void)!::write(p.fd[1], "x", 1);
            for (auto& f : fibers) f.join();
          });
        }
        // Every activation and monitor thread was joined: none named sa-*
        // is left (sanitizers may keep threads of their own).
        int threads = 0;
        if (DIR* d = ::opendir("/proc/self/task")) {
          while (dirent* e = ::readdir(d)) {
            if (e->d_name[0] == '.') continue;
            std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
            std::string name;
            std::getline(comm, name);
            if (name.rfind("sa-", 0) == 0) ++threads;
          }
          ::closedir(d);
        }
        std::fprintf(stderr, "sa_threads=%d\n", threads);
      },
      20s);
  INFO(r.err);
  CHECK(r.exited);
  CHECK(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("sa_threads=0"));
}
