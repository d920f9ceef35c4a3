// bench_spinlock: lock throughput when the kernel preempts lock holders
// (issue 5, I5).
//
// W = 1, 4 or 16 workers per CPU (4 and 16: more workers than CPUs, as in
// an application with a task per worker; at 16 a naive lock on kernel
// threads collapses under the hogs), pinned (threads) or bound to a VProc
// (fibers), loop for a fixed time: lock, a critical section of kCsWork steps, unlock, then
// kOutsideWork steps outside. Meanwhile H = 0, 2 or 4 CPU-hog processes at
// the same priority, spread over the same CPUs, make the kernel preempt
// workers, lock holders among them. Systems:
//   sa_spinlock       sa::Spinlock in fibers, ShimMode::on (preemption aware)
//   sa_spinlock_off   sa::Spinlock in fibers, ShimMode::off (plain TTAS: M:N baseline)
//   naive_tas         std::atomic<bool>::exchange spin, std::threads
//   naive_tas_mn      the same spin in fibers on a ShimMode::off runtime: a
//                     naive lock under plain M:N, the paper's setting. A
//                     waiter spins on its VProc even while the holder waits
//                     for that VProc (W = 4), so it gives up, uncounted, when
//                     the run's time is over: the run always ends.
//   ttas_yield        test-and-test-and-set, sched_yield() after 100 looks, std::threads
//   pthread_mutex     pthread_mutex_t (futex; waiters sleep), std::threads
//   no_lock           no lock at all, a counter per worker: the CPU cost of
//                     the work itself under the same hogs
//   sa_mutex          sa::Mutex in fibers, ShimMode::on
// Each (system, H) runs in a forked child so that a collapsed run cannot
// disturb the next one. A repetition runs every system once, back to back.
// Reported per (system, H), medians over repetitions:
//   acq_per_s         acquisitions per second, all workers
//   p99_acquire_us    99th percentile of lock() latency
//   wasted_ns_per_acq the process's CPU time per acquisition beyond that of
//                     `no_lock` (the same workers and hogs, each with a
//                     counter of its own and no lock): the CPU spent getting
//                     the lock, spinning on a holder that cannot progress
//                     above all.
//   cpus_used         the process's CPU time over the run's wall time: the
//                     share of the CPUs it got beside the hogs (the kernel
//                     shares a CPU per thread: W threads per CPU take more
//                     of it than sa's one activation per CPU, I1)
//   preempted_per_s, recoveries_per_s, donations_per_s (sa_spinlock only):
//                     kernel preemptions of its activations seen, waiters
//                     that stopped spinning on a holder off its CPU, and
//                     those that gave the holder their CPU, per second
// For experiments, two environment variables narrow the run (the ratios
// need sa_spinlock, pthread_mutex, the naive locks and no_lock):
//   SA_SPINLOCK_SYSTEMS=sa_spinlock,pthread_mutex   only these systems
//   SA_SPINLOCK_CELLS=w1_h2,w16_h2                  only these (W, H) cells
// Ratios at H = 2 (the goals), each the median over repetitions of the
// ratio within a repetition: speedup_vs_pthread_mutex and
// speedup_vs_naive_tas(_mn) = sa_spinlock acq/s over theirs (goals >= 1
// and >= 10); wasted_vs_naive_tas(_mn) = sa_spinlock's wasted_ns_per_acq
// over theirs (goal <= 0.1); acq_per_cpu_s_vs_pthread_mutex = sa_spinlock's
// acquisitions per CPU-second of the process over pthread_mutex's (the
// locking done with the CPU each got). Both naive baselines are reported: kernel
// threads, where only the kernel's preemption of a holder hurts, and M:N
// fibers, where a spinning fiber also keeps its VProc from the holder.

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <pthread.h>
#include <sa/sa.hpp>
#include <sched.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <type_traits>
#include <unistd.h>
#include <vector>

#include "cpu_hogs.hpp"
#include "harness.hpp"

using namespace sa::bench;

