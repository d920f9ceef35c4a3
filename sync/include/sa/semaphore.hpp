#pragma once
// sa::Semaphore: a counting semaphore for fibers. release() hands permits
// straight to waiters in FIFO order (no barging past a waiter), and works
// from threads outside the runtime.

#include <atomic>
#include <chrono>
#include <cstddef>

#include <sa/detail/wait_queue.hpp>

namespace sa {

class Semaphore {
 public:
  // Throws std::invalid_argument if `initial` < 0.
  explicit Semaphore(std::ptrdiff_t initial = 0);
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  // acquire() takes one permit; may block the fiber.
  void acquire() noexcept {
    if (!try_acquire()) acquire_slow(detail::TimerHeap::kNever);
  }
  // try_acquire() takes a permit if one is free; never blocks.
  bool try_acquire() noexcept {
    std::ptrdiff_t c = count_.load(std::memory_order_relaxed);
    while (c > 0)
      // acquire: see what the releaser did before release().
      if (count_.compare_exchange_weak(c, c - 1, std::memory_order_acquire, std::memory_order_relaxed)) return true;
    return false;
  }
  // try_acquire_until() is acquire() that gives up at `deadline`.
  bool try_acquire_until(std::chrono::steady_clock::time_point deadline) noexcept {
    return try_acquire() || acquire_slow(detail::to_ns(deadline));
  }
  template <class Rep, class Period>
  bool try_acquire_for(std::chrono::duration<Rep, Period> d) noexcept {
    return try_acquire_until(std::chrono::steady_clock::now() +
                             std::chrono::ceil<std::chrono::steady_clock::duration>(d));
  }
  // release() returns `n` permits, waking waiters first; never blocks.
  // Throws std::invalid_argument if n < 0.
  void release(std::ptrdiff_t n = 1);

  // available() is the number of free permits (a snapshot).
  std::ptrdiff_t available() const noexcept { return count_.load(std::memory_order_relaxed); }

 private:
  bool acquire_slow(int64_t deadline_ns) noexcept;

  std::atomic<std::ptrdiff_t> count_;
  detail::WaitQueue waiters_;
};

}  // namespace sa
