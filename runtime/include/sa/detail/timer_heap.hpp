#pragma once
// TimerHeap: the deadlines of the fibers parked on one VProc with a timeout
// (sleep_for, wait_for, ...). A binary min-heap of intrusive TimerNodes that
// live on the sleeping fibers' stacks.
//
// Protocol: only the owner VProc arms timers (for the fiber it is running)
// and fires them (in its scheduler loop); a fiber disarms its own node when it
// resumes, possibly on another VProc. A SpinLock guards the heap for that one
// cross-VProc case. fire_expired() does the wake-up CAS under the lock, so a
// fiber that was notified instead, and disarms under the same lock, can never
// see its node (or its Waiter) used after it returns.

#include <atomic>
#include <cstdint>
#include <limits>
#include <vector>

#include <sa/detail/spin_lock.hpp>
#include <sa/detail/waiter.hpp>

namespace sa::detail {

class TimerHeap;

struct TimerNode {
  int64_t deadline = 0;  // steady_clock nanoseconds
  Waiter* waiter = nullptr;
  uint64_t seq = 0;    // arming order: equal deadlines fire first-armed first
  int32_t index = -1;  // position in the heap, -1 when not in it
  TimerHeap* heap = nullptr;
};

class TimerHeap {
 public:
  static constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

  // arm() adds `n` (deadline and waiter set); owner VProc only.
  void arm(TimerNode* n);
  // disarm() removes `n` if it is still armed; any thread.
  void disarm(TimerNode* n) noexcept;
  // fire_expired() times out every waiter whose deadline is <= now; owner only.
  // Returns how many fibers it woke.
  int fire_expired(int64_t now) noexcept;
  // next_deadline() is the earliest deadline, or kNever; one relaxed load.
  int64_t next_deadline() const noexcept { return next_.load(std::memory_order_relaxed); }
  bool empty() const noexcept { return next_deadline() == kNever; }

 private:
  void sift_up(size_t i) noexcept;
  void sift_down(size_t i) noexcept;
  void place(size_t i, TimerNode* n) noexcept {
    heap_[i] = n;
    n->index = static_cast<int32_t>(i);
  }
  void remove_at(size_t i) noexcept;
  static bool before(const TimerNode* a, const TimerNode* b) noexcept {
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
  }
  void publish() noexcept { next_.store(heap_.empty() ? kNever : heap_[0]->deadline, std::memory_order_relaxed); }

  SpinLock lock_;
  std::vector<TimerNode*> heap_;
  uint64_t seq_ = 0;
  std::atomic<int64_t> next_{kNever};
};

}  // namespace sa::detail
