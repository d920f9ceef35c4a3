// hello_fibers: the first demo. Spawns fibers on every CPU, makes them sleep,
// talk over channels and contend for a mutex, then prints what the runtime
// did on each VProc.

#include <sa/sa.hpp>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <vector>

using namespace std::chrono_literals;

int main() {
  sa::Runtime rt;  // one VProc per CPU, pinned
  std::printf("sa: %d VProcs\n\n", rt.vprocs());

  const auto t0 = std::chrono::steady_clock::now();
  rt.run([] {
    // 1. Ten thousand fibers that each sleep 10 ms: they overlap, so this
    //    takes about 10 ms, not 100 s.
    auto start = std::chrono::steady_clock::now();
    std::vector<sa::Fiber> sleepers;
    for (int i = 0; i < 10'000; ++i) sleepers.push_back(sa::spawn([] { sa::this_fiber::sleep_for(10ms); }));
    for (auto& f : sleepers) f.join();
    std::printf("10000 fibers slept 10 ms each in %.1f ms\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());

    // 2. A pipeline: generate -> square (4 workers) -> sum, over channels.
    start = std::chrono::steady_clock::now();
    sa::Channel<long> numbers{64}, squares{64};
    sa::Fiber gen = sa::spawn([&] {
      for (long i = 1; i <= 100'000; ++i) numbers.send(i);
      numbers.close();
    });
    sa::WaitGroup workers;
    for (int w = 0; w < 4; ++w) {
      workers.add(1);
      sa::spawn([&] {
        while (auto n = numbers.recv()) squares.send(*n * *n % 1'000'003);
        workers.done();
      }).detach();
    }
    sa::Fiber closer = sa::spawn([&] {
      workers.wait();
      squares.close();
    });
    long sum = 0;
    while (auto s = squares.recv()) sum += *s;
    gen.join();
    closer.join();
    std::printf("pipeline of 100000 values through 6 fibers: sum %ld in %.1f ms\n", sum,
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());

    // 3. 256 fibers contending for one sa::Mutex.
    start = std::chrono::steady_clock::now();
    sa::Mutex m;
    long counter = 0;
    std::vector<sa::Fiber> lockers;
    for (int i = 0; i < 256; ++i)
      lockers.push_back(sa::spawn([&] {
        for (int k = 0; k < 1000; ++k) {
          std::lock_guard g(m);
          ++counter;
        }
      }));
    for (auto& f : lockers) f.join();
    std::printf("256 fibers x 1000 increments under sa::Mutex: %ld in %.1f ms\n", counter,
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  });
  const double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  const sa::Stats s = rt.stats();
  std::printf("\nwhat the runtime did (%.1f ms, %llu fibers):\n", total_ms,
              static_cast<unsigned long long>(s.fibers_spawned));
  std::printf("%-6s %-4s %10s %10s %8s %10s %10s %8s %8s\n", "vproc", "cpu", "switches", "fibers", "steals",
              "parks", "wakes", "sleeps", "woken");
  auto row = [](const char* name, const sa::VProcStats& v) {
    std::printf("%-6s %-4d %10llu %10llu %8llu %10llu %10llu %8llu %8llu\n", name, v.cpu,
                static_cast<unsigned long long>(v.switches), static_cast<unsigned long long>(v.fibers_run),
                static_cast<unsigned long long>(v.steals), static_cast<unsigned long long>(v.fiber_parks),
                static_cast<unsigned long long>(v.fiber_wakes), static_cast<unsigned long long>(v.idle_sleeps),
                static_cast<unsigned long long>(v.idle_wakeups));
  };
  char name[24];
  for (size_t i = 0; i < s.vprocs.size(); ++i) {
    std::snprintf(name, sizeof name, "%zu", i);
    row(name, s.vprocs[i]);
  }
  row("total", s.total());
  std::printf(
      "\nfibers: dispatches from a ready queue; steals: fibers taken from another VProc;\n"
      "parks: fibers that waited (sleep, channel, mutex, join); sleeps/woken: times the VProc\n"
      "itself slept in the kernel with nothing to do, and was woken for new work.\n");
  return 0;
}
