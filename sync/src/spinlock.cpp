#include <sa/spinlock.hpp>

#include <sa/detail/runtime_core.hpp>

namespace sa {

namespace detail {
FiberId current_fiber_id() noexcept {
  FiberCtl* f = current_fiber();
  return f ? f->id : 0;
}
}  // namespace detail

void Spinlock::lock_slow() noexcept {
  constexpr int kMaxBackoff = 1024;  // pauses between looks, at most
  constexpr int kYieldAfter = 64;    // backoff rounds before yielding the fiber
  int backoff = 1;
  unsigned waits = 0;
  for (;;) {
    while (locked_.load(std::memory_order_relaxed)) {
      for (int i = 0; i < backoff; ++i) SA_CPU_RELAX();
      if (backoff < kMaxBackoff) backoff *= 2;
      if (++waits % kYieldAfter == 0) detail::yield();
    }
    if (try_lock()) return;
  }
}

}  // namespace sa
