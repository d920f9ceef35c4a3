// tour: the paper's scenarios (Anderson et al., SOSP 1991), each run twice in
// one process, with the kernel shim off (plain M:N user-level threads, one
// kernel thread per VProc) and on (scheduler activations), side by side.
//
//   1. Blocking I/O keeps the CPU busy. K = VProcs fibers sit in a raw,
//      unannotated ::read() on pipes while M compute fibers count loop
//      iterations for a fixed wall time. Shim off: each read() blocks the only
//      kernel thread of its VProc, so compute stops. Shim on: the shim sees
//      each block in the kernel's perf switch records and a spare activation
//      takes the VProc over, so compute keeps its K = 0 throughput.
//   2. The deadlock scenario (invariant I4). VProcs + 8 fibers block in raw
//      reads on pipes that only the fiber spawned last writes to. Shim on: it
//      completes. Shim off: every VProc's thread waits in read(), the writer
//      never runs. Both variants run in a forked child under a time bound, so
//      the tour itself can never hang.
//   3. Annotated vs detected: scenario 1 with the reads announced through
//      sa::blocking(), the runtime's own path (Go's entersyscall/exitsyscall).
//   4. Spinlocks under preemption (invariant I5). One CPU-hog process per
//      VProc's CPU makes the kernel preempt activations, lock holders among
//      them; fibers on every VProc take one lock in a loop for a fixed time.
//      A naive test-and-set lock spins on a preempted holder; sa::Spinlock
//      with the shim on sees the holder is off its CPU (the kernel's switch
//      records), parks the waiter and donates its CPU to the holder.
//   5. Page faults (the paper's memory experiment, in small). 64 fibers each
//      touch 8 pages of a sa::PagedRegion whose pager takes 500 µs (a far
//      memory or SSD read). Shim off: a fault blocks its VProc's only
//      kernel thread, so at most VProcs faults are in flight, and the pager
//      must run on threads of the region's own (as fibers they would
//      deadlock once every VProc faulted). Shim on: the fault is an
//      activation_blocked upcall, a spare runs the VProc, the pager is a
//      fiber, and the faults of all 64 fibers overlap. Then the same with
//      PagedFaultMode::park_fiber, in both shim modes: a fault comes back
//      to its own thread as SIGBUS and parks only the fiber.
//   The upcalls behind every shim-on cell (blocked, unblocked, held...).
// Every run ends: the blocked readers of 1 and 3 are released by a plain
// std::thread after kBlockFor, whatever the scheduler does.

#include <sa/sa.hpp>

#include "cpu_hogs.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// At least two VProcs, so "every VProc blocked" differs from "one blocked".
constexpr int kMinVProcs = 2;
// Compute fibers per VProc in scenarios 1 and 3 (M = this * VProcs).
constexpr int kComputePerVProc = 2;
// Compute fibers count iterations for this long; the readers are released
// later (kBlockFor), so they stay blocked for the whole window.
constexpr auto kComputeWindow = 150ms;
constexpr auto kBlockFor = 200ms;
// Each compute measurement is repeated, interleaved with the others, and the
// best kept: the run least disturbed by other processes on a shared machine.
constexpr int kRepeats = 3;
// Iterations between two yields of a compute fiber (tens of microseconds).
constexpr uint64_t kChunk = 20'000;
// One iteration is a step of Knuth's MMIX linear congruential generator: a
// serial dependency the compiler cannot fold away.
constexpr uint64_t kLcgMultiplier = 6364136223846793005ULL;
constexpr uint64_t kLcgIncrement = 1442695040888963407ULL;
// Scenario 2: readers beyond the VProc count (DESIGN.md, I4).
constexpr int kDeadlockExtraReaders = 8;
// Scenario 2: a child that has not finished by then is stuck; it is killed.
constexpr auto kStuckBound = 2s;
// Exit status of a deadlock child that failed (threw, or read short).
constexpr int kChildFailed = 3;

// Where the iterations' result goes, so the work is not optimised away.
std::atomic<uint64_t> g_sink{0};

