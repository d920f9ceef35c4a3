#include <sa/shim/topology.hpp>

#include <algorithm>
#include <cerrno>
#include <numeric>
#include <sched.h>
#include <system_error>

#include <hwloc.h>

namespace sa::shim {

namespace {

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0)
    throw std::system_error(errno, std::generic_category(), "sa: sched_getaffinity");
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

// RAII for an hwloc topology.
class HwlocTopology {
 public:
  HwlocTopology() {
    if (hwloc_topology_init(&t_) != 0) return;
    if (hwloc_topology_load(t_) != 0) {
      hwloc_topology_destroy(t_);
      return;
    }
    ok_ = true;
  }
  ~HwlocTopology() {
    if (ok_) hwloc_topology_destroy(t_);
  }
  HwlocTopology(const HwlocTopology&) = delete;
  HwlocTopology& operator=(const HwlocTopology&) = delete;
  bool ok() const { return ok_; }
  hwloc_topology_t get() const { return t_; }

 private:
  hwloc_topology_t t_{};
  bool ok_ = false;
};

}  // namespace

Topology Topology::discover() {
  Topology t;
  t.cpus_ = allowed_cpus();
  const size_t n = t.cpus_.size();
  t.dist_.assign(n * n, 1);
  for (size_t i = 0; i < n; ++i) t.dist_[i * n + i] = 0;

  HwlocTopology hw;
  if (!hw.ok()) return t;  // no hwloc: every other CPU is equally far
  std::vector<hwloc_obj_t> pus(n);
  for (size_t i = 0; i < n; ++i)
    pus[i] = hwloc_get_pu_obj_by_os_index(hw.get(), static_cast<unsigned>(t.cpus_[i]));
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = 0; b < n; ++b) {
      if (a == b || !pus[a] || !pus[b]) continue;
      hwloc_obj_t common = hwloc_get_common_ancestor_obj(hw.get(), pus[a], pus[b]);
      // A deeper common ancestor (a core, an L2) means nearer CPUs.
      t.dist_[a * n + b] = static_cast<int>(pus[a]->depth) - static_cast<int>(common->depth);
    }
  }
  return t;
}

std::vector<std::vector<int>> Topology::steal_order(int n) const {
  std::vector<std::vector<int>> order(static_cast<size_t>(n));
  const size_t ncpu = cpus_.size();
  for (int v = 0; v < n; ++v) {
    auto& o = order[static_cast<size_t>(v)];
    for (int w = 0; w < n; ++w)
      if (w != v) o.push_back(w);
    auto dist = [&](int w) {
      if (ncpu == 0) return 1;
      return distance(static_cast<size_t>(v) % ncpu, static_cast<size_t>(w) % ncpu);
    };
    std::stable_sort(o.begin(), o.end(), [&](int x, int y) { return dist(x) < dist(y); });
  }
  return order;
}

}  // namespace sa::shim
