// sa::Spinlock under kernel preemption (issue 5, I5): the kernel's run-state
// word, donation to a preempted holder, and the stress test with CPU hogs.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>
#include <sa/shim/activation.hpp>

#include <atomic>
#include <cstdio>
#include <functional>
#include <mutex>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cpu_hogs.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

// burn() keeps the calling thread on its CPU for about `d` of its own CPU time.
void burn(std::chrono::nanoseconds d) {
  timespec t0;
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
  for (;;) {
    timespec t;
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    if ((t.tv_sec - t0.tv_sec) * 1'000'000'000LL + (t.tv_nsec - t0.tv_nsec) >= d.count()) return;
  }
}

std::vector<int> vproc_cpus(const sa::Runtime& rt) {
  std::vector<int> cpus;
  for (const auto& v : rt.stats().vprocs) cpus.push_back(v.cpu);
  return cpus;
}

// holder_and_waiter() runs, in `rt`, `hold` in a fiber on VProc 0 that
// holds a Spinlock meanwhile, and a fiber on VProc 1 that takes the same
// lock once `hold` has started; returns how many of the two finished their
// critical section (2 unless something went wrong).
long holder_and_waiter(sa::Runtime& rt, const std::function<void()>& hold) {
  long n = 0;
  rt.run([&] {
    sa::Spinlock sl;
    std::atomic<bool> held{false};
    sa::Fiber holder = sa::spawn(sa::SpawnOptions{.vproc = 0}, [&] {
      std::lock_guard g(sl);
      held = true;
      hold();
      ++n;
    });
    sa::Fiber waiter = sa::spawn(sa::SpawnOptions{.vproc = 1}, [&] {
      while (!held) sa::this_fiber::yield();
      std::lock_guard g(sl);
      ++n;
    });
    holder.join();
    waiter.join();
  });
  return n;
}

}  // namespace