// Pipe owns both ends of a pipe. Throws std::system_error if pipe2 fails.
struct Pipe {
  int read_end = -1, write_end = -1;
  Pipe() {
    int fd[2];
    if (::pipe2(fd, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    read_end = fd[0];
    write_end = fd[1];
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  ~Pipe() {
    ::close(read_end);
    ::close(write_end);
  }
};

// How a reader enters the kernel: a raw read() the runtime does not know
// about (detected), or one announced through sa::blocking (annotated).
enum class BlockVia { raw_read, annotated };

// read_byte() reads one byte from `fd`, retrying on EINTR; returns read()'s
// result. Blocks the kernel thread until a byte arrives (that is the point);
// with BlockVia::annotated and the shim on, the VProc is not lost meanwhile.
ssize_t read_byte(int fd, BlockVia via) {
  char byte;
  ssize_t n;
  int error;  // read inside the call: sa::blocking may return on another thread, with another errno
  auto call = [&] {
    const ssize_t r = ::read(fd, &byte, 1);
    error = errno;
    return r;
  };
  do {
    n = via == BlockVia::annotated ? sa::blocking(call) : call();
  } while (n < 0 && error == EINTR);
  return n;
}

// write_byte() writes one byte to `fd`; a pipe with room never blocks.
void write_byte(int fd) {
  if (::write(fd, "x", 1) != 1) std::perror("tour: write");
}

// count_until() runs chunks of kChunk iterations while `deadline` has not
// passed, yielding between chunks, and returns the iterations of the chunks
// it started in time. Never blocks the fiber or the kernel thread.
uint64_t count_until(Clock::time_point deadline, uint64_t seed) {
  uint64_t done = 0;
  while (Clock::now() < deadline) {
    for (uint64_t i = 0; i < kChunk; ++i) seed = seed * kLcgMultiplier + kLcgIncrement;
    done += kChunk;
    sa::this_fiber::yield();
  }
  g_sink.fetch_xor(seed, std::memory_order_relaxed);  // only its existence matters
  return done;
}

// ---------------------------------------------------------------- 1 and 3

struct ComputeRun {
  double it_per_ms = 0;  // compute throughput over kComputeWindow
  sa::ShimStats shim;    // what the kernel shim did during the run
};

// compute_run() starts a runtime with `vprocs` VProcs in `mode`, blocks
// `blocked` fibers in reads (reader i bound to VProc i % vprocs, so every
// VProc gets one) while kComputePerVProc * vprocs fibers count for
// kComputeWindow, and returns their throughput. Blocks the calling kernel
// thread for about kBlockFor.
ComputeRun compute_run(sa::ShimMode mode, int vprocs, int blocked, BlockVia via) {
  sa::Runtime rt{{.vprocs = vprocs, .shim = mode}};
  std::vector<Pipe> pipes(static_cast<size_t>(blocked));
  std::atomic<uint64_t> iterations{0};
  std::atomic<int> short_reads{0};

  const Clock::time_point start = Clock::now();
  // The release does not depend on the runtime: a plain kernel thread
  // (a jthread, joined on every way out).
  std::jthread releaser([&] {
    std::this_thread::sleep_until(start + kBlockFor);
    for (auto& p : pipes) write_byte(p.write_end);
  });

  rt.run([&] {
    std::vector<sa::Fiber> fibers;
    // Readers first: each is queued on its own VProc and blocks at once.
    for (int i = 0; i < blocked; ++i)
      fibers.push_back(sa::spawn(sa::SpawnOptions{.vproc = i % vprocs}, [&, i] {
        if (read_byte(pipes[static_cast<size_t>(i)].read_end, via) != 1) ++short_reads;
      }));
    const Clock::time_point deadline = start + kComputeWindow;
    for (int i = 0; i < kComputePerVProc * vprocs; ++i)
      fibers.push_back(sa::spawn([&, i] { iterations += count_until(deadline, static_cast<uint64_t>(i)); }));
    for (auto& f : fibers) f.join();
  });
  releaser.join();
  if (short_reads.load() != 0) std::fprintf(stderr, "tour: %d reads came back short\n", short_reads.load());

  const double window_ms = std::chrono::duration<double, std::milli>(kComputeWindow).count();
  return {static_cast<double>(iterations.load()) / window_ms, rt.stats().shim};
}

// keep_best() keeps in `best` whichever of `best` and `run` counted more.
void keep_best(ComputeRun& best, const ComputeRun& run) {
  if (run.it_per_ms >= best.it_per_ms) best = run;
}

// ---------------------------------------------------------------------- 2

// What a deadlock child sends back through its pipe when it completes.
struct DeadlockReport {
  double ms = 0;       // from the first spawn to the last join
  sa::ShimStats shim;  // what the kernel shim did
};
static_assert(std::is_trivially_copyable_v<DeadlockReport>, "sent as raw bytes");

enum class Outcome { completed, stuck, failed };

struct DeadlockRun {
  Outcome outcome = Outcome::failed;
  DeadlockReport report;  // valid when completed
};

// deadlock_scenario() spawns vprocs + kDeadlockExtraReaders fibers that block
// in raw reads, then (last) the fiber that writes to their pipes, and joins
// them all; returns true if every read got its byte. Runs in a fiber; blocks
// it until all are done, which with the shim off is never.
bool deadlock_scenario(int vprocs) {
  const int readers = vprocs + kDeadlockExtraReaders;
  std::vector<Pipe> pipes(static_cast<size_t>(readers));
  std::atomic<int> got{0};
  std::vector<sa::Fiber> fibers;
  for (int i = 0; i < readers; ++i)
    fibers.push_back(sa::spawn([&, i] {
      if (read_byte(pipes[static_cast<size_t>(i)].read_end, BlockVia::raw_read) == 1) ++got;
    }));
  sa::this_fiber::yield();  // give the readers the first turn on the VProcs
  fibers.push_back(sa::spawn([&] {
    for (auto& p : pipes) write_byte(p.write_end);
  }));
  for (auto& f : fibers) f.join();
  return got.load() == readers;
}

// deadlock_child() is the body of the forked child: it builds its own
// runtime (after the fork: the child has only the forking thread), runs the
// scenario and writes a DeadlockReport to `out`. Never returns.
[[noreturn]] void deadlock_child(sa::ShimMode mode, int vprocs, int out) {
  try {
    sa::Runtime rt{{.vprocs = vprocs, .shim = mode}};
    bool ok = false;
    const Clock::time_point t0 = Clock::now();
    rt.run([&] { ok = deadlock_scenario(vprocs); });
    DeadlockReport report;
    report.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    report.shim = rt.stats().shim;
    if (ok && ::write(out, &report, sizeof report) == static_cast<ssize_t>(sizeof report)) ::_exit(0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tour: deadlock child: %s\n", e.what());
  }
  ::_exit(kChildFailed);
}

// deadlock_run() runs the scenario in a forked child and waits for its
// report at most kStuckBound, then kills it with SIGKILL. Call it while no
// Runtime exists in this process (fork copies only the calling thread).
// Blocks the calling kernel thread for at most about kStuckBound.
DeadlockRun deadlock_run(sa::ShimMode mode, int vprocs) {
  Pipe report_pipe;
  std::fflush(nullptr);  // the child must not flush our buffered output again
  const pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) deadlock_child(mode, vprocs, report_pipe.write_end);

  DeadlockRun run;
  ::close(report_pipe.write_end);  // so a child that dies gives EOF
  report_pipe.write_end = -1;
  pollfd pfd{.fd = report_pipe.read_end, .events = POLLIN, .revents = 0};
  const Clock::time_point bound = Clock::now() + kStuckBound;
  int ready = 0;
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(bound - Clock::now());
    ready = ::poll(&pfd, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
    if (ready >= 0 || errno != EINTR) break;
  }
  if (ready == 0) {
    ::kill(pid, SIGKILL);
    run.outcome = Outcome::stuck;
  } else if (::read(report_pipe.read_end, &run.report, sizeof run.report) ==
             static_cast<ssize_t>(sizeof run.report)) {
    run.outcome = Outcome::completed;
  }
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) continue;
  return run;
}

// ----------------------------------------------------------------- output

// Scenario 4: lock-holding fibers per VProc, and how long they loop.
constexpr int kLockersPerVProc = 4;
constexpr auto kLockFor = 300ms;
// Steps of the LCG inside and outside the critical section.
constexpr int kInsideSteps = 300, kOutsideSteps = 300;

// NaiveSpinlock: test-and-set, nothing else: what a user-level thread
// package without kernel support would ship.
class NaiveSpinlock {
 public:
  void lock() noexcept {
    while (locked_.exchange(true, std::memory_order_acquire)) {
    }
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

struct LockRun {
  double acq_per_ms = 0;
  uint64_t recoveries = 0, donations = 0, preempted = 0;
};

// lock_run() is scenario 4 with lock type L: acquisitions per ms while hogs
// (one per VProc CPU, same priority) compete for the CPUs.
template <class L>
LockRun lock_run(sa::ShimMode mode, int vprocs) {
  sa::Runtime rt{{.vprocs = vprocs, .shim = mode}};
  std::vector<int> cpus;
  for (const auto& v : rt.stats().vprocs) cpus.push_back(v.cpu);
  sa_hogs::CpuHogs hogs(vprocs, cpus);
  L lock;
  std::atomic<uint64_t> total{0};
  const auto start = Clock::now();
  rt.run([&] {
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < kLockersPerVProc * vprocs; ++i)
      fibers.push_back(sa::spawn(sa::SpawnOptions{.vproc = i % vprocs}, [&] {
        uint64_t n = 0, x = g_sink;
        while (Clock::now() - start < kLockFor) {
          lock.lock();
          for (int k = 0; k < kInsideSteps; ++k) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
          lock.unlock();
          for (int k = 0; k < kOutsideSteps; ++k) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
          ++n;
        }
        g_sink.fetch_xor(x, std::memory_order_relaxed);
        total += n;
      }));
    for (auto& f : fibers) f.join();
  });
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  const sa::Stats s = rt.stats();
  return LockRun{.acq_per_ms = static_cast<double>(total) / ms,
                 .recoveries = s.total().spin_recoveries,
                 .donations = s.total().spin_donations,
                 .preempted = s.shim.processor_preempted};
}

// keep_best() keeps whichever lock run took more locks.
void keep_best(LockRun& best, const LockRun& run) {
  if (run.acq_per_ms > best.acq_per_ms) best = run;
}

// ---------------------------------------------------------------------- 5

constexpr int kFaultFibers = 64;
constexpr int kPagesPerFiber = 8;
constexpr auto kPagerLatency = 500us;

struct FaultRun {
  double ms = 0;       // first spawn -> last join
  bool exact = false;  // every page read back what its pager wrote
  sa::ShimStats shim;
};

// fault_run() is one run of scenario 5.
FaultRun fault_run(sa::ShimMode mode, int vprocs, sa::PagedFaultMode fault_mode = sa::PagedFaultMode::upcall) {
  FaultRun out;
  // Pager threads only where a fault blocks its VProc's only thread.
  const bool pager_fibers = mode == sa::ShimMode::on || fault_mode == sa::PagedFaultMode::park_fiber;
  // An activation per faulting fiber, plus the VProcs' and spares.
  sa::Runtime rt{{.vprocs = vprocs, .shim = mode, .max_activations = kFaultFibers + 4 * vprocs + 8}};
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t pages = std::size_t{kFaultFibers} * kPagesPerFiber;
  rt.run([&] {
    // sleep_for parks a pager fiber; on a pager thread it sleeps the thread.
    sa::PagedRegion region({.size = pages * page,
                            .pager =
                                [](std::size_t p, std::span<std::byte> b) {
                                  sa::this_fiber::sleep_for(kPagerLatency);
                                  b[0] = static_cast<std::byte>(p % 251 + 1);
                                },
                            .pager_threads = pager_fibers ? 0 : vprocs,
                            .fault_mode = fault_mode,
                            .name = "tour"});
    std::atomic<int> wrong{0};
    const auto t0 = Clock::now();
    std::vector<sa::Fiber> fibers;
    for (int f = 0; f < kFaultFibers; ++f)
      fibers.push_back(sa::spawn([&, f] {
        for (int i = 0; i < kPagesPerFiber; ++i) {
          const std::size_t p = static_cast<std::size_t>(f) * kPagesPerFiber + static_cast<std::size_t>(i);
          if (region.data()[p * page] != static_cast<std::byte>(p % 251 + 1)) wrong.fetch_add(1);
        }
      }));
    for (auto& f : fibers) f.join();
    out.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    out.exact = wrong.load() == 0;
  });
  out.shim = rt.stats().shim;
  return out;
}

// keep_best() keeps whichever fault run was faster; `exact` only if every
// run so far was.
void keep_best(FaultRun& best, const FaultRun& run) {
  const bool all_exact = (best.ms == 0 || best.exact) && run.exact;
  if (best.ms == 0 || run.ms < best.ms) best = run;
  best.exact = all_exact;
}

// allowed_cpus() is the number of CPUs in this process's affinity mask.
int allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return CPU_COUNT(&set);
}

// format() is printf's output as a string, cut at 127 bytes.
std::string format(const char* fmt, auto... args) {
  char buf[128];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

// throughput() is "<millions of iterations/ms>", with the share of `base`.
std::string throughput(double it_per_ms, double base) {
  return format("%5.2f M it/ms (%3.0f%%)", it_per_ms / 1e6, base > 0 ? 100.0 * it_per_ms / base : 0.0);
}

// deadlock_cell() says how a deadlock child ended.
std::string deadlock_cell(const DeadlockRun& r) {
  switch (r.outcome) {
    case Outcome::completed: return format("completed in %.1f ms", r.report.ms);
    case Outcome::stuck: return format("stuck (killed after %lld s)", static_cast<long long>(kStuckBound.count()));
    case Outcome::failed: break;
  }
  return "failed (see stderr)";
}

// Column widths of the main table; "what happened" is about kWhatWidth wide.
constexpr int kScenarioWidth = 30, kCellWidth = 26, kWhatWidth = 48;
constexpr int kSeparators = 3 * 3;  // " | " between four columns

// table_row() prints one row of the main table.
void table_row(const std::string& scenario, const std::string& off, const std::string& on, const char* what) {
  std::printf("%-*s | %-*s | %-*s | %s\n", kScenarioWidth, scenario.c_str(), kCellWidth, off.c_str(), kCellWidth,
              on.c_str(), what);
}

// latency() is "p50 / p99" in µs, or "-" when nothing was measured (a
// histogram's percentiles are bucket upper bounds, so never 0 when it has
// samples).
std::string latency(double p50, double p99) { return p50 > 0 ? format("%.0f / %.0f", p50, p99) : "-"; }

// upcall_row() prints what the shim did during one shim-on run.
void upcall_row(const char* row, const sa::ShimStats& s, int vprocs) {
  std::printf("%-*s | %7llu %9llu %5llu %9llu %7d | %-12s | %-12s\n", kScenarioWidth, row,
              static_cast<unsigned long long>(s.activation_blocked),
              static_cast<unsigned long long>(s.activation_unblocked), static_cast<unsigned long long>(s.held),
              static_cast<unsigned long long>(s.blocking_calls), std::max(0, s.activations_started - vprocs),
              latency(s.handoff_p50_us, s.handoff_p99_us).c_str(),
              latency(s.held_window_p50_us, s.held_window_p99_us).c_str());
}

}  // namespace

int main() {
  const int vprocs = std::max(kMinVProcs, allowed_cpus());
  const int blocked = vprocs;  // K: enough to take every VProc's kernel thread
  const int compute = kComputePerVProc * vprocs;
  const int deadlock_readers = vprocs + kDeadlockExtraReaders;
  const auto off = sa::ShimMode::off, on = sa::ShimMode::on;

  std::printf(
      "sa tour: %d VProcs, %d compute fibers, readers blocked for %lld ms.\n"
      "Scheduler activations: the kernel tells the user-level scheduler (by an \"upcall\") each time\n"
      "one of its threads blocks or wakes, so a fiber stuck in the kernel never costs the program a CPU.\n"
      "Linux has no such interface; sa's kernel shim builds it from perf switch records. Running...\n\n",
      vprocs, compute, static_cast<long long>(std::chrono::milliseconds(kBlockFor).count()));
  std::fflush(stdout);

  // Every Runtime below is destroyed before the next starts, so the forks
  // of scenario 2 happen in a single-threaded process.
  ComputeRun base_off, base_on, raw_off, raw_on, ann_off, ann_on;
  for (int r = 0; r < kRepeats; ++r) {
    keep_best(base_off, compute_run(off, vprocs, 0, BlockVia::raw_read));
    keep_best(base_on, compute_run(on, vprocs, 0, BlockVia::raw_read));
    keep_best(raw_off, compute_run(off, vprocs, blocked, BlockVia::raw_read));
    keep_best(raw_on, compute_run(on, vprocs, blocked, BlockVia::raw_read));
    keep_best(ann_off, compute_run(off, vprocs, blocked, BlockVia::annotated));
    keep_best(ann_on, compute_run(on, vprocs, blocked, BlockVia::annotated));
  }
  const DeadlockRun dead_off = deadlock_run(off, vprocs);
  const DeadlockRun dead_on = deadlock_run(on, vprocs);
  LockRun naive_off, naive_on, sa_off, sa_on;
  for (int r = 0; r < kRepeats; ++r) {
    keep_best(naive_off, lock_run<NaiveSpinlock>(off, vprocs));
    keep_best(naive_on, lock_run<NaiveSpinlock>(on, vprocs));
    keep_best(sa_off, lock_run<sa::Spinlock>(off, vprocs));
    keep_best(sa_on, lock_run<sa::Spinlock>(on, vprocs));
  }
  auto locks = [&](const LockRun& r) { return format("%6.0f locks/ms", r.acq_per_ms); };
  FaultRun faults_off, faults_on, park_off, park_on;
  for (int r = 0; r < kRepeats; ++r) {
    keep_best(faults_off, fault_run(off, vprocs));
    keep_best(faults_on, fault_run(on, vprocs));
    keep_best(park_off, fault_run(off, vprocs, sa::PagedFaultMode::park_fiber));
    keep_best(park_on, fault_run(on, vprocs, sa::PagedFaultMode::park_fiber));
  }
  constexpr int kFaults = kFaultFibers * kPagesPerFiber;
  auto faults = [&](const FaultRun& r) {
    return r.exact ? format("%6.1f ms (%3.0f faults/ms)", r.ms, kFaults / r.ms) : std::string("wrong page contents");
  };

  table_row("scenario", "shim off (plain M:N)", "shim on (activations)", "what happened");
  std::printf("%s\n", std::string(kScenarioWidth + 2 * kCellWidth + kWhatWidth + kSeparators, '-').c_str());
  table_row("1. compute, none blocked", throughput(base_off.it_per_ms, base_off.it_per_ms),
            throughput(base_on.it_per_ms, base_on.it_per_ms), "the baseline: every VProc computes");
  table_row(format("1. compute, %d in raw read()", blocked), throughput(raw_off.it_per_ms, base_off.it_per_ms),
            throughput(raw_on.it_per_ms, base_on.it_per_ms), "off: compute stops; on: it keeps going");
  table_row(format("2. %d readers, writer last", deadlock_readers), deadlock_cell(dead_off),
            deadlock_cell(dead_on), "off: the writer never gets a VProc; on: it does");
  table_row(format("3. compute, %d in sa::blocking", blocked), throughput(ann_off.it_per_ms, base_off.it_per_ms),
            throughput(ann_on.it_per_ms, base_on.it_per_ms), "the same, with the reads announced");
  table_row(format("4. naive spinlock, %d hogs", vprocs), locks(naive_off), locks(naive_on),
            "waiters spin on a preempted holder");
  table_row(format("4. sa::Spinlock, %d hogs", vprocs), locks(sa_off), locks(sa_on),
            format("on: %llu waits parked, %llu CPUs donated", static_cast<unsigned long long>(sa_on.recoveries),
                   static_cast<unsigned long long>(sa_on.donations))
                .c_str());
  const auto pager_us = static_cast<long long>(kPagerLatency.count());
  table_row(format("5. %d fibers fault, %lld us", kFaultFibers, pager_us), faults(faults_off), faults(faults_on),
            "off: a fault stalls its VProc; on: others run");
  table_row("5. the same, park_fiber mode", faults(park_off), faults(park_on), "a fault parks only its fiber");
  std::printf(
      "\nWith the shim off, a fiber blocked in the kernel keeps the only kernel thread of its VProc: %d blocked\n"
      "fibers stop all computing, and readers waiting for a writer that has no VProc left wait forever. With\n"
      "it on, the shim sees each block and a spare kernel thread (activation) takes the VProc over at once.\n"
      "Scenario 4: the kernel preempts activations in favour of CPU hogs, sometimes in a critical section;\n"
      "sa::Spinlock with the shim on reads each holder's on-CPU state from the kernel's switch records and\n"
      "stops spinning on one that is off its CPU (%llu preemptions seen in the last sa::Spinlock run).\n"
      "Scenario 5: %d page faults on memory whose pager takes %lld us. Shim off, at most %d are in flight (one\n"
      "per VProc); shim on, a faulting fiber costs only its activation, so all %d fibers wait at once. In\n"
      "park_fiber mode the kernel raises SIGBUS in the faulting thread instead of putting it to sleep, and\n"
      "the handler parks the fiber there: no kernel thread waits, no VProc changes hands, in either mode.\n",
      blocked, static_cast<unsigned long long>(sa_on.preempted), kFaults, pager_us, vprocs, kFaultFibers);

  std::printf("\nupcalls behind the shim-on column (blocking seen through %s):\n",
              raw_on.shim.perf ? "perf switch records" : "the /proc fallback monitor");
  // Literal headers: printf pads by bytes, and "µ" takes two.
  std::printf("%-*s | blocked unblocked  held announced  spares | handoff µs   | held window µs\n", kScenarioWidth,
              "row");
  std::printf("%-*s |                             calls started | p50 / p99    | p50 / p99\n", kScenarioWidth, "");
  upcall_row("1. compute, none blocked", base_on.shim, vprocs);
  upcall_row("1. compute, raw read()", raw_on.shim, vprocs);
  if (dead_on.outcome == Outcome::completed) upcall_row("2. readers, writer last", dead_on.report.shim, vprocs);
  upcall_row("3. compute, sa::blocking", ann_on.shim, vprocs);
  upcall_row("5. page faults", faults_on.shim, vprocs);
  std::printf(
      "blocked: a spare took a blocked activation's VProc (handoff: the kernel's record -> the spare running\n"
      "fibers). A raw read() that returns finds its VProc gone: its activation is held until a VProc hands it\n"
      "one (held window: user code it ran beside the spare; '-': it held itself before the monitor saw it\n"
      "wake). An announced call just gives its fiber back (unblocked). A page fault is blocked like a raw\n"
      "read(); once its page is in, its activation sleeps on, held, until a VProc hands it one. Shim off makes\n"
      "no such upcalls.\n");

  // The demo's claims; anything else is a bug worth a non-zero exit.
  const bool as_expected = dead_on.outcome == Outcome::completed && dead_off.outcome == Outcome::stuck;
  if (!as_expected) std::printf("\ntour: the deadlock scenario did not turn out as expected\n");
  const bool exact = faults_off.exact && faults_on.exact && park_off.exact && park_on.exact;
  if (!exact) std::printf("\ntour: a faulting fiber read a wrong page\n");
  return as_expected && exact ? 0 : 1;
}
