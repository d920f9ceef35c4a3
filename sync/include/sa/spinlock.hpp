#pragma once
// sa::Spinlock: a lock for very short critical sections that never parks.
// Test-and-test-and-set with exponential backoff (Anderson 1990; Mellor-
// Crummey and Scott 1991, "Algorithms for Scalable Synchronization on
// Shared-Memory Multiprocessors"). A waiter that has spun for long yields its
// fiber now and then, so a holder that yielded on the same VProc still runs.
//
// Preemption awareness (a waiter that stops spinning when the holder's
// activation is preempted, I5) comes with the preemption issue: the lock
// already records its holder for that.

#include <atomic>

#include <sa/detail/spin_lock.hpp>
#include <sa/fiber.hpp>

namespace sa {

namespace detail {
// current_fiber_id() is the running fiber's id, or 0 outside the runtime.
FiberId current_fiber_id() noexcept;
}  // namespace detail

class Spinlock {
 public:
  Spinlock() = default;
  Spinlock(const Spinlock&) = delete;
  Spinlock& operator=(const Spinlock&) = delete;

  // lock() spins until it holds the lock. Never parks the fiber; may yield
  // it after a long wait. Never blocks the kernel thread in the kernel.
  void lock() noexcept {
    if (try_lock()) return;
    lock_slow();
  }
  // try_lock() takes the lock if it is free; never blocks.
  bool try_lock() noexcept {
    // acquire: the critical section sees the previous holder's writes.
    if (locked_.load(std::memory_order_relaxed) || locked_.exchange(true, std::memory_order_acquire)) return false;
    holder_.store(detail::current_fiber_id(), std::memory_order_relaxed);
    return true;
  }
  // unlock() releases the lock; never blocks.
  void unlock() noexcept {
    holder_.store(0, std::memory_order_relaxed);
    locked_.store(false, std::memory_order_release);  // release: publish the section
  }
  // holder() is the id of the fiber holding the lock (0: free, or a thread
  // outside the runtime). A snapshot, for diagnostics and the shim.
  FiberId holder() const noexcept { return holder_.load(std::memory_order_relaxed); }

 private:
  void lock_slow() noexcept;

  std::atomic<bool> locked_{false};
  std::atomic<FiberId> holder_{0};
};

}  // namespace sa
