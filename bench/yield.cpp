// bench_yield: the cost of one fiber switch.
//
//   sa    Two fibers on a 1-VProc runtime yield to each other N times each;
//         ns_per_op = elapsed / (2N), one yield = one fiber-to-fiber switch
//         as the program sees it, whatever the scheduler does inside.
//   raw_context
//         Boost.Context jump_fcontext ping-pong between the main context and
//         one other context; ns_per_op = elapsed / (number of jumps).
//
// Ratio: ratio_vs_raw_context = sa / raw_context (the goal is <= 2).
// Also reports sa switches_per_op: runtime context switches (Stats) per yield.
//
// SA_YIELD_PROFILE=sa:N or raw:N (environment) runs one side once with N
// iterations and no timing or report, for instruction counting under
// `valgrind --tool=callgrind`: the difference between two runs with
// different N, divided by the difference in yields (2 per iteration for
// sa) or jumps (2 per iteration for raw), is the cost of one, with
// start-up and shutdown cancelled out.

#include <boost/context/detail/fcontext.hpp>
#include <sa/sa.hpp>
#include <sys/mman.h>

#include <cstdlib>
#include <string_view>

#include "harness.hpp"

namespace ctx = boost::context::detail;
using namespace sa::bench;

namespace {

constexpr const char* kBench = "yield";

// sa_yield() is ns per yield of two fibers alternating on one VProc.
double sa_yield(sa::Runtime& rt, long n) {
  int64_t elapsed = 0;
  rt.run([&] {
    auto body = [n] {
      for (long i = 0; i < n; ++i) sa::this_fiber::yield();
    };
    int64_t t0 = now_ns();
    sa::Fiber a = sa::spawn(body);
    sa::Fiber b = sa::spawn(body);
    a.join();
    b.join();
    elapsed = now_ns() - t0;
  });
  return double(elapsed) / double(2 * n);
}

// bounce() is the far side of the raw ping-pong: it jumps straight back to
// whoever jumped to it, forever (its stack is dropped, never unwound).
void bounce(ctx::transfer_t t) {
  for (;;) t = ctx::jump_fcontext(t.fctx, nullptr);
}

// raw_switch() is ns per jump_fcontext between two contexts. The far stack
// is page-aligned memory of its own, as a fiber stack from a pool would be.
double raw_switch(long n) {
  constexpr size_t kStack = 64 * 1024;
  void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (stack == MAP_FAILED) fail(kBench, "mmap of a context stack failed");
  ctx::fcontext_t other = ctx::make_fcontext(static_cast<char*>(stack) + kStack, kStack, bounce);
  int64_t t0 = now_ns();
  for (long i = 0; i < n; ++i) other = ctx::jump_fcontext(other, nullptr).fctx;
  int64_t elapsed = now_ns() - t0;
  ::munmap(stack, kStack);
  return double(elapsed) / double(2 * n);  // each iteration is two jumps
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* profile = std::getenv("SA_YIELD_PROFILE")) {
    const std::string_view p = profile;
    const bool sa_side = p.starts_with("sa:");
    if (!sa_side && !p.starts_with("raw:")) fail(kBench, "SA_YIELD_PROFILE must be sa:N or raw:N");
    const long n = std::atol(profile + (sa_side ? 3 : 4));
    if (sa_side) {
      sa::Runtime rt{{.vprocs = 1}};
      sa_yield(rt, n);
    } else {
      raw_switch(n);
    }
    return 0;
  }
  Args args = parse_args(argc, argv, kBench);
  const long n = args.pick(1'000'000L, 200'000L);

  double sa_ns, switches_per_op;
  {
    sa::Runtime rt{{.vprocs = 1}};
    sa_ns = measure(args, [&] { return sa_yield(rt, n); });
    uint64_t before = rt.stats().total().switches;
    sa_yield(rt, n);
    switches_per_op = double(rt.stats().total().switches - before) / double(2 * n);
  }
  double raw_ns = measure(args, [&] { return raw_switch(n); });

  report(kBench, "sa", "ns_per_op", sa_ns, "ns");
  report(kBench, "sa", "switches_per_op", switches_per_op, "count");
  report(kBench, "raw_context", "ns_per_op", raw_ns, "ns");
  report(kBench, "sa", "ratio_vs_raw_context", sa_ns / raw_ns, "x");
  return 0;
}
