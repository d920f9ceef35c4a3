// bench_ping_pong: the round-trip latency of passing a value to another
// thread of control on another processor and getting it back.
//
//   sa           A pinger bound to VProc 0 and a ponger bound to VProc 1 (a
//                2-VProc runtime) exchange a long through two rendezvous
//                (capacity 0) sa::Channels, N round trips.
//   sa_unbound   The same with unbound fibers, free to migrate (the runtime
//                may put both on one VProc).
//   boost_fiber  Two std::threads, each running one side as its main fiber,
//                over two boost::fibers::unbuffered_channel.
//   go           Two goroutines, unbuffered channels, GOMAXPROCS=2
//                (bench/go/ping_pong).
// ns_per_op = elapsed / N round trips. Ratios: speedup_vs_<peer> = peer / sa.
// Also reports idle_sleeps_per_op: the VProcs' kernel sleeps (Stats) per round
// trip, which tells a wake through the kernel from one that found it awake.
// Every reply is checked (value + 1); a wrong one fails the benchmark.

#include <atomic>
#include <sa/sa.hpp>
#include <thread>

#include "harness.hpp"

#if SA_BENCH_HAVE_BOOST_FIBER
#include <boost/fiber/all.hpp>
#endif

using namespace sa::bench;

namespace {

constexpr const char* kBench = "ping_pong";
constexpr size_t kCapacity = 0;  // rendezvous, as Go's unbuffered channels

// sa_ping_pong() is ns per round trip between two fibers, bound to VProcs 0
// and 1 when `bound`.
double sa_ping_pong(sa::Runtime& rt, long n, bool bound) {
  int64_t elapsed = 0;
  bool ok = true;
  rt.run([&] {
    sa::Channel<long> ping{kCapacity};
    sa::Channel<long> pong{kCapacity};
    auto ponger = [&] {
      while (std::optional<long> v = ping.recv()) pong.send(*v + 1);
    };
    auto pinger = [&] {
      int64_t t0 = now_ns();
      for (long i = 0; i < n; ++i) {
        ping.send(i);
        std::optional<long> r = pong.recv();
        ok = ok && r && *r == i + 1;
      }
      elapsed = now_ns() - t0;
      ping.close();
    };
    sa::Fiber b = bound ? sa::spawn(sa::SpawnOptions{.vproc = 1}, ponger) : sa::spawn(ponger);
    sa::Fiber a = bound ? sa::spawn(sa::SpawnOptions{.vproc = 0}, pinger) : sa::spawn(pinger);
    a.join();
    b.join();
  });
  if (!ok) fail(kBench, "sa: a reply was wrong or missing");
  return double(elapsed) / double(n);
}

#if SA_BENCH_HAVE_BOOST_FIBER
// boost_ping_pong() is ns per round trip between the main fibers of two
// kernel threads (Boost.Fiber's default round_robin scheduler on each).
double boost_ping_pong(long n) {
  boost::fibers::unbuffered_channel<long> ping;
  boost::fibers::unbuffered_channel<long> pong;
  std::thread ponger([&] {
    long v;
    while (ping.pop(v) == boost::fibers::channel_op_status::success) pong.push(v + 1);
  });
  bool ok = true;
  int64_t t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    long r = -1;
    ping.push(i);
    ok = ok && pong.pop(r) == boost::fibers::channel_op_status::success && r == i + 1;
  }
  int64_t elapsed = now_ns() - t0;
  ping.close();
  ponger.join();
  if (!ok) fail(kBench, "boost_fiber: a reply was wrong or missing");
  return double(elapsed) / double(n);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  Args args = parse_args(argc, argv, kBench);
  const long n = args.pick(100'000L, 20'000L);

  double sa_ns, unbound_ns, sleeps_per_op, unbound_sleeps_per_op;
  {
    sa::Runtime rt{{.vprocs = 2}};
    // idle_sleeps() is the VProcs' kernel sleeps so far.
    auto idle_sleeps = [&] { return double(rt.stats().total().idle_sleeps); };
    const double round_trips = double(n) * (args.reps + 1);  // + warm-up
    double before = idle_sleeps();
    sa_ns = measure(args, [&] { return sa_ping_pong(rt, n, true); });
    sleeps_per_op = (idle_sleeps() - before) / round_trips;
    before = idle_sleeps();
    unbound_ns = measure(args, [&] { return sa_ping_pong(rt, n, false); });
    unbound_sleeps_per_op = (idle_sleeps() - before) / round_trips;
  }
  report(kBench, "sa", "ns_per_op", sa_ns, "ns");
  report(kBench, "sa", "idle_sleeps_per_op", sleeps_per_op, "count");
  report(kBench, "sa_unbound", "ns_per_op", unbound_ns, "ns");
  report(kBench, "sa_unbound", "idle_sleeps_per_op", unbound_sleeps_per_op, "count");

  std::optional<double> boost_ns;
#if SA_BENCH_HAVE_BOOST_FIBER
  boost_ns = measure(args, [&] { return boost_ping_pong(n); });
  report(kBench, "boost_fiber", "ns_per_op", *boost_ns, "ns");
#else
  note(kBench, "built without Boost.Fiber; skipping system boost_fiber");
#endif

  std::optional<double> go_ns = run_go_peer(args, kBench, "ns_per_op");

  if (boost_ns) report(kBench, "sa", "speedup_vs_boost_fiber", *boost_ns / sa_ns, "x");
  if (go_ns) report(kBench, "sa", "speedup_vs_go", *go_ns / sa_ns, "x");
  if (go_ns) report(kBench, "sa_unbound", "speedup_vs_go", *go_ns / unbound_ns, "x");
  return 0;
}
