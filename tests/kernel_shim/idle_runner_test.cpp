// Idle runners (shim.hpp, design (i)): the handoff from the CPU a block
// vacated. These tests need CPUs with idle moments, so ctest runs them alone
// (RUN_SERIAL): beside other tests' processes a CPU turns contended, and the
// runner rightly stands down for the monitor. They ask for the runners with
// SA_IDLE_RUNNERS=1, since TSan builds leave them off by default.

#include <catch2/catch.hpp>

#include <sa/detail/runtime_core.hpp>
#include <sa/detail/vproc.hpp>
#include <sa/sa.hpp>
#include <sa/shim/idle_holder_lock.hpp>

#include <dirent.h>
#include <time.h>
#include <sched.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cpu_hogs.hpp"
#include "scenarios.hpp"
#include "shim_test_access.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using sa_test::deadlock_scenario;

namespace {

// task_stats() is /proc/self/task/*/stat of each thread whose name starts
// with `prefix`, split into fields; stat field k is at index k - 3.
std::vector<std::vector<std::string>> task_stats(const std::string& prefix) {
  std::vector<std::vector<std::string>> out;
  DIR* d = ::opendir("/proc/self/task");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream stat(std::string("/proc/self/task/") + e->d_name + "/stat");
    std::string line;
    std::getline(stat, line);
    const auto open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    if (line.compare(open + 1, prefix.size(), prefix) != 0) continue;
    std::istringstream rest(line.substr(close + 2));  // field 3 on
    out.emplace_back();
    for (std::string field; rest >> field;) out.back().push_back(field);
  }
  ::closedir(d);
  return out;
}

// policies() is the scheduling policy (stat field 41) of each thread whose
// name starts with `prefix`.
std::vector<int> policies(const std::string& prefix) {
  std::vector<int> out;
  for (const auto& f : task_stats(prefix))
    if (f.size() > 41 - 3) out.push_back(std::stoi(f[41 - 3]));
  return out;
}

// all_in_class_soon() is true once every thread named `prefix`* (at
// least one) has scheduling policy `policy`, within 2 s: a helper thread
// changes its class around its work.
bool all_in_class_soon(const std::string& prefix, int policy) {
  const auto until = std::chrono::steady_clock::now() + 2s;
  for (;;) {
    const std::vector<int> ps = policies(prefix);
    bool all = !ps.empty();
    for (int p : ps) all &= p == policy;
    if (all) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(1ms);
  }
}

// voluntary_switches() sums voluntary_ctxt_switches (/proc/self/task/*/status)
// over the threads whose name starts with `prefix`: each wait of theirs.
long voluntary_switches(const std::string& prefix) {
  long total = 0;
  DIR* d = ::opendir("/proc/self/task");
  if (!d) return -1;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream status(std::string("/proc/self/task/") + e->d_name + "/status");
    std::string line;
    bool ours = false;
    while (std::getline(status, line)) {
      if (line.rfind("Name:\t", 0) == 0) ours = line.compare(6, prefix.size(), prefix) == 0;
      if (ours && line.rfind("voluntary_ctxt_switches:", 0) == 0) total += std::stol(line.substr(24));
    }
  }
  ::closedir(d);
  return total;
}

// cpu_ticks() sums utime + stime (stat fields 14 and 15, in clock ticks)
// over the threads whose name starts with `prefix`.
long cpu_ticks(const std::string& prefix) {
  long total = 0;
  for (const auto& f : task_stats(prefix))
    if (f.size() > 15 - 3) total += std::stol(f[14 - 3]) + std::stol(f[15 - 3]);
  return total;
}

// rounds_until() runs `round` until it returns true, for at most 10 s,
// and returns how many rounds it ran. These tests repeat their scenario
// until the helper they look at (a runner, or the monitor) did the work.
template <class Round>
int rounds_until(Round round) {
  const auto until = std::chrono::steady_clock::now() + 10s;
  int rounds = 0;
  bool done = false;
  do {
    ++rounds;
    done = round();
  } while (!done && std::chrono::steady_clock::now() < until);
  return rounds;
}

}  // namespace