namespace {

constexpr const char* kBench = "spinlock";
constexpr int kCsWork = 300;       // steps inside the critical section
constexpr int kOutsideWork = 300;  // steps between sections

volatile unsigned long g_sink;

// work() is `steps` dependent arithmetic steps (~1 ns each).
inline void work(int steps) noexcept {
  unsigned long x = g_sink;
  for (int i = 0; i < steps; ++i) x = x * 6364136223846793005UL + 1442695040888963407UL;
  g_sink = x;
}

struct Result {
  double acq_per_s = 0;
  double p99_us = 0;
  double cpu_ns_per_acq = 0;  // process CPU time / acquisitions
  long counter = 0;
  long acquisitions = 0;
  // sa systems with the shim on (Stats): per second of the run.
  bool shim_counts = false;
  double preempted_per_s = 0;   // processor_preempted notices
  double recoveries_per_s = 0;  // waiters that stopped spinning on a holder off its CPU
  double donations_per_s = 0;   // ... and gave it their CPU
};

// Per-worker record: latencies of its acquisitions, in ns.
struct Worker {
  std::vector<uint32_t> lat;
  long n = 0;
};

// loop() is one worker's run until `stop_at`.
// A `lock` that returns bool may give up (false): the worker stops.
template <class Lock, class Unlock>
void loop(Worker& w, int64_t stop_at, long& counter, Lock lock, Unlock unlock) {
  while (now_ns() < stop_at) {
    const int64_t t0 = now_ns();
    if constexpr (std::is_same_v<decltype(lock()), bool>) {
      if (!lock()) return;
    } else {
      lock();
    }
    const int64_t t1 = now_ns();
    work(kCsWork);
    ++counter;
    unlock();
    work(kOutsideWork);
    if (w.lat.size() < w.lat.capacity()) w.lat.push_back(static_cast<uint32_t>(std::min<int64_t>(t1 - t0, UINT32_MAX)));
    ++w.n;
  }
}

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

Result summarise(std::vector<Worker>& workers, long counter, double secs, double cpu) {
  Result r;
  std::vector<uint32_t> all;
  for (auto& w : workers) {
    r.acquisitions += w.n;
    all.insert(all.end(), w.lat.begin(), w.lat.end());
  }
  r.counter = counter;
  r.acq_per_s = double(r.acquisitions) / secs;
  if (!all.empty()) {
    auto k = all.begin() + static_cast<long>(double(all.size() - 1) * 0.99);
    std::nth_element(all.begin(), k, all.end());
    r.p99_us = *k / 1000.0;
  }
  r.cpu_ns_per_acq = r.acquisitions ? cpu * 1e9 / double(r.acquisitions) : 0;
  return r;
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  ::sched_getaffinity(0, sizeof set, &set);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

// One run of `system` in this (child) process for `secs` seconds.
Result run_threads(const std::string& system, int per_cpu, double secs) {
  const auto cpus = allowed_cpus();
  const int n = static_cast<int>(cpus.size()) * per_cpu;
  std::atomic<bool> tas{false};
  pthread_mutex_t pm = PTHREAD_MUTEX_INITIALIZER;
  long counter = 0;
  std::vector<Worker> ws(static_cast<size_t>(n));
  for (auto& w : ws) w.lat.reserve(1'000'000);
  std::atomic<int> ready{0};
  const double cpu0 = cpu_seconds();
  int64_t start = 0;
  std::vector<std::thread> ts;
  std::atomic<int64_t> stop_at{0};
  for (int i = 0; i < n; ++i)
    ts.emplace_back([&, i] {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpus[static_cast<size_t>(i) % cpus.size()], &set);
      ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
      ready.fetch_add(1);
      while (stop_at.load() == 0) std::this_thread::yield();
      Worker& w = ws[static_cast<size_t>(i)];
      if (system == "naive_tas") {
        loop(w, stop_at, counter, [&] { while (tas.exchange(true, std::memory_order_acquire)) {} },
             [&] { tas.store(false, std::memory_order_release); });
      } else if (system == "ttas_yield") {
        loop(w, stop_at, counter,
             [&] {
               for (int looks = 0;; ++looks) {
                 if (!tas.load(std::memory_order_relaxed) && !tas.exchange(true, std::memory_order_acquire)) return;
                 if (looks >= 100) {
                   ::sched_yield();
                   looks = 0;
                 }
               }
             },
             [&] { tas.store(false, std::memory_order_release); });
      } else if (system == "pthread_mutex") {
        loop(w, stop_at, counter, [&] { ::pthread_mutex_lock(&pm); }, [&] { ::pthread_mutex_unlock(&pm); });
      } else {  // no_lock: the same work, a counter of its own
        long own = 0;
        loop(w, stop_at, own, [] {}, [] {});
      }
    });
  while (ready.load() < n) std::this_thread::yield();
  start = now_ns();
  stop_at.store(start + static_cast<int64_t>(secs * 1e9));
  for (auto& t : ts) t.join();
  const double elapsed = double(now_ns() - start) / 1e9;
  Result r = summarise(ws, counter, elapsed, cpu_seconds() - cpu0);
  if (system == "no_lock") r.counter = r.acquisitions;
  return r;
}

Result run_fibers(const std::string& system, int per_cpu, double secs) {
  const bool shim_on = system != "sa_spinlock_off" && system != "naive_tas_mn";
  sa::Runtime rt{{.vprocs = 0, .shim = shim_on ? sa::ShimMode::on : sa::ShimMode::off}};
  const int n = rt.vprocs() * per_cpu;
  sa::Spinlock sl;
  sa::Mutex m;
  std::atomic<bool> tas{false};
  long counter = 0;
  std::vector<Worker> ws(static_cast<size_t>(n));
  for (auto& w : ws) w.lat.reserve(1'000'000);
  double cpu = 0, elapsed = 0;
  sa::VProcStats at_start;  // the counters when the workers start
  rt.run([&] {
    at_start = rt.stats().total();
    const double cpu0 = cpu_seconds();
    const int64_t start = now_ns();
    const int64_t stop_at = start + static_cast<int64_t>(secs * 1e9);
    std::vector<sa::Fiber> fs;
    for (int i = 0; i < n; ++i)
      fs.push_back(sa::spawn(sa::SpawnOptions{.vproc = i % rt.vprocs()}, [&, i] {
        Worker& w = ws[static_cast<size_t>(i)];
        if (system == "sa_mutex") {
          loop(w, stop_at, counter, [&] { m.lock(); }, [&] { m.unlock(); });
        } else if (system == "naive_tas_mn") {
          auto lock = [&] {
            for (unsigned spins = 1; tas.exchange(true, std::memory_order_acquire); ++spins)
              if (spins % 1024 == 0 && now_ns() >= stop_at) return false;
            return true;
          };
          loop(w, stop_at, counter, lock, [&] { tas.store(false, std::memory_order_release); });
        } else {
          loop(w, stop_at, counter, [&] { sl.lock(); }, [&] { sl.unlock(); });
        }
      }));
    for (auto& f : fs) f.join();
    elapsed = double(now_ns() - start) / 1e9;
    cpu = cpu_seconds() - cpu0;
  });
  Result r = summarise(ws, counter, elapsed, cpu);
  if (shim_on && system == "sa_spinlock") {
    const sa::VProcStats t = rt.stats().total();
    r.shim_counts = true;
    r.preempted_per_s = double(t.preemptions - at_start.preemptions) / elapsed;
    r.recoveries_per_s = double(t.spin_recoveries - at_start.spin_recoveries) / elapsed;
    r.donations_per_s = double(t.spin_donations - at_start.spin_donations) / elapsed;
  }
  return r;
}

// in_child() runs one (system, hogs) measurement in a forked child, with the
// hogs as its siblings, and reads its Result back through a pipe.
Result in_child(const std::string& system, int per_cpu, int hogs, double secs) {
  Pipe p(kBench);
  sa_hogs::CpuHogs h(hogs, allowed_cpus());
  const pid_t pid = ::fork();
  if (pid < 0) fail(kBench, "fork failed");
  if (pid == 0) {
    ::close(p.fd[0]);
    const bool fibers = system.rfind("sa_", 0) == 0 || system == "naive_tas_mn";
    Result r = fibers ? run_fibers(system, per_cpu, secs) : run_threads(system, per_cpu, secs);
    [[maybe_unused]] auto w = ::write(p.fd[1], &r, sizeof r);
    ::_exit(0);
  }
  ::close(p.fd[1]);
  p.fd[1] = -1;
  Result r;
  const ssize_t got = ::read(p.fd[0], &r, sizeof r);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (got != sizeof r || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail(kBench, system + " with " + std::to_string(hogs) + " hogs: the child failed");
  if (r.counter != r.acquisitions)
    fail(kBench, system + ": counter " + std::to_string(r.counter) + " after " + std::to_string(r.acquisitions) +
                     " acquisitions (the lock did not exclude)");
  return r;
}

// selected() is true when `name` is in the comma-separated list in the
// environment variable `var`, or when `var` is unset or empty.
bool selected(const char* var, const std::string& name) {
  const char* list = std::getenv(var);
  if (!list || !*list) return true;
  const std::string l = std::string(",") + list + ",";
  return l.find("," + name + ",") != std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv, kBench);
  const double secs = args.pick(0.5, 0.2);
  const std::vector<std::string> systems = {"no_lock",      "sa_spinlock", "sa_spinlock_off", "naive_tas",
                                            "naive_tas_mn", "ttas_yield",  "pthread_mutex",   "sa_mutex"};
  for (int per_cpu : {1, 4, 16})
    for (int hogs : {0, 2, 4}) {
      const std::string suffix = "_w" + std::to_string(per_cpu) + "_h" + std::to_string(hogs);
      if (!selected("SA_SPINLOCK_CELLS", suffix.substr(1))) continue;
      std::vector<std::string> chosen;
      for (const auto& system : systems)
        if (selected("SA_SPINLOCK_SYSTEMS", system)) chosen.push_back(system);
      // Each repetition runs every chosen system once, back to back, so that
      // the ratios below compare runs a few seconds apart (this host drifts
      // between speed modes over minutes).
      std::vector<std::vector<Result>> runs(chosen.size());
      for (int rep = 0; rep < args.reps; ++rep)
        for (size_t i = 0; i < chosen.size(); ++i) runs[i].push_back(in_child(chosen[i], per_cpu, hogs, secs));
      auto index_of = [&](const std::string& name) -> int {
        for (size_t i = 0; i < chosen.size(); ++i)
          if (chosen[i] == name) return static_cast<int>(i);
        return -1;
      };
      auto med = [&](int i, auto field) {
        std::vector<double> v;
        for (const Result& r : runs[static_cast<size_t>(i)]) v.push_back(field(r));
        return median(v);
      };
      const auto acq = [](const Result& r) { return r.acq_per_s; };
      const auto cpu_ns = [](const Result& r) { return r.cpu_ns_per_acq; };
      const int base = index_of("no_lock");
      const double base_cpu_ns = base >= 0 ? med(base, cpu_ns) : 0;  // the work's own CPU per iteration
      for (size_t i = 0; i < chosen.size(); ++i) {
        const int k = static_cast<int>(i);
        const std::string& system = chosen[i];
        const double a = med(k, acq), c = med(k, cpu_ns);
        if (system == "no_lock") {
          report(kBench, system + suffix, "iter_per_s", a, "1/s");
          report(kBench, system + suffix, "cpu_ns_per_iter", c, "ns");
          continue;
        }
        report(kBench, system + suffix, "acq_per_s", a, "1/s");
        report(kBench, system + suffix, "p99_acquire_us", med(k, [](const Result& r) { return r.p99_us; }), "us");
        report(kBench, system + suffix, "wasted_ns_per_acq", std::max(0.0, c - base_cpu_ns), "ns");
        const auto cpus = [](const Result& r) { return r.acq_per_s * r.cpu_ns_per_acq / 1e9; };
        report(kBench, system + suffix, "cpus_used", med(k, cpus), "cpus");
        if (runs[i].front().shim_counts) {
          const auto preempted = [](const Result& r) { return r.preempted_per_s; };
          const auto recoveries = [](const Result& r) { return r.recoveries_per_s; };
          const auto donations = [](const Result& r) { return r.donations_per_s; };
          report(kBench, system + suffix, "preempted_per_s", med(k, preempted), "1/s");
          report(kBench, system + suffix, "recoveries_per_s", med(k, recoveries), "1/s");
          report(kBench, system + suffix, "donations_per_s", med(k, donations), "1/s");
        }
      }
      if (hogs != 2) continue;
      // Ratios: the median over repetitions of each repetition's ratio.
      const int sa = index_of("sa_spinlock");
      if (sa < 0) continue;
      // paired() is that median for value(result, repetition), or nothing
      // when no repetition gives `other` a positive value.
      auto paired = [&](int other, auto value) -> std::optional<double> {
        std::vector<double> v;
        for (size_t rep = 0; rep < static_cast<size_t>(args.reps); ++rep) {
          const double d = value(runs[static_cast<size_t>(other)][rep], rep);
          if (d > 0) v.push_back(value(runs[static_cast<size_t>(sa)][rep], rep) / d);
        }
        if (v.empty()) return std::nullopt;
        return median(v);
      };
      auto report_ratio = [&](const std::string& metric, std::optional<double> ratio) {
        if (ratio) report(kBench, "sa_spinlock" + suffix, metric, *ratio, "x");
      };
      const auto acq_of = [](const Result& r, size_t) { return r.acq_per_s; };
      const auto per_cpu_s = [](const Result& r, size_t) {
        return r.cpu_ns_per_acq > 0 ? 1e9 / r.cpu_ns_per_acq : 0.0;
      };
      // Wasted CPU against the same repetition's no_lock run.
      const auto wasted = [&](const Result& r, size_t rep) {
        return std::max(0.0, r.cpu_ns_per_acq - runs[static_cast<size_t>(base)][rep].cpu_ns_per_acq);
      };
      if (const int pm = index_of("pthread_mutex"); pm >= 0) {
        report_ratio("speedup_vs_pthread_mutex", paired(pm, acq_of));
        report_ratio("acq_per_cpu_s_vs_pthread_mutex", paired(pm, per_cpu_s));
      }
      for (const std::string naive_name : {"naive_tas", "naive_tas_mn"}) {
        const int naive = index_of(naive_name);
        if (naive < 0) continue;
        report_ratio("speedup_vs_" + naive_name, paired(naive, acq_of));
        if (base >= 0) report_ratio("wasted_vs_" + naive_name, paired(naive, wasted));
      }
    }
  return 0;
}
