// sa::Runtime: options, run(), spawning from outside, stats, shutdown.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>
#include <sched.h>

#include <atomic>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "test_support.hpp"

TEST_CASE("run() returns the main fiber's completion and runs it as a fiber") {
  sa::Runtime rt{{.vprocs = 2}};
  bool ran = false;
  sa::FiberId id = 0;
  rt.run([&] {
    ran = true;
    id = sa::this_fiber::id();
  });
  CHECK(ran);
  CHECK(id != 0);
  CHECK(sa::this_fiber::id() == 0);  // the test thread is not a fiber
}

TEST_CASE("run() rethrows what the main fiber threw") {
  sa::Runtime rt{{.vprocs = 2}};
  CHECK_THROWS_WITH(rt.run([] { throw std::runtime_error("boom in main"); }), "boom in main");
  // The runtime is still usable afterwards.
  int x = 0;
  rt.run([&] { x = 7; });
  CHECK(x == 7);
}

TEST_CASE("vprocs = 0 means one VProc per CPU in the affinity mask") {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  sa::Runtime rt;
  CHECK(rt.vprocs() == CPU_COUNT(&set));
  auto s = rt.stats();
  REQUIRE(static_cast<int>(s.vprocs.size()) == rt.vprocs());
  for (const auto& v : s.vprocs) CHECK(CPU_ISSET(v.cpu, &set));
}

TEST_CASE("pin = true pins each VProc's thread to its CPU; pin = false leaves it the process's mask") {
  cpu_set_t process;
  CPU_ZERO(&process);
  REQUIRE(sched_getaffinity(0, sizeof process, &process) == 0);
  const bool pin = GENERATE(true, false);
  INFO("pin " << pin);
  sa::Runtime rt{{.vprocs = 0, .pin = pin}};
  std::vector<cpu_set_t> masks(static_cast<std::size_t>(rt.vprocs()));
  rt.run([&] {
    for (int v = 0; v < rt.vprocs(); ++v)
      sa::spawn(sa::SpawnOptions{.vproc = v}, [&masks, v] {
        CPU_ZERO(&masks[static_cast<std::size_t>(v)]);
        sched_getaffinity(0, sizeof(cpu_set_t), &masks[static_cast<std::size_t>(v)]);
      }).join();
  });
  const auto s = rt.stats();
  for (std::size_t v = 0; v < masks.size(); ++v) {
    INFO("VProc " << v << " on CPU " << s.vprocs[v].cpu);
    if (pin) {
      REQUIRE(s.vprocs[v].cpu >= 0);
      CHECK(CPU_COUNT(&masks[v]) == 1);
      CHECK(CPU_ISSET(s.vprocs[v].cpu, &masks[v]));
    } else {
      CHECK(s.vprocs[v].cpu == -1);
      CHECK(CPU_EQUAL(&masks[v], &process));
    }
  }
}

TEST_CASE("bad options are rejected with a clear error") {
  CHECK_THROWS_AS(sa::Runtime({.vprocs = -1}), std::invalid_argument);
  CHECK_THROWS_AS(sa::Runtime({.vprocs = 1, .stack_size = 1024}), std::invalid_argument);
  CHECK_THROWS_AS(sa::Runtime({.vprocs = 1, .max_activations = -1}), std::invalid_argument);
}

TEST_CASE("spawn and join from a thread outside the runtime") {
  sa::Runtime rt{{.vprocs = 2}};
  std::atomic<int> sum{0};
  std::thread outsider([&] {
    std::vector<sa::Fiber> fibers;
    for (int i = 1; i <= 100; ++i) fibers.push_back(rt.spawn([&sum, i] { sum += i; }));
    for (auto& f : fibers) f.join();  // blocks this thread, not a VProc
  });
  outsider.join();
  CHECK(sum == 5050);
}

TEST_CASE("sa::spawn outside a fiber and run() inside one are refused") {
  sa::Runtime rt{{.vprocs = 1}};
  CHECK_THROWS_AS(sa::spawn([] {}), std::logic_error);
  rt.run([&] { CHECK_THROWS_AS(rt.run([] {}), std::logic_error); });
}

TEST_CASE("stats count spawns, switches and parks") {
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 50; ++i) fibers.push_back(sa::spawn([] { sa::this_fiber::sleep_for(std::chrono::milliseconds(1)); }));
    for (auto& f : fibers) f.join();
  });
  auto s = rt.stats();
  auto t = s.total();
  CHECK(s.fibers_spawned == 51);
  CHECK(s.fibers_live == 0);
  CHECK(t.spawns == 50);
  CHECK(t.fiber_parks >= 50);   // each sleep parks once
  CHECK(t.switches >= 2 * 51);  // into and out of every fiber at least
  CHECK(t.fibers_run >= 51);
}

TEST_CASE("a runtime with nothing to do burns less than 5% of a CPU") {
  const sa::ShimMode mode = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  INFO("shim " << (mode == sa::ShimMode::on ? "on" : "off"));
  sa::Runtime rt{{.vprocs = 0, .shim = mode}};
  rt.run([] {});  // wake everything once
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double before = sa_test::process_cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  const double cpu = sa_test::process_cpu_seconds() - before;
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO("cpu " << cpu << " s over " << wall << " s");
  CHECK(cpu < 0.05 * wall);
}

TEST_CASE("a runtime whose fibers sleep burns less than 5% of a CPU") {
  const sa::ShimMode mode = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  INFO("shim " << (mode == sa::ShimMode::on ? "on" : "off"));
  sa::Runtime rt{{.vprocs = 0, .shim = mode}};
  double cpu = 0, wall = 0;
  rt.run([&] {
    std::vector<sa::Fiber> sleepers;
    for (int i = 0; i < 8; ++i)
      sleepers.push_back(sa::spawn([] { sa::this_fiber::sleep_for(std::chrono::milliseconds(500)); }));
    // Measured once every fiber sleeps: starting them is not idling (under
    // TSan it alone took about 4% of the window).
    sa::this_fiber::sleep_for(std::chrono::milliseconds(50));
    const double before = sa_test::process_cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    sa::this_fiber::sleep_for(std::chrono::milliseconds(400));
    cpu = sa_test::process_cpu_seconds() - before;
    wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (auto& f : sleepers) f.join();
  });
  INFO("cpu " << cpu << " s over " << wall << " s");
  CHECK(wall >= 0.4);
  CHECK(cpu < 0.05 * wall);
}
