#pragma once
// SpinLock: the runtime's internal lock for short critical sections (wait
// lists, the global queue, timer heaps). Test-and-test-and-set with a pause
// between tries (Anderson, "The Performance of Spin Lock Alternatives for
// Shared-Memory Multiprocessors", 1990). Never held across a context switch
// except by park(), which releases it on the far side of the switch.
// Distinct from the public sa::Spinlock, which records its holder for the
// preemption-aware recovery.

#include <atomic>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SA_CPU_RELAX() _mm_pause()
#else
#define SA_CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

namespace sa::detail {

// How many SpinLocks the calling kernel thread holds (a lock is released on
// the thread that took it, park()'s too: on the far side of its switch, on
// the same thread). A page fault taken with one held must not park its
// fiber (PagedFaultMode::park_fiber): another fiber of this thread could
// spin on it for ever.
inline constinit thread_local int tl_spin_locks = 0;

class SpinLock {
 public:
  // lock() spins until the lock is free; never blocks the fiber or the
  // kernel thread in the kernel.
  void lock() noexcept {
    for (;;) {
      // acquire: the critical section sees what the previous holder wrote.
      if (!locked_.exchange(true, std::memory_order_acquire)) {
        ++tl_spin_locks;
        return;
      }
      // Spin on a plain load so waiters share the cache line read-only.
      while (locked_.load(std::memory_order_relaxed)) SA_CPU_RELAX();
    }
  }
  bool try_lock() noexcept {
    const bool got = !locked_.load(std::memory_order_relaxed) && !locked_.exchange(true, std::memory_order_acquire);
    if (got) ++tl_spin_locks;
    return got;
  }
  // release: publishes the critical section to the next holder.
  // The count drops after the store: were the store to fault (a lock in a
  // PagedRegion page), the fault must still see the lock held.
  void unlock() noexcept {
    locked_.store(false, std::memory_order_release);
    --tl_spin_locks;
  }

 private:
  std::atomic<bool> locked_{false};
};

}  // namespace sa::detail
