// bench_mutex: the cost of a contended critical section.
//
//   sa              kWorkers fibers on a runtime on all CPUs, each doing K
//                   lock / increment / unlock on one sa::Mutex.
//   std_mutex_2t    std::mutex, 2 std::threads doing kWorkers*K/2 each.
//   std_mutex_64t   std::mutex, kWorkers std::threads doing K each.
//   boost_fiber     kWorkers Boost.Fiber fibers with boost::fibers::mutex on
//                   a 2-thread work_stealing pool.
//   go              kWorkers goroutines with sync.Mutex (bench/go/mutex).
// ns_per_op = elapsed / (kWorkers * K). Ratios: speedup_vs_<peer> = peer / sa.
// The final counter must be kWorkers * K, or the benchmark fails (exit 1).

#include <mutex>
#include <sa/sa.hpp>
#include <thread>
#include <vector>

#include "boost_pool.hpp"
#include "harness.hpp"

using namespace sa::bench;

namespace {

constexpr const char* kBench = "mutex";
constexpr int kWorkers = 64;

// check() fails the benchmark unless `counter` is `expected`.
void check(const char* system, long counter, long expected) {
  if (counter != expected)
    fail(kBench, std::string(system) + ": counter " + std::to_string(counter) + ", expected " +
                     std::to_string(expected));
}

// sa_mutex() is ns per critical section of kWorkers fibers doing k each.
double sa_mutex(sa::Runtime& rt, long k) {
  int64_t elapsed = 0;
  long counter = 0;
  rt.run([&] {
    sa::Mutex m;
    std::vector<sa::Fiber> workers;
    int64_t t0 = now_ns();
    for (int w = 0; w < kWorkers; ++w)
      workers.push_back(sa::spawn([&] {
        for (long i = 0; i < k; ++i) {
          std::lock_guard lk(m);
          ++counter;
        }
      }));
    for (sa::Fiber& f : workers) f.join();
    elapsed = now_ns() - t0;
  });
  check("sa", counter, kWorkers * k);
  return double(elapsed) / double(kWorkers * k);
}

// std_mutex() is ns per critical section of `threads` std::threads sharing
// kWorkers * k sections.
double std_mutex(int threads, long k) {
  std::mutex m;
  long counter = 0;
  const long per_thread = kWorkers * k / threads;
  std::vector<std::thread> workers;
  int64_t t0 = now_ns();
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&] {
      for (long i = 0; i < per_thread; ++i) {
        std::lock_guard lk(m);
        ++counter;
      }
    });
  for (std::thread& t : workers) t.join();
  int64_t elapsed = now_ns() - t0;
  check(threads == 2 ? "std_mutex_2t" : "std_mutex_64t", counter, per_thread * threads);
  return double(elapsed) / double(per_thread * threads);
}

#if SA_BENCH_HAVE_BOOST_FIBER
// boost_mutex() is ns per critical section of kWorkers Boost.Fiber fibers
// doing k each; call it inside with_work_stealing().
double boost_mutex(long k) {
  boost::fibers::mutex m;
  long counter = 0;
  std::vector<boost::fibers::fiber> workers;
  int64_t t0 = now_ns();
  for (int w = 0; w < kWorkers; ++w)
    workers.emplace_back([&] {
      for (long i = 0; i < k; ++i) {
        std::lock_guard lk(m);
        ++counter;
      }
    });
  for (boost::fibers::fiber& f : workers) f.join();
  int64_t elapsed = now_ns() - t0;
  check("boost_fiber", counter, kWorkers * k);
  return double(elapsed) / double(kWorkers * k);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  Args args = parse_args(argc, argv, kBench);
  const long k = args.pick(20'000L, 4'000L);

  double sa_ns;
  {
    sa::Runtime rt{};
    sa_ns = measure(args, [&] { return sa_mutex(rt, k); });
  }
  report(kBench, "sa", "ns_per_op", sa_ns, "ns");

  double std2_ns = measure(args, [&] { return std_mutex(2, k); });
  report(kBench, "std_mutex_2t", "ns_per_op", std2_ns, "ns");
  double std64_ns = measure(args, [&] { return std_mutex(kWorkers, k); });
  report(kBench, "std_mutex_64t", "ns_per_op", std64_ns, "ns");

  std::optional<double> boost_ns;
#if SA_BENCH_HAVE_BOOST_FIBER
  with_work_stealing(2, [&] { boost_ns = measure(args, [&] { return boost_mutex(k); }); });
  report(kBench, "boost_fiber", "ns_per_op", *boost_ns, "ns");
#else
  note(kBench, "built without Boost.Fiber; skipping system boost_fiber");
#endif

  std::optional<double> go_ns = run_go_peer(args, kBench, "ns_per_op");

  report(kBench, "sa", "speedup_vs_std_mutex_2t", std2_ns / sa_ns, "x");
  report(kBench, "sa", "speedup_vs_std_mutex_64t", std64_ns / sa_ns, "x");
  if (boost_ns) report(kBench, "sa", "speedup_vs_boost_fiber", *boost_ns / sa_ns, "x");
  if (go_ns) report(kBench, "sa", "speedup_vs_go", *go_ns / sa_ns, "x");
  return 0;
}
