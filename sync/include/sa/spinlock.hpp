#pragma once
// sa::Spinlock: a lock for very short critical sections, aware of kernel
// preemption (I5).
//
// Problem (Anderson et al., section 2.1): the kernel may preempt the kernel
// thread whose fiber holds a spinlock; every waiter then spins, burning its
// processor, until the holder gets a CPU again, a whole time slice later.
//
// Design:
//   - Test-and-test-and-set with exponential backoff (Anderson 1990; Mellor-
//     Crummey and Scott 1991, "Algorithms for Scalable Synchronization on
//     Shared-Memory Multiprocessors") while the holder runs.
//   - The lock word is the holder's activation (plus two flag bits), so a
//     waiter learns who holds the lock from the word it spins on, and
//     unlock() from the word it swaps out: one atomic operation to take the
//     lock, one to release it, one cache line. (The first version kept the
//     holder in two more fields beside the flag word; their stores on every
//     acquisition pulled the line back from the spinning waiters. Without
//     hogs the change gained 11-16% in the host's fast mode and 21-30% in
//     its slow one: as many acquisitions as a naive TAS lock now
//     (bench/results/spinlock-lock-word.md).) With ShimMode::on every
//     activation's on-CPU state is a word the kernel keeps
//     (shim/run_state.hpp); a waiter reads it with a few loads, the way a
//     paravirtualised guest's spinlock reads vcpu_is_preempted().
//   - A waiter spins while the holder's activation is Running, or has been
//     off its CPU for less than 50 µs (most preemptions are that short: a
//     wake-up of the sysmon, a kworker; a CPU hog's time slice is
//     milliseconds). When it is Preempted (or Sleeping in the kernel) for
//     longer, the waiter recovers:
//       1. If its VProc has nothing else to run, it donates its CPU: the shim
//          pins the holder activation to the waiter's CPU (the kernel
//          migrates a runnable thread at once) and marks it donated.
//       2. It parks its fiber on the lock (bit kParked), so its VProc runs
//          other fibers, or goes idle and leaves the CPU to the holder.
//       3. unlock() sees kParked and wakes the parked waiters, and, if the
//          holder was donated a CPU, then re-pins it to its own processor's
//          CPU. A donor woken first (it may preempt the holder on the
//          donated CPU) re-pins the holder itself.
//   - A fiber holding an sa::Spinlock is in a critical section
//     (detail::tl_critical_depth): the runtime never deschedules it, and
//     the outermost section runs as runtime code (activation Running), so
//     a block inside it (a page fault) keeps its VProc rather than handing
//     it to a spare; a waiter that itself holds another Spinlock never
//     parks or yields, it only spins.
//
// Why the recovery is safe:
//   - Donation changes only where the kernel runs the holder, never what it
//     runs or which VProc it owns: the holder stays the only activation
//     running its VProc, and the waiter's activation stops using its CPU
//     (its fiber parks; its VProc runs other fibers or sleeps), so no more
//     activations run user code than before (I1).
//   - Every donation ends: the holder's unlock exchanges the lock word and
//     then loads `donated` (both seq_cst); the donor stores `donated`
//     (seq_cst) before it pins the holder and re-checks after that the lock
//     word still names the holder. So either the unlock sees the flag and
//     re-pins itself, or the donor sees the lock released or passed on and
//     ends the donation itself (Shim::end_donation clears the flag with one
//     exchange: one of them re-pins, never both, never neither; the woken
//     donor's own call is one more contender for the same exchange).
//   - Parking cannot miss its wake-up: the waiter sets kParked with a CAS
//     that succeeds only while the lock is held, under the lock's wait-list
//     lock, and links itself before releasing that lock (waiter.hpp's park
//     protocol); unlock() clears the word with one exchange, so it sees
//     kParked and takes the wait-list lock before waking.
//
// Rejected: yielding the fiber in a loop while the holder is preempted (the
// VProc spins through the run queue instead: the same waste); widening the
// holder's affinity to both CPUs (the kernel leaves a runnable thread on its
// run queue when its CPU stays allowed: no migration, no recovery); waking
// parked waiters one at a time (a waiter woken just before the holder is
// preempted again would wait a second round).
//
// With ShimMode::off (or without perf records) the holder's state is
// Unknown and the lock is plain TTAS that yields its fiber now and then: the
// baseline of the tour and bench/run spinlock.

