#pragma once
// with_work_stealing(): runs a body on a Boost.Fiber work-stealing pool of
// `threads` kernel threads (the Boost.Fiber peer of an sa runtime on all CPUs).
//
// Boost.Fiber's work_stealing algorithm registers its schedulers in static
// state sized by the first thread count it sees, so a process can build such
// a pool ONCE: call with_work_stealing() at most once per process and run
// every repetition inside `body`.
//
// `body` runs on thread 0 (as that thread's main fiber); fibers it launches
// may be stolen by the other threads, which wait (fiber-blocking, so their
// schedulers keep running stolen fibers) until `body` returns.

#if SA_BENCH_HAVE_BOOST_FIBER

#include <boost/fiber/all.hpp>
#include <thread>
#include <vector>

namespace sa::bench {

template <class Body>
void with_work_stealing(int threads, Body body) {
  boost::fibers::mutex m;
  boost::fibers::condition_variable cv;
  bool done = false;
  auto helper = [&] {
    boost::fibers::use_scheduling_algorithm<boost::fibers::algo::work_stealing>(threads);
    std::unique_lock lk(m);
    cv.wait(lk, [&] { return done; });
  };
  std::vector<std::thread> helpers;
  for (int i = 1; i < threads; ++i) helpers.emplace_back(helper);
  std::thread driver([&] {
    boost::fibers::use_scheduling_algorithm<boost::fibers::algo::work_stealing>(threads);
    body();
    {
      std::unique_lock lk(m);
      done = true;
    }
    cv.notify_all();
  });
  driver.join();
  for (auto& t : helpers) t.join();
}

}  // namespace sa::bench

#endif  // SA_BENCH_HAVE_BOOST_FIBER
