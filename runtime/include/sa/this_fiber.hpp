#pragma once
// sa::this_fiber: what the running fiber can do to itself.

#include <chrono>

#include <sa/fiber.hpp>

namespace sa::this_fiber {

// yield() lets the other ready fibers of this VProc run first; returns at
// once if there are none. Outside the runtime it yields the kernel thread.
void yield() noexcept;

// maybe_yield() is a safe point for time slices (Options::time_slice):
// it yields if this fiber's slice ran out while other fibers wait for its
// VProc, and costs one load otherwise. Call it in long loops that never
// wait. Outside the runtime, inside an sa::Spinlock's critical section, or
// with time slices off, it does nothing.
void maybe_yield() noexcept;

// sleep_until() parks the calling fiber until `deadline` (a timer on its
// VProc); other fibers run meanwhile. Outside the runtime it sleeps the
// kernel thread.
void sleep_until(std::chrono::steady_clock::time_point deadline) noexcept;

// sleep_for() is sleep_until(now + d).
template <class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> d) noexcept {
  if (d <= d.zero()) {
    yield();
    return;
  }
  auto now = std::chrono::steady_clock::now();
  auto max_d = std::chrono::steady_clock::time_point::max() - now;
  // Compare in floating point: converting hours::max() to nanoseconds overflows.
  if (std::chrono::duration<double>(d) >= std::chrono::duration<double>(max_d)) {
    sleep_until(std::chrono::steady_clock::time_point::max());
    return;
  }
  sleep_until(now + std::chrono::ceil<std::chrono::steady_clock::duration>(d));
}

// id() is the calling fiber's id; 0 outside the runtime.
FiberId id() noexcept;

// vproc() is the index of the VProc running the calling fiber; -1 outside.
// A fiber that is not bound may be on another VProc after it waits or yields.
int vproc() noexcept;

}  // namespace sa::this_fiber
