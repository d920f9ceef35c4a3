// far_memory: a parallel workload over "far" memory, paged in by a user-level
// pager, with the kernel shim on and off (issue 6; the paper's Section 5.3
// experiment in miniature).
//
// The region (sa::PagedRegion) is larger than its resident budget; every
// page it lacks comes from a pager that waits about 50 µs (a network round
// trip to a memory server, injected with sa::this_fiber::sleep_for) and then
// computes the page's contents. 64 fibers each visit random pages, check
// their contents (a function of the page index) and do a little compute per
// page.
//
//   shim on   pagers are fibers; a fiber that faults costs its activation,
//             not its VProc: the shim sees the block, a spare runs the VProc,
//             and the faulter holds until a VProc takes it back. Up to 64
//             faults are outstanding at once.
//   shim off  plain M:N: a faulting fiber's kernel thread, and so its VProc,
//             sleeps for the whole fetch. Pagers that are fibers would need
//             a VProc to run: once every VProc faults nothing runs them (the
//             run below shows it stuck, in a child with a time bound), so
//             the region serves faults on pager threads of its own
//             (pager_threads = VProcs), as a plain M:N runtime must.
//   park      shim on, PagedFaultMode::park_fiber: the kernel raises SIGBUS
//             in the faulting thread instead of putting it to sleep, and the
//             handler parks only the fiber; the thread runs other fibers.
//
// Usage: far_memory [--fibers N] [--pages N] [--budget PERCENT]
//                   [--latency-us N] [--visits N] [--compute-us N]

#include <sa/sa.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Config {
  int fibers = 64;
  std::size_t pages = 1024;      // 4 MiB of 4 KiB pages: each visited ~4 times
  int budget_percent = 50;       // resident budget, % of the region
  int latency_us = 50;           // injected pager latency
  int visits = 64;               // pages each fiber visits
  int compute_us = 5;            // compute per visited page
};

uint64_t word_of(std::size_t page, std::size_t i) { return (page + 1) * 0x9E3779B97F4A7C15ULL ^ i; }

// spin_for() computes for about `us` microseconds (no system call).
uint64_t spin_for(int us, uint64_t x) {
  const auto until = Clock::now() + std::chrono::microseconds(us);
  do {
    for (int i = 0; i < 64; ++i) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  } while (Clock::now() < until);
  return x;
}

struct Result {
  double seconds = 0;
  long bad_pages = 0;
  sa::PagedRegionStats region;
  sa::ShimStats shim;
};

Result run(const Config& c, sa::ShimMode mode, int vprocs,
           sa::PagedFaultMode fault_mode = sa::PagedFaultMode::upcall) {
  const bool on = mode == sa::ShimMode::on;
  // Every fiber may be asleep in a fault at once: one activation each.
  sa::Runtime rt{{.vprocs = vprocs, .shim = mode, .max_activations = c.fibers + 4 * vprocs + 8}};
  Result res;
  const std::size_t ps = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  rt.run([&] {
    sa::PagedRegion region({.size = c.pages * ps,
                            .resident_pages = std::max<std::size_t>(1, c.pages * c.budget_percent / 100),
                            .pager =
                                [&](std::size_t page, std::span<std::byte> out) {
                                  sa::this_fiber::sleep_for(std::chrono::microseconds(c.latency_us));
                                  auto* w = reinterpret_cast<uint64_t*>(out.data());
                                  for (std::size_t i = 0; i < out.size() / 8; ++i) w[i] = word_of(page, i);
                                },
                            .pager_threads = on ? 0 : vprocs,
                            .fault_mode = fault_mode,
                            .name = "far"});
    std::atomic<long> bad{0};
    std::atomic<uint64_t> sink{0};
    const auto t0 = Clock::now();
    std::vector<sa::Fiber> fibers;
    for (int f = 0; f < c.fibers; ++f)
      fibers.push_back(sa::spawn([&, f] {
        uint64_t x = static_cast<uint64_t>(f) * 2654435761u + 1;
        for (int v = 0; v < c.visits; ++v) {
          x = x * 6364136223846793005ULL + 1442695040888963407ULL;
          const std::size_t p = (x >> 29) % c.pages;
          const auto* w = reinterpret_cast<const volatile uint64_t*>(region.page(p).data());
          uint64_t diff = 0;
          for (std::size_t i = 0; i < ps / 8; ++i) diff |= w[i] ^ word_of(p, i);
          if (diff) ++bad;
          sink.fetch_xor(spin_for(c.compute_us, x), std::memory_order_relaxed);
        }
      }));
    for (auto& f : fibers) f.join();
    res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    res.bad_pages = bad.load();
    res.region = region.stats();
  });
  res.shim = rt.stats().shim;
  return res;
}

