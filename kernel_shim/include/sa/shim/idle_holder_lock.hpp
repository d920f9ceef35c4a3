#pragma once
// IdleHolderLock: a mutex that one idle-class thread (SCHED_IDLE: the block
// monitor, which runs only where nothing else wants the CPU) shares with
// normal threads (the sysmon, activations attaching and detaching).
//
// Problem: a SCHED_IDLE holder preempted by a CPU-bound thread on its CPU
// keeps the lock until that CPU idles again, or until its own sliver of the
// CPU comes round: after running alone, 1.36-1.38 s here
// (bench_idle_class_wait), while every waiter stalls. The kernel's priority
// inheritance (PI futexes) lifts real-time priorities only.
//
// Design: priority inheritance by hand. The holder's thread id is kept; a
// normal waiter that has waited kLiftAfter lifts the idle thread, if it is
// the holder, to SCHED_OTHER (it then gets its fair share and finishes its
// section), counts the lift, and waits on. The idle thread drops back to
// SCHED_IDLE itself, where it holds nothing (drop_lift(), before it
// sleeps). A lift that lands just after its look keeps it at normal class
// until its next look: one wake-up at normal class, at worst.

#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

namespace sa::shim {

class IdleHolderLock {
 public:
  static constexpr std::chrono::microseconds kLiftAfter{50};

  // set_idle_thread() names the calling thread as the idle-class one.
  void set_idle_thread() noexcept { idle_tid_.store(tid(), std::memory_order_release); }

  void lock() noexcept {
    const int self = tid();
    bool got = m_.try_lock();
    if (!got && self != idle_tid_.load(std::memory_order_acquire)) {
      // A normal waiter: look again for kLiftAfter (the holder's sections
      // last microseconds), then lift an idle-class holder and wait.
      // (Polling, not std::timed_mutex: TSan does not see its clocklock.)
      const auto until = std::chrono::steady_clock::now() + kLiftAfter;
      while (!(got = m_.try_lock()) && std::chrono::steady_clock::now() < until) ::sched_yield();
      const int holder = holder_.load(std::memory_order_acquire);
      if (!got && holder != 0 && holder == idle_tid_.load(std::memory_order_acquire)) {
        sched_param none{};
        if (::sched_setscheduler(holder, SCHED_OTHER, &none) == 0) lifts_.fetch_add(1, std::memory_order_seq_cst);
      }
    }
    if (!got) m_.lock();
    holder_.store(self, std::memory_order_release);
  }
  bool try_lock() noexcept {
    if (!m_.try_lock()) return false;
    holder_.store(tid(), std::memory_order_release);
    return true;
  }
  void unlock() noexcept {
    holder_.store(0, std::memory_order_release);
    m_.unlock();
  }

  // lifts() counts the waiters' lifts of the idle thread.
  uint32_t lifts() const noexcept { return lifts_.load(std::memory_order_acquire); }
  // drop_lift() is called by the idle thread where it holds no lock: back
  // to SCHED_IDLE if it was lifted since `seen` (updated).
  void drop_lift(uint32_t& seen) noexcept {
    const uint32_t n = lifts_.load(std::memory_order_seq_cst);
    if (n == seen) return;
    seen = n;
    sched_param none{};
    ::sched_setscheduler(0, SCHED_IDLE, &none);
  }

 private:
  static int tid() noexcept {
    thread_local const int t = static_cast<int>(::gettid());
    return t;
  }

  std::mutex m_;
  std::atomic<int> holder_{0};    // thread id of the holder, 0 when free
  std::atomic<int> idle_tid_{0};  // the idle-class thread (set_idle_thread)
  std::atomic<uint32_t> lifts_{0};
};

}  // namespace sa::shim
