#pragma once
// sa::Barrier, sa::WaitGroup, sa::Latch and sa::Event: one-shot and cyclic
// rendezvous for fibers. All block fibers, never kernel threads; their
// releasing operations (arrive, done, count_down, set) work from any thread.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include <sa/detail/wait_queue.hpp>

namespace sa {

// Barrier: `parties` fibers meet; the last to arrive releases the others. Cyclic.
class Barrier {
 public:
  // Throws std::invalid_argument if parties < 1.
  explicit Barrier(std::size_t parties);
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;

  // arrive_and_wait() blocks the fiber until `parties` have arrived in this
  // round; returns true in exactly one of them (the last to arrive).
  bool arrive_and_wait() noexcept;

 private:
  const std::size_t parties_;
  std::size_t arrived_ = 0;  // guarded by waiters_.lock()
  uint64_t round_ = 0;       // guarded by waiters_.lock()
  detail::WaitQueue waiters_;
};

// WaitGroup (Go's sync.WaitGroup): wait() returns once the counter is zero.
class WaitGroup {
 public:
  WaitGroup() = default;
  WaitGroup(const WaitGroup&) = delete;
  WaitGroup& operator=(const WaitGroup&) = delete;

  // add() adds `n` (may be negative) to the counter; never blocks. Throws
  // std::logic_error if the counter would go negative.
  void add(int64_t n = 1);
  // done() is add(-1).
  void done() { add(-1); }
  // wait() blocks the fiber until the counter is zero.
  void wait() noexcept;
  // wait_until() is wait() that returns false at `deadline`.
  bool wait_until(std::chrono::steady_clock::time_point deadline) noexcept;
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) noexcept {
    return wait_until(std::chrono::steady_clock::now() + std::chrono::ceil<std::chrono::steady_clock::duration>(d));
  }
  int64_t count() const noexcept { return count_.load(std::memory_order_acquire); }

 private:
  std::atomic<int64_t> count_{0};
  detail::WaitQueue waiters_;
};

// Latch (std::latch for fibers): counts down once to zero, then stays open.
class Latch {
 public:
  // Throws std::invalid_argument if count < 0.
  explicit Latch(std::ptrdiff_t count);
  Latch(const Latch&) = delete;
  Latch& operator=(const Latch&) = delete;

  // count_down() decrements by n; never blocks. Throws std::logic_error if
  // it would go below zero.
  void count_down(std::ptrdiff_t n = 1) { group_.add(-n); }
  // try_wait() is true once the count is zero; never blocks.
  bool try_wait() const noexcept { return group_.count() == 0; }
  // wait() blocks the fiber until the count is zero.
  void wait() noexcept { group_.wait(); }
  // arrive_and_wait() is count_down(n) then wait().
  void arrive_and_wait(std::ptrdiff_t n = 1) {
    count_down(n);
    wait();
  }

 private:
  WaitGroup group_;
};

// Event: a manual-reset event. set() opens it and wakes every waiter; it
// stays open until reset().
class Event {
 public:
  Event() = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // set() opens the event and wakes all waiters; never blocks.
  void set() noexcept;
  // reset() closes it; never blocks.
  void reset() noexcept { set_.store(false, std::memory_order_relaxed); }
  bool is_set() const noexcept { return set_.load(std::memory_order_acquire); }
  // wait() blocks the fiber until the event is set.
  void wait() noexcept;
  // wait_until() is wait() that returns false at `deadline`.
  bool wait_until(std::chrono::steady_clock::time_point deadline) noexcept;
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) noexcept {
    return wait_until(std::chrono::steady_clock::now() + std::chrono::ceil<std::chrono::steady_clock::duration>(d));
  }

 private:
  std::atomic<bool> set_{false};
  detail::WaitQueue waiters_;
};

}  // namespace sa
