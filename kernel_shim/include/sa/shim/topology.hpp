#pragma once
// Topology: the CPUs this process may run on (its affinity mask, which follows
// the cpuset), and for each one the order in which to look at the others,
// nearest first (same core, then shared caches, then NUMA node, then the rest),
// read from hwloc.

#include <cstddef>
#include <vector>

namespace sa::shim {

class Topology {
 public:
  // discover() reads the allowed CPUs and their distances; throws
  // std::system_error if neither hwloc nor the affinity mask can be read.
  static Topology discover();

  // cpus() are the OS indices of the CPUs the process may run on, ascending.
  const std::vector<int>& cpus() const noexcept { return cpus_; }

  // distance(a, b) of two entries of cpus() (indices into it): 0 for the same
  // CPU, growing as the closest object they share sits higher in the tree.
  int distance(std::size_t a, std::size_t b) const noexcept { return dist_[a * cpus_.size() + b]; }

  // steal_order(n) gives, for each of n processors laid round-robin on cpus(),
  // the other processors nearest first (ties keep index order).
  std::vector<std::vector<int>> steal_order(int n) const;

 private:
  std::vector<int> cpus_;
  std::vector<int> dist_;
};

}  // namespace sa::shim
