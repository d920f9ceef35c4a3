// bench_spawn_join: the cost of starting a trivial thread of control and
// waiting for it to end, per thread.
//
//   sa           N trivial fibers spawned from the main fiber of a runtime on
//                all CPUs, in batches of kBatch, each batch then joined.
//   std_thread   fewer (M) std::threads created and joined in batches.
//   boost_fiber  N Boost.Fiber fibers, same batches, on a 2-thread
//                work_stealing pool.
//   go           N goroutines, same batches, each batch awaited with a
//                sync.WaitGroup (bench/go/spawn_join).
// ns_per_op = elapsed / count. Ratios: speedup_vs_<peer> = peer / sa.

#include <sa/sa.hpp>
#include <thread>
#include <vector>

#include "boost_pool.hpp"
#include "harness.hpp"

using namespace sa::bench;

namespace {

constexpr const char* kBench = "spawn_join";
constexpr long kBatch = 1000;

// sa_spawn_join() is ns per fiber spawned and joined from the main fiber.
double sa_spawn_join(sa::Runtime& rt, long n) {
  int64_t elapsed = 0;
  rt.run([&] {
    std::vector<sa::Fiber> batch;
    batch.reserve(kBatch);
    int64_t t0 = now_ns();
    for (long done = 0; done < n; done += kBatch) {
      for (long i = 0; i < kBatch; ++i) batch.push_back(sa::spawn([] {}));
      for (sa::Fiber& f : batch) f.join();
      batch.clear();
    }
    elapsed = now_ns() - t0;
  });
  return double(elapsed) / double(n);
}

// thread_spawn_join() is ns per std::thread created and joined.
double thread_spawn_join(long n) {
  constexpr long kThreadBatch = 100;
  std::vector<std::thread> batch;
  batch.reserve(kThreadBatch);
  int64_t t0 = now_ns();
  for (long done = 0; done < n; done += kThreadBatch) {
    for (long i = 0; i < kThreadBatch; ++i) batch.emplace_back([] {});
    for (std::thread& t : batch) t.join();
    batch.clear();
  }
  return double(now_ns() - t0) / double(n);
}

#if SA_BENCH_HAVE_BOOST_FIBER
// boost_spawn_join() is ns per Boost.Fiber fiber launched and joined; call it
// inside with_work_stealing().
double boost_spawn_join(long n) {
  std::vector<boost::fibers::fiber> batch;
  batch.reserve(kBatch);
  int64_t t0 = now_ns();
  for (long done = 0; done < n; done += kBatch) {
    for (long i = 0; i < kBatch; ++i) batch.emplace_back([] {});
    for (boost::fibers::fiber& f : batch) f.join();
    batch.clear();
  }
  return double(now_ns() - t0) / double(n);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  Args args = parse_args(argc, argv, kBench);
  const long n = args.pick(100'000L, 20'000L);
  const long n_threads = args.pick(2'000L, 500L);

  double sa_ns;
  {
    sa::Runtime rt{};
    sa_ns = measure(args, [&] { return sa_spawn_join(rt, n); });
  }
  report(kBench, "sa", "ns_per_op", sa_ns, "ns");

  double thread_ns = measure(args, [&] { return thread_spawn_join(n_threads); });
  report(kBench, "std_thread", "ns_per_op", thread_ns, "ns");

  std::optional<double> boost_ns;
#if SA_BENCH_HAVE_BOOST_FIBER
  with_work_stealing(2, [&] { boost_ns = measure(args, [&] { return boost_spawn_join(n); }); });
  report(kBench, "boost_fiber", "ns_per_op", *boost_ns, "ns");
#else
  note(kBench, "built without Boost.Fiber; skipping system boost_fiber");
#endif

  std::optional<double> go_ns = run_go_peer(args, kBench, "ns_per_op");

  report(kBench, "sa", "speedup_vs_std_thread", thread_ns / sa_ns, "x");
  if (boost_ns) report(kBench, "sa", "speedup_vs_boost_fiber", *boost_ns / sa_ns, "x");
  if (go_ns) report(kBench, "sa", "speedup_vs_go", *go_ns / sa_ns, "x");
  return 0;
}