TEST_CASE("the run-state word tells running, preempted and sleeping apart") {
  sa_test::Watchdog wd{30s, "run-state word"};
  sa::Runtime rt{{.vprocs = 1, .shim = sa::ShimMode::on}};
  if (!rt.stats().shim.perf) {
    WARN("perf_event_open refused here: no run-state word to test");
    return;
  }
  sa_hogs::CpuHogs hog{1, vproc_cpus(rt)};  // shares VProc 0's CPU with its activation
  std::atomic<sa::shim::Activation*> act{nullptr};
  std::atomic<bool> done{false};
  std::atomic<int> seen[4] = {};
  auto seen_of = [&](sa::shim::CpuState s) { return seen[static_cast<int>(s)].load(); };
  std::thread observer([&] {
    while (!act.load()) std::this_thread::yield();
    while (!done.load()) {
      seen[static_cast<int>(act.load()->cpu_state())]++;
      std::this_thread::sleep_for(100us);
    }
  });
  rt.run([&] {
    act = sa::shim::Activation::current();
    // Burn (about half of it preempted by the hog) until the observer saw
    // both, and sleep raw (Sleeping) until it saw that. Bounded: on a
    // loaded machine the observer may get a CPU only now and then, and
    // sees the activation run only from the other CPU.
    const auto until = std::chrono::steady_clock::now() + 10s;
    do burn(50ms);
    while ((seen_of(sa::shim::CpuState::Running) == 0 || seen_of(sa::shim::CpuState::Preempted) == 0) &&
           std::chrono::steady_clock::now() < until);
    do ::usleep(50'000);
    while (seen_of(sa::shim::CpuState::Sleeping) == 0 && std::chrono::steady_clock::now() < until);
    done = true;
  });
  observer.join();
  CHECK(seen_of(sa::shim::CpuState::Running) > 0);
  CHECK(seen_of(sa::shim::CpuState::Preempted) > 0);
  CHECK(seen_of(sa::shim::CpuState::Sleeping) > 0);
}

TEST_CASE("a waiter parks instead of spinning while the holder sleeps in the kernel") {
  sa_test::Watchdog wd{30s, "waiter parks on a sleeping holder"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  if (!rt.stats().shim.perf) {
    WARN("perf_event_open refused here: no run-state word to test");
    return;
  }
  double cpu_during = 0;
  const long n = holder_and_waiter(rt, [&] {
    const double c0 = sa_test::process_cpu_seconds();
    ::usleep(300'000);  // unannounced: the activation sleeps holding the lock
    cpu_during = sa_test::process_cpu_seconds() - c0;
  });
  CHECK(n == 2);
  CHECK(rt.stats().total().spin_recoveries >= 1);
  // A spinning waiter would have burnt about 0.3 s of CPU meanwhile.
  CHECK(cpu_during < 0.15);
}

TEST_CASE("a waiter donates its CPU to a preempted holder, which then finishes") {
  sa_test::Watchdog wd{60s, "donation to a preempted holder"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  if (!rt.stats().shim.perf || rt.stats().vprocs[0].cpu == rt.stats().vprocs[1].cpu) {
    WARN("needs perf records and two CPUs");
    return;
  }
  // A hog on VProc 0's CPU, and the holder made SCHED_IDLE inside its
  // critical section: on its own CPU it is preempted nearly all the time. It
  // finishes promptly only if a waiter gives it VProc 1's CPU.
  sa_hogs::CpuHogs hog{1, {rt.stats().vprocs[0].cpu}};
  pid_t holder_tid = 0;
  const long n = holder_and_waiter(rt, [&] {
    holder_tid = static_cast<pid_t>(::syscall(SYS_gettid));
    sched_param idle{};
    SA_FIBER_CHECK(::sched_setscheduler(0, SCHED_IDLE, &idle) == 0);
    burn(20ms);  // about 1.5 s of wall time at SCHED_IDLE beside the hog
    sched_param normal{};
    ::sched_setscheduler(0, SCHED_OTHER, &normal);
  });
  CHECK(n == 2);
  CHECK(sa_test::fiber_failures() == 0);
  const auto s = rt.stats();
  CHECK(s.total().spin_donations >= 1);
  CHECK(s.shim.donations >= 1);
  // Every donation ends (by the unlock, or by the woken donor) before both
  // fibers are joined: the holder's activation is pinned to its own CPU
  // again, not left on the donor's.
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(::sched_getaffinity(holder_tid, sizeof set, &set) == 0);
  CHECK(CPU_COUNT(&set) == 1);
  CHECK(CPU_ISSET(s.vprocs[0].cpu, &set));
}

TEST_CASE("spinlock stress: exact count with CPU hogs preempting the activations") {
  const auto mode = GENERATE(sa::ShimMode::on, sa::ShimMode::off);
  sa_test::Watchdog wd{60s, "spinlock stress with hogs"};
  sa::Runtime rt{{.vprocs = 0, .shim = mode}};
  const int vprocs = rt.vprocs();
  sa_hogs::CpuHogs hogs{vprocs, vproc_cpus(rt)};  // one per VProc's CPU, same priority
  constexpr int kFibersPerVProc = 4;
  constexpr long kIterations = 3000;
  long counter = 0;
  const auto t0 = std::chrono::steady_clock::now();
  rt.run([&] {
    sa::Spinlock sl;
    std::vector<sa::Fiber> fibers;
    for (int v = 0; v < vprocs; ++v)
      for (int i = 0; i < kFibersPerVProc; ++i)
        fibers.push_back(sa::spawn(sa::SpawnOptions{.vproc = v}, [&] {
          for (long k = 0; k < kIterations; ++k) {
            std::lock_guard g(sl);
            burn(2us);  // a critical section long enough to be preempted in
            ++counter;
          }
        }));
    for (auto& f : fibers) f.join();
  });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(counter == long{vprocs} * kFibersPerVProc * kIterations);
  const auto s = rt.stats();
  std::fprintf(stderr,
               "spinlock stress (shim %s, %d hogs): %.2f s, processor_preempted %llu, recoveries %llu, "
               "donations %llu\n",
               mode == sa::ShimMode::on ? "on" : "off", hogs.size(), secs,
               static_cast<unsigned long long>(s.shim.processor_preempted),
               static_cast<unsigned long long>(s.total().spin_recoveries),
               static_cast<unsigned long long>(s.total().spin_donations));
  if (mode == sa::ShimMode::off) CHECK(s.total().spin_recoveries == 0);
}

TEST_CASE("a fiber that parks while holding a Spinlock is reported by id") {
  auto r = sa_test::run_in_child(
      [] {
        sa::Runtime rt{{.vprocs = 1}};
        rt.run([] {
          sa::Spinlock sl;
          std::lock_guard g(sl);
          sa::this_fiber::sleep_for(1ms);
        });
      },
      10s);
  CHECK_FALSE(r.timed_out);
  CHECK_FALSE((r.exited && r.status == 0));  // aborted (TSan turns the abort into an exit with its own status)
  CHECK_THAT(r.err, Catch::Contains("fiber 1 waited (park) while holding an sa::Spinlock"));
}
