#pragma once
// ShimTestAccess: what the kernel_shim tests reach inside a Shim (it is the
// Shim's friend), in one place for every test file.

#include <sa/shim/shim.hpp>

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
  // Whether the runner of processor `vp` has a spare in its reserve.
  static bool reserve_filled(Shim& s, int vp) {
    const Shim::Runner* r = vp < static_cast<int>(s.runner_of_vp_.size()) ? s.runner_of_vp_[static_cast<size_t>(vp)] : nullptr;
    return r && r->reserve.load(std::memory_order_acquire) != nullptr;
  }
};

}  // namespace sa::shim
