// bench_handoff: how fast a blocked fiber's processor goes to another fiber,
// seen from the application, and what announcing a call costs when it does
// not block.
//
//   sa_annotated  On a 1-VProc runtime with ShimMode::on, fiber A (bound to
//                 VProc 0) spawns fiber B (bound to VProc 0, so B waits in
//                 the ready queue behind A), reads t0 = steady_clock and
//                 blocks in sa::blocking(read) on an empty pipe. B reads t1
//                 when it first runs, then writes the pipe to release A.
//                 One sample = t1 - t0; then A joins B and sleeps kQuiet so
//                 that the next sample starts from a quiet state (the spare
//                 back in the pool, the monitor idle).
//   sa_detected   The same with a raw ::read(): no announcement, the shim
//                 sees the block in the kernel's perf switch records (and
//                 holds A's activation when the write wakes it).
// Each repetition takes n samples and yields their p50 and p99 (µs); the
// lines report the medians over repetitions (metrics p50_us, p99_us). Each
// mode runs on a fresh runtime, whose own histogram (kernel switch record ->
// spare running; bucket upper bounds, warm-up included) is reported as
// shim_handoff_p50_us / shim_handoff_p99_us, and for the detected mode the
// held window (woken -> held) as shim_held_window_p50_us / _p99_us.
//
//   sa_blocking_fast_path  ns per sa::blocking([] { return ::getppid(); })
//                          in a fiber on a ShimMode::on runtime.
//   plain_syscall          ns per plain ::getppid() in the same fiber.
// Ratio: overhead_vs_plain_syscall = fast path / plain (unit x).
//
// Goals (DESIGN.md, issue 4), reported, not asserted: annotated p50 <= 10 µs;
// detected p50 <= 25 µs and p99 <= 100 µs.
//
// A sample fails the benchmark (exit 1) if B ran before A blocked, ran on
// another VProc, or never ran: a watchdog thread releases a read stuck for
// kStuck (the shim did not hand the VProc off) rather than hang. A sample
// stuck elsewhere for kStall (seen: A's activation held after its raw read
// while the VProc sleeps, a lost wakeup) is kicked by spawning an empty fiber
// on VProc 0 from the watchdog; the kicks are reported as runtime_stalls
// (unit count, warm-up included), which should be 0.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <sa/sa.hpp>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace sa::bench;
using namespace std::chrono_literals;

