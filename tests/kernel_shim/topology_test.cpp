// kernel_shim Topology: the allowed CPUs and the steal order.

#include <catch2/catch.hpp>

#include <sa/shim/topology.hpp>
#include <sched.h>

#include <algorithm>

TEST_CASE("discover() finds exactly the CPUs in the affinity mask") {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  auto t = sa::shim::Topology::discover();
  CHECK(static_cast<int>(t.cpus().size()) == CPU_COUNT(&set));
  for (int c : t.cpus()) CHECK(CPU_ISSET(c, &set));
  CHECK(std::is_sorted(t.cpus().begin(), t.cpus().end()));
  for (size_t a = 0; a < t.cpus().size(); ++a) {
    CHECK(t.distance(a, a) == 0);
    for (size_t b = 0; b < t.cpus().size(); ++b) {
      CHECK(t.distance(a, b) == t.distance(b, a));
      if (a != b) CHECK(t.distance(a, b) > 0);
    }
  }
}

TEST_CASE("steal_order() lists every other processor, nearest first") {
  auto t = sa::shim::Topology::discover();
  for (int n : {1, 2, 5}) {
    auto order = t.steal_order(n);
    REQUIRE(static_cast<int>(order.size()) == n);
    for (int v = 0; v < n; ++v) {
      auto o = order[static_cast<size_t>(v)];
      CHECK(static_cast<int>(o.size()) == n - 1);
      CHECK(std::find(o.begin(), o.end(), v) == o.end());
      std::sort(o.begin(), o.end());
      CHECK(std::adjacent_find(o.begin(), o.end()) == o.end());
    }
  }
}