void print(const char* label, const Config& c, const Result& r) {
  const double visits = static_cast<double>(c.fibers) * c.visits;
  std::printf("%-10s %8.1f ms  %9.0f pages/s  faults %6llu  fills %6llu  evictions %6llu  pager p50 %5.0f us"
              "  blocked p50/p99 %5.0f/%5.0f us",
              label, r.seconds * 1e3, visits / r.seconds, static_cast<unsigned long long>(r.region.faults),
              static_cast<unsigned long long>(r.region.pages_filled),
              static_cast<unsigned long long>(r.region.evictions), r.region.pager_us.percentile(50),
              r.region.blocked_us.percentile(50), r.region.blocked_us.percentile(99));
  if (r.shim.activations_started > 0 && r.region.resumed_by_shim > 0)
    std::printf("  activation_blocked %llu held %llu (handoff p50/p99 %.0f/%.0f us, held window p50/p99 %.0f/%.0f us)",
                static_cast<unsigned long long>(r.shim.activation_blocked),
                static_cast<unsigned long long>(r.shim.held), r.shim.handoff_detected_p50_us,
                r.shim.handoff_detected_p99_us, r.shim.held_window_p50_us, r.shim.held_window_p99_us);
  if (r.region.parked > 0)
    std::printf("  parked %llu, activation_blocked %llu", static_cast<unsigned long long>(r.region.parked),
                static_cast<unsigned long long>(r.shim.activation_blocked));
  std::printf("%s\n", r.bad_pages ? "  WRONG CONTENTS" : "");
}

// stuck_with_fiber_pagers() runs the shim-off workload with pager fibers in
// a child process and reports whether it finished within `bound`.
bool stuck_with_fiber_pagers(const Config& c, int vprocs, std::chrono::milliseconds bound) {
  std::fflush(stdout);
  const pid_t pid = ::fork();
  if (pid == 0) {
    sa::Runtime rt{{.vprocs = vprocs, .shim = sa::ShimMode::off}};
    const std::size_t ps = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    rt.run([&] {
      sa::PagedRegion region({.size = c.pages * ps,
                              .pager =
                                  [&](std::size_t, std::span<std::byte>) {
                                    sa::this_fiber::sleep_for(std::chrono::microseconds(c.latency_us));
                                  }});
      std::vector<sa::Fiber> fibers;
      for (int f = 0; f < c.fibers; ++f)
        fibers.push_back(sa::spawn([&, f] {
          const volatile std::byte b = region.page(static_cast<std::size_t>(f) % c.pages)[0];
          (void)b;
        }));
      for (auto& f : fibers) f.join();
    });
    std::_Exit(0);
  }
  const auto deadline = Clock::now() + bound;
  int status = 0;
  while (Clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(10ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return true;
}

int allowed_cpus() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "far_memory: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::atol(argv[++i]);
    };
    if (a == "--fibers") c.fibers = static_cast<int>(next());
    else if (a == "--pages") c.pages = static_cast<std::size_t>(next());
    else if (a == "--budget") c.budget_percent = static_cast<int>(next());
    else if (a == "--latency-us") c.latency_us = static_cast<int>(next());
    else if (a == "--visits") c.visits = static_cast<int>(next());
    else if (a == "--compute-us") c.compute_us = static_cast<int>(next());
    else {
      std::fprintf(stderr,
                   "usage: far_memory [--fibers N] [--pages N] [--budget PERCENT] [--latency-us N] "
                   "[--visits N] [--compute-us N]\n");
      return 2;
    }
  }
  if (c.fibers < 1 || c.pages < 1 || c.budget_percent < 1 || c.budget_percent > 100 || c.visits < 1) {
    std::fprintf(stderr, "far_memory: bad arguments\n");
    return 2;
  }
  const int vprocs = allowed_cpus();
  std::printf("far_memory: %d fibers x %d random page visits (%d us compute each), %zu pages, budget %d%%, "
              "pager latency %d us, %d VProcs\n",
              c.fibers, c.visits, c.compute_us, c.pages, c.budget_percent, c.latency_us, vprocs);
  const Result on = run(c, sa::ShimMode::on, vprocs);
  print("shim on", c, on);
  const Result off = run(c, sa::ShimMode::off, vprocs);
  print("shim off", c, off);
  const Result park = run(c, sa::ShimMode::on, vprocs, sa::PagedFaultMode::park_fiber);
  print("park", c, park);
  std::printf("shim on / shim off throughput: %.2fx; park / shim off: %.2fx\n", off.seconds / on.seconds,
              off.seconds / park.seconds);
  std::printf("shim off with pager fibers (no pager threads): %s\n",
              stuck_with_fiber_pagers(c, vprocs, 2s) ? "stuck after 2 s: every VProc asleep in a fault, "
                                                       "no VProc left to run a pager (killed)"
                                                     : "finished");
  return on.bad_pages || off.bad_pages || park.bad_pages ? 1 : 0;
}