namespace {

constexpr const char* kBench = "handoff";
constexpr auto kQuiet = 300us;                 // pause between samples
constexpr int64_t kStuck = 1'000'000'000;      // ns in read() before the watchdog releases A
constexpr int64_t kStall = 200'000'000;        // ns in a sample before it kicks the VProc

// percentile() is the p-th percentile (0 < p <= 100) of `v` by the
// nearest-rank method; 0 for none.
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = size_t(std::ceil(p / 100.0 * double(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

// Handoff: one runtime and its samples, for one mode.
class Handoff {
 public:
  explicit Handoff(bool annotated) : annotated_(annotated) {
    watchdog_ = std::thread([this] { watch(); });
  }
  ~Handoff() {
    stop_.store(true, std::memory_order_relaxed);
    watchdog_.join();
  }

  // once() takes n samples and returns them in µs. Fails the benchmark on a
  // bad sample.
  std::vector<double> once(int n) {
    std::vector<double> us;
    us.reserve(size_t(n));
    std::string error;
    rt_.run([&] {
      sa::Fiber a = sa::spawn(sa::SpawnOptions{.vproc = 0}, [&] {
        for (int i = 0; i < n && error.empty(); ++i) {
          busy_since_.store(now_ns(), std::memory_order_relaxed);
          sa::this_fiber::sleep_for(kQuiet);
          if (double s = sample(error); s >= 0) us.push_back(s);
          busy_since_.store(0, std::memory_order_relaxed);
        }
      });
      a.join();
    });
    if (!error.empty()) fail(kBench, system() + ": " + error);
    return us;
  }

  std::string system() const { return annotated_ ? "sa_annotated" : "sa_detected"; }
  sa::ShimStats shim() const { return rt_.stats().shim; }
  long stalls() const { return stalls_.load(std::memory_order_relaxed); }

 private:
  // sample() runs on A: one block -> B-runs latency in µs, or -1 with
  // `error` set.
  double sample(std::string& error) {
    t1_.store(0, std::memory_order_relaxed);
    int b_vproc = -1;
    sa::Fiber b = sa::spawn(sa::SpawnOptions{.vproc = 0}, [&] {
      t1_.store(now_ns(), std::memory_order_relaxed);
      b_vproc = sa::this_fiber::vproc();
      char c = 'x';
      if (::write(pipe_.fd[1], &c, 1) != 1) error = "write() failed";
    });
    char c;
    // Armed for the watchdog while in read() (relaxed is enough: it only
    // compares times and writes the pipe).
    int64_t t0 = now_ns();
    read_since_.store(t0, std::memory_order_relaxed);
    ssize_t r = annotated_ ? sa::blocking([&] { return ::read(pipe_.fd[0], &c, 1); })
                           : ::read(pipe_.fd[0], &c, 1);
    read_since_.store(0, std::memory_order_relaxed);
    b.join();  // B's writes happen-before here
    int64_t t1 = t1_.load(std::memory_order_relaxed);
    if (r != 1) error = "read() failed";
    if (stuck_.exchange(false, std::memory_order_relaxed))
      error = "the VProc was not handed off within 1 s (watchdog released the read)";
    if (error.empty() && t1 < t0) error = "B ran before A blocked";
    if (error.empty() && b_vproc != 0) error = "B ran on VProc " + std::to_string(b_vproc);
    if (!error.empty()) return -1;
    return double(t1 - t0) / 1e3;
  }

  // watch() runs on a plain thread: releases a read stuck past kStuck and
  // kicks VProc 0 when a sample is stuck elsewhere past kStall.
  void watch() {
    while (!stop_.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(10ms);
      const int64_t now = now_ns();
      int64_t t0 = read_since_.load(std::memory_order_relaxed);
      if (t0 != 0) {
        if (now - t0 > kStuck && !stuck_.exchange(true, std::memory_order_relaxed)) {
          char c = 'w';
          if (::write(pipe_.fd[1], &c, 1) != 1) std::abort();
        }
        continue;
      }
      int64_t since = busy_since_.load(std::memory_order_relaxed);
      if (since != 0 && now - since > kStall &&
          busy_since_.compare_exchange_strong(since, now, std::memory_order_relaxed)) {
        stalls_.fetch_add(1, std::memory_order_relaxed);
        rt_.spawn(sa::SpawnOptions{.vproc = 0}, [] {}).detach();
      }
    }
  }

  const bool annotated_;
  sa::Runtime rt_{{.vprocs = 1, .shim = sa::ShimMode::on}};
  Pipe pipe_{kBench};
  std::atomic<int64_t> read_since_{0}, busy_since_{0}, t1_{0};
  std::atomic<long> stalls_{0};
  std::atomic<bool> stuck_{false}, stop_{false};
  std::thread watchdog_;
};

// latency() reports p50_us and p99_us (medians over repetitions) and the
// shim's histograms for one mode.
void latency(const Args& args, bool annotated) {
  const int n = args.pick(200, 100);
  Handoff h{annotated};
  h.once(n);  // warm-up: stacks, spare activations, perf buffers
  std::vector<double> p50, p99;
  for (int i = 0; i < args.reps; ++i) {
    std::vector<double> us = h.once(n);
    p50.push_back(percentile(us, 50));
    p99.push_back(percentile(us, 99));
  }
  report(kBench, h.system(), "p50_us", median(p50), "us");
  report(kBench, h.system(), "p99_us", median(p99), "us");
  sa::ShimStats s = h.shim();
  report(kBench, h.system(), "shim_handoff_p50_us", s.handoff_p50_us, "us");
  report(kBench, h.system(), "shim_handoff_p99_us", s.handoff_p99_us, "us");
  report(kBench, h.system(), "runtime_stalls", double(h.stalls()), "count");
  if (!annotated) {
    report(kBench, h.system(), "shim_held_window_p50_us", s.held_window_p50_us, "us");
    report(kBench, h.system(), "shim_held_window_p99_us", s.held_window_p99_us, "us");
  }
  const long samples = long(n) * (args.reps + 1);
  note(kBench, h.system() + ": " + std::to_string(samples) + " samples, " +
                   std::to_string(s.activation_blocked) + " activation_blocked, " +
                   std::to_string(s.held) + " held, " + std::to_string(s.blocking_calls) +
                   " blocking_calls, pool_exhausted " + std::to_string(s.pool_exhausted) +
                   "; handoffs by runner " + std::to_string(s.handoffs_by_runner) + ", monitor " +
                   std::to_string(s.handoffs_by_monitor) + ", sysmon " + std::to_string(s.handoffs_by_sysmon) +
                   (s.perf ? "" : " (no perf: /proc fallback monitor)"));
}

// fast_path() is ns per call of getppid() in a fiber, through sa::blocking
// when `announced`.
double fast_path(sa::Runtime& rt, long n, bool announced) {
  int64_t elapsed = 0;
  rt.run([&] {
    long sum = 0;
    int64_t t0 = now_ns();
    if (announced) {
      for (long i = 0; i < n; ++i) sum += sa::blocking([] { return ::getppid(); });
    } else {
      for (long i = 0; i < n; ++i) sum += ::getppid();
    }
    elapsed = now_ns() - t0;
    if (sum == 0) fail(kBench, "getppid() returned 0");
  });
  return double(elapsed) / double(n);
}

}  // namespace

int main(int argc, char** argv) {
  Args args = parse_args(argc, argv, kBench);

  latency(args, true);
  latency(args, false);

  const long n = args.pick(1'000'000L, 200'000L);
  sa::Runtime rt{{.vprocs = 1, .shim = sa::ShimMode::on}};
  double fast_ns = measure(args, [&] { return fast_path(rt, n, true); });
  double plain_ns = measure(args, [&] { return fast_path(rt, n, false); });
  report(kBench, "sa_blocking_fast_path", "ns_per_op", fast_ns, "ns");
  report(kBench, "plain_syscall", "ns_per_op", plain_ns, "ns");
  report(kBench, "sa_blocking_fast_path", "overhead_vs_plain_syscall", fast_ns / plain_ns, "x");
  return 0;
}