#include <atomic>
#include <cstdint>

#include <sa/detail/runtime_core.hpp>
#include <sa/detail/spin_lock.hpp>
#include <sa/detail/waiter.hpp>
#include <sa/fiber.hpp>
#include <sa/shim/activation.hpp>

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

  // lock() takes the lock: spins while the holder runs; while the holder's
  // activation is preempted it may park the fiber (never when the caller
  // already holds a Spinlock). Blocks the kernel thread only when called
  // outside the runtime and the holder is preempted.
  void lock() noexcept {
    if (try_lock()) return;
    lock_slow();
  }
  // try_lock() takes the lock if it is free; never blocks.
  bool try_lock() noexcept {
    if (word_.load(std::memory_order_relaxed) != 0) return false;
    // The outermost section runs as runtime code (Running): a block inside
    // it keeps the VProc, and a Lost activation holds before it takes the
    // lock. One CAS with the shim on, a load without.
    const bool outermost = detail::tl_critical_depth == 0;
    const bool entered = outermost && shim::Shim::enter_runtime();
    uintptr_t free = 0;
    // acquire: the critical section sees the previous holder's writes.
    if (!word_.compare_exchange_strong(free, held_by(shim::Activation::current()), std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
      if (entered) shim::Shim::leave_runtime();
      return false;
    }
    if (outermost) detail::tl_critical_entered = entered;
    holder_.store(detail::current_fiber_id(), std::memory_order_relaxed);
    ++detail::tl_critical_depth;
    return true;
  }
  // unlock() releases the lock, wakes parked waiters and ends a donation;
  // never blocks.
  void unlock() noexcept {
    // seq_cst (release, and ordered before the load of `donated`: see the
    // design comment). One atomic operation: the old word names the holder.
    const uintptr_t old = word_.exchange(0, std::memory_order_seq_cst);
    shim::Activation* self = activation_of(old);
    if ((old & kParked) || (self && self->donated.load(std::memory_order_seq_cst))) unlock_slow(old, self);
    if (--detail::tl_critical_depth == 0 && detail::tl_critical_entered) {
      detail::tl_critical_entered = false;
      shim::Shim::leave_runtime();  // Running -> User
    }
    // The end of a critical section is a safe point (processor revocation).
    if (self && self->safepoint_requested.load(std::memory_order_relaxed)) detail::safe_point();
  }
  // holder() is the id of the fiber holding the lock (0: free, or a thread
  // outside the runtime). A snapshot, for diagnostics: racing with a hand
  // over it may name the previous holder.
  FiberId holder() const noexcept {
    return word_.load(std::memory_order_acquire) != 0 ? holder_.load(std::memory_order_relaxed) : 0;
  }

 private:
  // The lock word: 0 when free; otherwise kLocked, the holder's activation
  // (null for a thread outside activations mode) and kParked. Waiters learn
  // the holder from the word they spin on, and unlock() from the word it
  // swaps out: taking and releasing the lock each write one cache line once.
  static constexpr uintptr_t kParked = 1;  // waiters are parked on waiters_
  static constexpr uintptr_t kLocked = 2;  // held
  static constexpr uintptr_t kFlags = kParked | kLocked;
  static_assert(alignof(shim::Activation) > kFlags, "the flags live in an Activation pointer's low bits");
  static uintptr_t held_by(shim::Activation* a) noexcept { return reinterpret_cast<uintptr_t>(a) | kLocked; }
  static shim::Activation* activation_of(uintptr_t word) noexcept {
    return reinterpret_cast<shim::Activation*>(word & ~kFlags);
  }

  void lock_slow() noexcept;
  void unlock_slow(uintptr_t old, shim::Activation* self) noexcept;
  // wait_for_holder() is the recovery: the holder `h` is not on a CPU.
  void wait_for_holder(shim::Activation* h, shim::CpuState state) noexcept;

  std::atomic<uintptr_t> word_{0};
  // The holding fiber's id, written by each holder after it takes the lock
  // and never cleared (holder() reads it only while the word is held): for
  // diagnostics, off the waiters' path.
  std::atomic<FiberId> holder_{0};
  detail::SpinLock lock_;     // guards waiters_
  detail::WaitList waiters_;  // fibers (or threads) parked while the holder was preempted
};

}  // namespace sa
