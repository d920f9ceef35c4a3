#pragma once
// WaitQueue: a SpinLock and a WaitList, with the park protocol of waiter.hpp
// wrapped for the synchronisation objects whose waiters need no payload.

#include <sa/detail/runtime_core.hpp>
#include <sa/detail/waiter.hpp>

namespace sa::detail {

class WaitQueue {
 public:
  // wait_if() parks the caller while `blocked()` (evaluated under the lock)
  // is true, until notified or `deadline_ns`. Returns Notified at once when
  // `blocked()` is false. Blocks the fiber (outside the runtime: the thread).
  template <class Blocked>
  WaitState wait_if(Blocked blocked, int64_t deadline_ns = TimerHeap::kNever) noexcept {
    RuntimeSection section;  // no shim handoff while we hold the lock
    lock_.lock();
    if (!blocked()) {
      lock_.unlock();
      return WaitState::Notified;
    }
    Waiter w;
    list_.push_back(&w);
    WaitState s = park_spin(w, &lock_, deadline_ns);  // a bound fiber may spin first
    if (s == WaitState::TimedOut) unlink(w);
    return s;
  }

  // unlink() removes a timed-out waiter if a notifier has not already.
  void unlink(Waiter& w) noexcept {
    RuntimeSection section;  // no shim handoff while we hold the lock
    lock_.lock();
    if (w.linked) list_.remove(&w);
    lock_.unlock();
  }

  // notify_one() wakes the oldest waiter; false if there was none. Never blocks.
  bool notify_one() noexcept {
    RuntimeSection section;  // no shim handoff while we hold the lock
    lock_.lock();
    bool woke = list_.wake_one();
    lock_.unlock();
    return woke;
  }
  // notify_all() wakes every waiter. Never blocks.
  void notify_all() noexcept {
    RuntimeSection section;  // no shim handoff while we hold the lock
    lock_.lock();
    list_.wake_all();
    lock_.unlock();
  }

  SpinLock& lock() noexcept { return lock_; }
  WaitList& list() noexcept { return list_; }

 private:
  SpinLock lock_;
  WaitList list_;
};

}  // namespace sa::detail