TEST_CASE("on a CPU with nothing else to run, its idle runner hands the blocked processor off") {
  // The runner runs SCHED_IDLE on the CPU the block vacates; on a quiet
  // CPU the kernel switches to it at once and it makes the handoff itself
  // (shim.hpp, design (i)). Beside other tests a CPU may have no idle
  // moment for a while, so rounds repeat (a few ms each) until one handoff
  // was the runner's, within a bound; each round must complete either way.
  const bool annotate = GENERATE(true, false);
  sa_test::Watchdog wd{30s, "idle runner handoffs"};
  const sa_test::ScopedEnv on{"SA_IDLE_RUNNERS", "1"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  sa::ShimStats s;
  const int rounds = rounds_until([&] {
    long got = 0;
    rt.run([&] { got = deadlock_scenario(2, annotate); });
    REQUIRE(got == 10);
    s = rt.stats().shim;
    return s.handoffs_by_runner != 0;
  });
  INFO("annotated " << annotate << ": " << rounds << " rounds; handoffs by runner " << s.handoffs_by_runner
                    << ", monitor " << s.handoffs_by_monitor << ", sysmon " << s.handoffs_by_sysmon
                    << "; runner boosts " << s.runner_boosts);
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(s.perf);
  CHECK(s.handoffs_by_runner >= 1);
  CHECK(s.activations_running <= 2);
  // The runners are back in the idle class after any pool growth they did
  // at normal class (NormalClassWhileRunner) or a lift by the sysmon (it
  // found one in a handoff of a block it had left for 50 µs: the runner
  // drops back at its next pass), or they would compete with the
  // activations for their CPUs.
  CHECK(all_in_class_soon("sa-run", SCHED_IDLE));
  // And every activation, some started by a runner or the monitor (idle
  // class) when the pool ran dry, runs at normal class.
  for (int p : policies("sa-act")) CHECK(p == SCHED_OTHER);
}

TEST_CASE("a runner's handoff takes no lock: it completes while another thread holds the pool lock") {
  // A runner runs SCHED_IDLE: preempted while holding a lock, it would keep
  // it until its CPU idles again, stalling every other user. So its handoff
  // pops the reserve spare without the pool lock, and the taker makes a
  // Lost activation's stream live (shim.hpp, design (i)). Here a plain
  // thread holds the pool lock while the fiber blocks: the other fiber
  // must still run, on the spare the runner woke, before it lets go. As in
  // the first test, rounds repeat until the runner (not the monitor, which
  // takes the pool lock) made the handoff, within a bound.
  const bool annotate = GENERATE(true, false);
  sa_test::Watchdog wd{30s, "runner handoff under the pool lock"};
  const sa_test::ScopedEnv on{"SA_IDLE_RUNNERS", "1"};
  sa::Runtime rt{{.vprocs = 1, .shim = sa::ShimMode::on}};
  int ran_under_lock = 0;
  sa::ShimStats s;
  const int rounds = rounds_until([&] {
    const uint64_t by_runner_before = rt.stats().shim.handoffs_by_runner;
    bool ran_while_locked = false;
    rt.run([&] {
      sa::shim::Shim& shim = sa::detail::current_vproc()->core.shim();
      // The runner's reserve: filled at start, refilled by the sysmon.
      for (int i = 0; i < 1000 && !sa::shim::ShimTestAccess::reserve_filled(shim, 0); ++i)
        sa::this_fiber::sleep_for(1ms);
      SA_FIBER_CHECK(sa::shim::ShimTestAccess::reserve_filled(shim, 0));
      sa_test::Pipe p;
      std::atomic<bool> locked{false}, other_ran{false};
      std::thread locker([&] {
        std::lock_guard g(sa::shim::ShimTestAccess::pool_lock(shim));
        locked = true;
        const auto give_up = std::chrono::steady_clock::now() + 500ms;
        while (!other_ran && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(100us);
        ran_while_locked = other_ran;
      });
      while (!locked) std::this_thread::yield();  // (the fiber keeps its VProc: nothing else to run yet)
      sa::Fiber other = sa::spawn([&] {
        other_ran = true;
        SA_FIBER_CHECK(::write(p.fd[1], "x", 1) == 1);
      });
      char c;
      const ssize_t n = annotate ? sa::blocking([&] { return ::read(p.fd[0], &c, 1); }) : ::read(p.fd[0], &c, 1);
      SA_FIBER_CHECK(n == 1);
      other.join();
      locker.join();
    });
    s = rt.stats().shim;
    if (ran_while_locked && s.handoffs_by_runner > by_runner_before) ++ran_under_lock;
    return ran_under_lock != 0;
  });
  INFO("annotated " << annotate << ": " << rounds << " rounds; handoffs by runner " << s.handoffs_by_runner
                    << ", monitor " << s.handoffs_by_monitor << ", sysmon " << s.handoffs_by_sysmon);
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(ran_under_lock >= 1);
}

TEST_CASE("after a runner's handoff the Lost activation's stream is live, so its wake-up reaches the monitor") {
  // A runner watches the activations of its quiet CPU with their monitor
  // streams paused. One it hands off in fiber code turns Lost and must hold
  // as soon as it wakes (I1): its switch-in record has to reach the
  // monitor, so the spare that takes over makes its stream live
  // (Shim::lost_handed_off) before it runs the processor's fibers. Here `b`
  // runs on that spare while `a` still sleeps in its read: the stream must
  // be live by then. Rounds repeat, within a bound, until one such handoff
  // was the runner's (the monitor makes the stream live itself).
  sa_test::Watchdog wd{30s, "Lost stream live"};
  const sa_test::ScopedEnv on{"SA_IDLE_RUNNERS", "1"};
  sa::Runtime rt{{.vprocs = 1, .shim = sa::ShimMode::on}};
  int lost_seen = 0, lost_paused = 0, by_runner = 0;
  const int rounds = rounds_until([&] {
    const uint64_t before = rt.stats().shim.handoffs_by_runner;
    std::atomic<sa::shim::Activation*> reader{nullptr};
    bool lost = false, live = false;
    sa_test::Pipe p;
    rt.run([&] {
      sa::Fiber a = sa::spawn([&] {
        reader = sa::shim::Activation::current();
        char c;
        SA_FIBER_CHECK(::read(p.fd[0], &c, 1) == 1);  // unannounced: the runner's to hand off
      });
      sa::Fiber b = sa::spawn([&] {
        while (!reader) sa::this_fiber::yield();  // on from here once `a`'s processor is handed off
        sa::shim::Activation* r = reader;
        lost = r->state() == sa::shim::ActivationState::Lost;
        live = r->stream_live();
        SA_FIBER_CHECK(::write(p.fd[1], "x", 1) == 1);
      });
      a.join();
      b.join();
    });
    const bool runner = rt.stats().shim.handoffs_by_runner > before;
    if (lost) {
      ++lost_seen;
      lost_paused += !live;
      by_runner += runner;
    }
    return lost && runner;
  });
  INFO(rounds << " rounds; Lost seen " << lost_seen << " (stream paused in " << lost_paused << "), of which after "
              << by_runner << " runner handoffs");
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(by_runner >= 1);
  CHECK(lost_paused == 0);
}

TEST_CASE("a runner naps while its processor's activation sleeps in runtime code, and hands off after") {
  // A fiber holding an sa::Spinlock runs as runtime code: a block there
  // keeps its VProc, and the runner leaves it. Its sched_yield loop was
  // then the only thing on that CPU and burnt it for the whole sleep; now
  // it naps. Once the fiber is back in its own code, its next block is
  // handed off as usual.
  sa_test::Watchdog wd{30s, "runner nap"};
  const sa_test::ScopedEnv on{"SA_IDLE_RUNNERS", "1"};
  sa::Runtime rt{{.vprocs = 1, .shim = sa::ShimMode::on}};
  long runner_ticks = -1;
  rt.run([&] {
    sa::Spinlock sl;
    const long t0 = cpu_ticks("sa-run");
    {
      std::lock_guard g(sl);
      ::usleep(300'000);  // asleep in runtime code: the runner leaves it
    }
    runner_ticks = cpu_ticks("sa-run") - t0;
  });
  long got = 0;
  rt.run([&] { got = deadlock_scenario(1, /*annotate=*/false); });
  const sa::ShimStats s = rt.stats().shim;
  INFO("runners' CPU during the 300 ms sleep: " << runner_ticks << " ticks of " << ::sysconf(_SC_CLK_TCK)
                                                << "/s; handoffs by runner " << s.handoffs_by_runner << ", monitor "
                                                << s.handoffs_by_monitor << ", sysmon " << s.handoffs_by_sysmon);
  CHECK(sa_test::fiber_failures() == 0);
  REQUIRE(s.perf);
  CHECK(runner_ticks >= 0);
  CHECK(runner_ticks * 10 < ::sysconf(_SC_CLK_TCK));  // under 0.1 s; spinning: the whole 0.3 s
  CHECK(got == 9);
  CHECK(s.handoffs_by_runner + s.handoffs_by_monitor + s.handoffs_by_sysmon >= 1);
}

TEST_CASE("a runner starved inside a handoff is lifted to normal class by the sysmon, then drops back") {
  // A runner preempted in the middle of a handoff (a wake-up on its CPU)
  // holds the activation's in_handoff, which keeps the sysmon and the
  // monitor out; beside a CPU-bound thread a SCHED_IDLE thread waits
  // seconds for its CPU. The sysmon, finding the block the runner left for
  // 50 µs still held by a runner, lifts it (Shim::boost_runner). Here the
  // handoff is held on the runner's behalf by the test, and let go once
  // the sysmon has lifted the runner; the block is then handed off. A
  // round can miss: a real handoff of the same activation still in flight
  // when the fiber marks it (it blocked just before, and runs the fiber in
  // the window before it holds) ends by clearing the mark. Rounds repeat,
  // within a bound, until one sees a boost.
  std::atomic<sa::shim::Shim*> shim{nullptr};
  std::atomic<sa::shim::Activation*> reader{nullptr};
  std::atomic<bool> go{false};
  std::atomic<uint64_t> boosts_seen{0};
  sa_test::Watchdog wd{30s, "runner boost", [&] {
                         std::fprintf(stderr, "reader %p, boosts seen %llu, go %d\n", static_cast<void*>(reader.load()),
                                      static_cast<unsigned long long>(boosts_seen.load()), static_cast<int>(go.load()));
                         if (shim) sa::shim::ShimTestAccess::dump(*shim);
                         sa_test::dump_threads();
                       }};
  const sa_test::ScopedEnv on{"SA_IDLE_RUNNERS", "1"};
  sa::Runtime rt{{.vprocs = 1, .shim = sa::ShimMode::on}};
  const int rounds = rounds_until([&] {
    reader = nullptr;
    go = false;
    sa_test::Pipe p;
    // Started outside the runtime: its creation is no block of ours.
    std::thread releaser([&] {
      while (!reader) std::this_thread::yield();
      const auto give_up = std::chrono::steady_clock::now() + 1s;
      while ((boosts_seen = rt.stats().shim.runner_boosts) == 0 && std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(1ms);
      sa::shim::ShimTestAccess::runner_in_handoff(*reader, false);
      go = true;
    });
    rt.run([&] {
      shim = &sa::detail::current_vproc()->core.shim();
      sa::Fiber a = sa::spawn([&] {
        sa::shim::Activation* self = sa::shim::Activation::current();
        SA_FIBER_CHECK(self != nullptr);
        sa::shim::ShimTestAccess::runner_in_handoff(*self, true);
        reader = self;
        char c;
        SA_FIBER_CHECK(::read(p.fd[0], &c, 1) == 1);  // unannounced: the runner's to hand off
      });
      sa::Fiber b = sa::spawn([&] {
        while (!go) sa::this_fiber::yield();  // runs once `a`'s processor is handed off
        SA_FIBER_CHECK(::write(p.fd[1], "x", 1) == 1);
      });
      a.join();
      b.join();
    });
    shim = nullptr;
    releaser.join();
    return boosts_seen != 0;
  });
  INFO(rounds << " rounds; runner boosts " << boosts_seen << "; handoffs by sysmon "
              << rt.stats().shim.handoffs_by_sysmon);
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(boosts_seen >= 1);
  // Back in the idle class at its next pass.
  CHECK(all_in_class_soon("sa-run", SCHED_IDLE));
}

TEST_CASE("IdleHolderLock: a normal thread kept waiting by an idle-class holder starved beside a CPU hog lifts it") {
  // The block monitor's lock (idle_holder_lock.hpp): a SCHED_IDLE thread
  // that ran alone on its CPU takes it and is preempted there by a CPU hog;
  // unlifted, it would get its CPU back in slivers 1.36 s apart
  // (bench_idle_class_wait), and its 20 ms of work under the lock would
  // take seconds. The waiter lifts it after 50 µs, so it finishes sharing
  // the CPU with the hog; it drops back to SCHED_IDLE itself.
  sa_test::Watchdog wd{30s, "IdleHolderLock"};
  const int cpu = sa_hogs::first_allowed_cpu();
  sa::shim::IdleHolderLock lock;
  std::atomic<int> phase{0};
  int policy_after = -1;
  std::thread holder([&] {
    SA_FIBER_CHECK(sa_hogs::idle_on(cpu));  // (a thread: Catch2's CHECK is not thread-safe)
    lock.set_idle_thread();
    sa_test::busy_for(100ms);  // alone on its CPU
    lock.lock();
    phase = 1;
    timespec t0{}, t{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    do ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);  // 20 ms of CPU time, under the lock
    while ((t.tv_sec - t0.tv_sec) * 1'000'000'000L + (t.tv_nsec - t0.tv_nsec) < 20'000'000L);
    lock.unlock();
    uint32_t seen = 0;
    lock.drop_lift(seen);
    policy_after = ::sched_getscheduler(0);
  });
  while (phase == 0) std::this_thread::yield();
  sa_hogs::CpuHogs hog{1, {cpu}};
  std::this_thread::sleep_for(5ms);  // the hog has preempted the holder
  const auto t0 = std::chrono::steady_clock::now();
  lock.lock();
  const auto waited = std::chrono::steady_clock::now() - t0;
  lock.unlock();
  holder.join();
  hog.stop();
  INFO("waited " << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() << " ms, lifts "
                 << lock.lifts());
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(lock.lifts() >= 1);
  CHECK(waited < 1s);  // unlifted: several slivers 1.36 s apart
  CHECK(policy_after == SCHED_IDLE);
}

TEST_CASE("with SA_IDLE_RUNNERS=0 no runner starts and the monitor hands off as before") {
  sa_test::Watchdog wd{30s, "no idle runners"};
  const sa_test::ScopedEnv off{"SA_IDLE_RUNNERS", "0"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  long got = 0;
  rt.run([&] { got = deadlock_scenario(2, /*annotate=*/true); });
  CHECK(got == 10);
  auto s = rt.stats().shim;
  INFO("handoffs by monitor " << s.handoffs_by_monitor << ", sysmon " << s.handoffs_by_sysmon);
  CHECK(s.activation_blocked >= 1);
  CHECK(s.handoffs_by_runner == 0);
  CHECK(s.handoffs_by_monitor + s.handoffs_by_sysmon >= 1);
  // The monitor waits in the idle class (it works at normal class, so that
  // it never holds a lock where a CPU-bound thread would starve it).
  CHECK(all_in_class_soon("sa-monitor", SCHED_IDLE));
}

TEST_CASE("without perf records the monitor polls at the idle class, without the pool lock, and lifts itself only to hand off") {
  // The fallback monitor looks at every activation each 50 µs while one
  // runs. It must do that without a lock (an idle-class thread holding one
  // would stall its other users beside a CPU-bound thread) and so without
  // lifting itself to normal class, which cost two sched_setscheduler
  // calls per look. One VProc computes for 100 ms while a test thread holds
  // the pool lock; the monitor polls on the other CPU meanwhile, in its idle
  // time (600-800 looks in 100 ms on a quiet machine; ctest runs this file
  // alone), so rounds repeat, within a bound, until it has looked 50 times.
  sa_test::Watchdog wd{30s, "fallback monitor at the idle class"};
  sa::Runtime rt{{.vprocs = 1, .shim = sa::ShimMode::on, .use_perf = false}};
  long polls = 0;
  const int rounds = rounds_until([&] {
    std::atomic<sa::shim::Shim*> shim{nullptr};
    std::atomic<bool> locked{false}, done{false};
    // Started outside the runtime: its creation and join are no blocks of ours.
    std::thread locker([&] {
      while (!shim) std::this_thread::yield();
      std::lock_guard g(sa::shim::ShimTestAccess::pool_lock(*shim));
      locked = true;
      while (!done) std::this_thread::sleep_for(1ms);
    });
    rt.run([&] {
      shim = &sa::detail::current_vproc()->core.shim();
      while (!locked) {
      }
      const long before = voluntary_switches("sa-monitor");
      sa_test::busy_for(100ms);  // no block: nothing to hand off
      polls += voluntary_switches("sa-monitor") - before;
      done = true;
    });
    locker.join();
    return polls >= 50;
  });
  const uint64_t lifts_busy = rt.stats().shim.monitor_lifts;
  long got = 0;
  rt.run([&] { got = deadlock_scenario(1, /*annotate=*/true); });
  const sa::ShimStats s = rt.stats().shim;
  INFO(rounds << " rounds; monitor waits while the fiber computed under the pool lock " << polls << ", lifts then "
              << lifts_busy << ", after the blocks " << s.monitor_lifts << "; handoffs by monitor "
              << s.handoffs_by_monitor << ", sysmon " << s.handoffs_by_sysmon);
  CHECK_FALSE(s.perf);
  CHECK(polls >= 50);  // it polled, the pool lock held by another thread
  CHECK(lifts_busy == 0);
  CHECK(got == 9);
  CHECK(s.handoffs_by_monitor >= 1);
  CHECK(s.monitor_lifts >= 1);  // to hand off
  CHECK(all_in_class_soon("sa-monitor", SCHED_IDLE));
}

TEST_CASE("beside a CPU hog on its CPU, a processor's stream goes live and the monitor hands off") {
  // The runner of a CPU that a hog shares gets it in scraps; the sysmon
  // sees the activation's long preemptions, marks the CPU contended, and
  // the stream goes live, so the monitor, on the free CPU, makes the
  // handoffs (shim.hpp, design (i)).
  sa_test::Watchdog wd{30s, "idle runner beside a hog"};
  const sa_test::ScopedEnv on{"SA_IDLE_RUNNERS", "1"};
  sa::Runtime rt{{.vprocs = 1, .shim = sa::ShimMode::on}};
  const int cpu = rt.stats().vprocs[0].cpu;
  REQUIRE(cpu >= 0);
  sa_hogs::CpuHogs hogs{1, {cpu}};
  sa::ShimStats s;
  const int rounds = rounds_until([&] {
    long got = 0;
    rt.run([&] {
      got = deadlock_scenario(1, /*annotate=*/true);
      // Compute beside the hog for a while: long preemptions to see.
      sa_test::busy_for(2ms);
    });
    REQUIRE(got == 9);
    s = rt.stats().shim;
    return s.contended_spells != 0 && s.handoffs_by_monitor != 0;
  });
  hogs.stop();
  INFO(rounds << " rounds; contended spells " << s.contended_spells << "; handoffs by runner "
              << s.handoffs_by_runner << ", monitor " << s.handoffs_by_monitor << ", sysmon "
              << s.handoffs_by_sysmon);
  CHECK(s.contended_spells >= 1);
  CHECK(s.handoffs_by_monitor >= 1);
  CHECK(s.activations_running <= 1);
  // The monitor (idle class) restocked the pool after its handoffs: the
  // activations it started left the idle class.
  for (int p : policies("sa-act")) CHECK(p == SCHED_OTHER);
}
