#pragma once
// Waiter and WaitList: how a fiber, or a kernel thread outside the runtime,
// waits on a synchronisation object.
//
// A Waiter lives on the waiting side's stack. Whoever moves its `state` from
// Waiting to Notified or TimedOut with one CAS (try_wake) owns the wake-up: it
// readies the fiber, or futex-wakes the thread. A notifier and a timer may race
// for the same waiter; exactly one wins, and a notifier that loses moves on to
// the next waiter so no notification is lost.
//
// Park protocol (fiber side), the pattern of Go's gopark(unlockf):
//   1. Lock the object's SpinLock, check the condition, link the Waiter.
//   2. park(w, lock, deadline): switch away; on the far side of the
//      switch, once the fiber's context is saved, arm a timer on this VProc
//      if there is a deadline, then release the lock.
//   3. A waker takes the lock, unlinks the Waiter, try_wake()s it; the fiber
//      can only be readied after step 2 completed, because the waker needed
//      the lock that step 2 released last.
//   4. The fiber resumes, disarms its timer and, if it timed out, relocks and
//      unlinks itself if still linked.
//
// Spin-then-park (park_spin(), runtime_core.hpp; folly's Baton and Linux's
// adaptive mutexes do the same): a waiter whose VProc has nothing else to
// run spins for a moment before it switches away, so that a wake-up from
// another CPU during the spin costs no switch, no queue and no wake-up of a
// VProc: the waker's CAS and the spinner's load are the whole exchange.
//   S1. Under the object's lock, with the Waiter linked: state := Spinning;
//       release the lock (which publishes the state to the next waker).
//   S2. Spin while the state is Spinning, for at most kParkSpinNs, and
//       only while this VProc has nothing else to do (its inbox, run queue
//       and `attention`, looked at every 8th turn) and no timer of its own
//       falls due.
//   S3. A waker's try_wake() CASes Spinning -> Notified and readies
//       nothing: the spinner sees it in S2, or in S4.
//   S4. The spin ended unwoken: the fiber parks (Parked) and switches away;
//       on the far side of the switch, its context saved, CAS Spinning ->
//       Waiting. Success: it is parked as in step 2 above, and a later
//       try_wake() readies it. Failure: a waker came during the switch, so
//       the far side readies the fiber itself (nobody else will).
// A Spinning fiber is still Running: it holds its VProc, as any fiber
// running code does, and no waker touches it, so a stale context is never
// resumed. Work queued where the spin does not look (the global queue,
// other VProcs' run queues) waits at most kParkSpinNs for this VProc, as it
// would beside a fiber computing: I2 is about idle VProcs, and this one is
// not. Only bound fibers spin (park_spin says why), and never on a VProc
// with an I/O poller, whose completions only its own polls reap.

#include <atomic>
#include <cstdint>

#include <sa/detail/fiber_ctl.hpp>

namespace sa::detail {

enum class WaitState : uint32_t {
  Waiting,   // linked in a wait list or about to be; nobody has woken it
  Notified,  // a notifier won the wake-up
  TimedOut,  // the deadline won
  Spinning,  // as Waiting, but the fiber is still running (park_spin, S1-S4): a waker readies nothing
};

// current_fiber() is the fiber running on the calling thread, or null.
FiberCtl* current_fiber() noexcept;

struct Waiter {
  Waiter() noexcept : fiber(current_fiber()) {}
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  // 48 bytes, packed so that a Waiter and a small payload beside it fill
  // one cache line (Channel::recv): a waker on another CPU touches them all.
  std::atomic<uint32_t> state{static_cast<uint32_t>(WaitState::Waiting)};
  bool linked = false;        // in a WaitList, guarded by the owner's lock
  FiberCtl* fiber;            // the waiting fiber; null: a kernel thread outside the runtime
  Waiter* next = nullptr;     // WaitList hooks, guarded by the owner's lock
  Waiter* prev = nullptr;
  void* slot = nullptr;       // payload for the object (Channel: where a value goes)
  uint64_t tag = 0;           // payload for the object (Semaphore: permits wanted)

  WaitState load() const noexcept { return static_cast<WaitState>(state.load(std::memory_order_acquire)); }
};
static_assert(sizeof(void*) != 8 || sizeof(Waiter) == 48, "Waiter's layout comment is out of date");

// try_wake() moves `w` from Waiting (or Spinning) to `how` and readies its
// fiber or wakes its thread (a Spinning fiber sees the change itself); false
// if someone else already did. Never blocks.
bool try_wake(Waiter* w, WaitState how = WaitState::Notified) noexcept;

// An intrusive FIFO of Waiters; the owner's lock guards every call.
class WaitList {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  Waiter* front() const noexcept { return head_; }
  void push_back(Waiter* w) noexcept {
    w->next = nullptr;
    w->prev = tail_;
    if (tail_) tail_->next = w; else head_ = w;
    tail_ = w;
    w->linked = true;
  }
  // push_front() queues `w` ahead of every waiter: one that was waiting
  // before them elsewhere (Channel's fast slot).
  void push_front(Waiter* w) noexcept {
    w->prev = nullptr;
    w->next = head_;
    if (head_) head_->prev = w; else tail_ = w;
    head_ = w;
    w->linked = true;
  }
  Waiter* pop_front() noexcept {
    Waiter* w = head_;
    if (w) remove(w);
    return w;
  }
  void remove(Waiter* w) noexcept {
    if (w->prev) w->prev->next = w->next; else head_ = w->next;
    if (w->next) w->next->prev = w->prev; else tail_ = w->prev;
    w->next = w->prev = nullptr;
    w->linked = false;
  }
  // wake_one() wakes the first waiter that is still waiting; false if none.
  bool wake_one() noexcept {
    while (Waiter* w = pop_front())
      if (try_wake(w)) return true;
    return false;
  }
  // wake_all() wakes every waiter; returns how many it woke.
  int wake_all() noexcept {
    int n = 0;
    while (Waiter* w = pop_front()) n += try_wake(w) ? 1 : 0;
    return n;
  }

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
};

}  // namespace sa::detail
