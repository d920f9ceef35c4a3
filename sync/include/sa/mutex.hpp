#pragma once
// sa::Mutex: a mutual-exclusion lock that blocks fibers, never kernel threads.
//
// Algorithm: Drepper's "mutex2" (Futexes Are Tricky, 2011) with the futex
// replaced by a WaitQueue of fibers. state_ is 0 (unlocked), 1 (locked) or 2
// (locked, maybe waiters). A contended lock() spins briefly (the holder may
// be running on another VProc), then sets 2 and parks while the state is 2
// (a fiber bound to an otherwise idle VProc spins a moment more first:
// detail::park_spin);
// unlock() that finds 2 wakes one waiter, which competes again (barging: the
// lock goes to whoever runs first, which keeps throughput up under contention;
// a woken waiter retries with state 2 so it is never lost).
// Works from threads outside the runtime too: they block on a futex.

#include <atomic>
#include <chrono>
#include <cstdint>

#include <sa/detail/wait_queue.hpp>

namespace sa {

class Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  // lock() acquires the mutex; may block the fiber (never its kernel thread).
  void lock() noexcept {
    uint32_t c = 0;
    // acquire: the critical section sees the previous holder's writes.
    if (state_.compare_exchange_strong(c, 1, std::memory_order_acquire, std::memory_order_relaxed)) return;
    lock_slow(detail::TimerHeap::kNever);
  }
  // try_lock() acquires the mutex if it is free; never blocks.
  bool try_lock() noexcept {
    uint32_t c = 0;
    return state_.compare_exchange_strong(c, 1, std::memory_order_acquire, std::memory_order_relaxed);
  }
  // try_lock_until() is lock() that gives up at `deadline`; may block the fiber.
  bool try_lock_until(std::chrono::steady_clock::time_point deadline) noexcept {
    return try_lock() || lock_slow(detail::to_ns(deadline));
  }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) noexcept {
    return try_lock_until(std::chrono::steady_clock::now() + std::chrono::ceil<std::chrono::steady_clock::duration>(d));
  }
  // unlock() releases the mutex and wakes a waiter if any; never blocks.
  // Any thread may call it (the runtime does not track the owner).
  void unlock() noexcept {
    // release: publish the critical section.
    if (state_.exchange(0, std::memory_order_release) == 2) waiters_.notify_one();
  }

 private:
  bool lock_slow(int64_t deadline_ns) noexcept;

  std::atomic<uint32_t> state_{0};
  detail::WaitQueue waiters_;
};

}  // namespace sa
