#pragma once
// ShimTestAccess: what the kernel_shim tests reach inside a Shim (it is the
// Shim's friend), in one place for every test file.

#include <sa/shim/shim.hpp>

#include <cstdio>
#include <mutex>

namespace sa::shim {

struct ShimTestAccess {
  // The held queue without the handoffs around it: push as a hold would.
  static void push_held(Shim& s, Activation& a) { s.push_held(a); }
  // The pool lock, to hold it from a test thread.
  static std::mutex& pool_lock(Shim& s) { return s.lock_; }
  // Marks a handoff of `a` as in progress by a runner (true) or ends it.
  static void runner_in_handoff(Activation& a, bool in) {
    a.in_handoff.store(in ? static_cast<uint8_t>(1 + static_cast<int>(Shim::HandoffBy::runner)) : 0,
                       std::memory_order_release);
  }
  // dump() prints every activation's state, on-CPU state, processor and
  // handoff holder to stderr without the pool lock (for a watchdog's
  // report: a stuck test may hold it), and each runner's reserve.
  static void dump(Shim& s) {
    const int n = s.n_slots_.load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i) {
      const Activation* a = s.slots_[static_cast<size_t>(i)].load(std::memory_order_acquire);
      int64_t since = 0;
      const CpuState cs = a->cpu_state(&since);
      std::fprintf(stderr, "  activation tid %d: %s, cpu state %d since %lld, vproc %d, in_handoff %d, signalled %d\n",
                   a->tid(), to_string(a->state()), static_cast<int>(cs), static_cast<long long>(since),
                   a->vproc.load(), static_cast<int>(a->in_handoff.load()), static_cast<int>(a->signalled.load()));
    }
    for (const auto& r : s.runners_)
      std::fprintf(stderr, "  runner cpu %d: reserve %p, boosts %u, armed %u\n", r->cpu,
                   static_cast<void*>(r->reserve.load()), r->boosts.load(), r->armed.load());
  }
  // Whether the runner of processor `vp` has a spare in its reserve.
  static bool reserve_filled(Shim& s, int vp) {
    const Shim::Runner* r = vp < static_cast<int>(s.runner_of_vp_.size()) ? s.runner_of_vp_[static_cast<size_t>(vp)] : nullptr;
    return r && r->reserve.load(std::memory_order_acquire) != nullptr;
  }
};

}  // namespace sa::shim
