#pragma once
// NullUpcalls: an UpcallHandler that does nothing, for tests that drive the
// kernel shim directly and care about one or two upcalls at most (override
// those).

#include <sa/shim/shim.hpp>

namespace sa_test {

struct NullUpcalls : sa::shim::UpcallHandler {
  void processor_added(int) noexcept override {}
  void activation_blocked(int, sa::shim::Activation&) noexcept override {}
  void activation_unblocked(sa::shim::Activation&) noexcept override {}
  void held_queued() noexcept override {}
  void activation_held(sa::shim::Activation&) noexcept override {}
  void processor_taken(int, sa::shim::Activation&) noexcept override {}
  void processor_preempted(int, sa::shim::Activation&) noexcept override {}
};

}  // namespace sa_test
