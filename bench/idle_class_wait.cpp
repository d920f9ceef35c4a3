// bench_idle_class_wait: how long a SCHED_IDLE thread waits for its CPU
// beside a CPU-bound SCHED_OTHER thread there. The shim's idle-class
// helpers (the idle runners, the monitor) must never hold a lock that
// others wait for while they may be kept off the CPU this long
// (kernel_shim/include/sa/shim/shim.hpp, design (i)).
//
// A SCHED_IDLE thread pinned to the first allowed CPU reads the clock in a
// loop, alone on that CPU for 100 ms (as a helper runs where nothing else
// wants the CPU), then for `secs` seconds beside a CPU hog process
// (cpu_hogs.hpp) started there; it reports the longest gap between two of
// its reads once the hog runs (the longest time it was kept off the CPU)
// and how many gaps exceeded 10 ms. The time alone matters: the kernel's
// fair scheduler (EEVDF) charges a SCHED_IDLE thread's CPU time at about
// 340 times a normal one's, and the hog must catch up with that first.

#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "cpu_hogs.hpp"
#include "harness.hpp"

using namespace sa::bench;

int main(int argc, char** argv) {
  constexpr const char* kBench = "idle_class_wait";
  const Args args = parse_args(argc, argv, kBench);
  const double secs = args.pick(3.0, 2.0);  // longer than one wait (about 1.4 s here)
  const int cpu = sa_hogs::first_allowed_cpu();
  std::vector<double> worst_ms, over_10ms;
  for (int rep = 0; rep < args.reps; ++rep) {
    int64_t worst = 0;
    long over = 0;
    std::atomic<bool> ready{false};
    std::atomic<int64_t> hog_from{INT64_MAX};
    std::thread idle([&] {
      if (!sa_hogs::idle_on(cpu)) fail(kBench, "pinning or SCHED_IDLE refused");
      ready = true;
      int64_t end = INT64_MAX;
      for (int64_t last = now_ns(), t; (t = now_ns()) < end; last = t) {
        if (end == INT64_MAX && hog_from.load(std::memory_order_relaxed) != INT64_MAX)
          end = hog_from.load(std::memory_order_relaxed) + static_cast<int64_t>(secs * 1e9);
        if (last < hog_from.load(std::memory_order_relaxed)) continue;  // alone: not counted
        worst = std::max(worst, t - last);
        over += t - last > 10'000'000;
      }
    });
    while (!ready) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    {
      sa_hogs::CpuHogs hog(1, {cpu});
      hog_from = now_ns();
      idle.join();
    }
    worst_ms.push_back(double(worst) / 1e6);
    over_10ms.push_back(double(over));
  }
  report(kBench, "sched_idle_beside_hog", "worst_wait_ms", median(worst_ms), "ms");
  report(kBench, "sched_idle_beside_hog", "waits_over_10ms", median(over_10ms), "count");
  return 0;
}
