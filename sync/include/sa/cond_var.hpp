#pragma once
// sa::CondVar: a condition variable for fibers. Works with any Lockable
// (std::unique_lock<sa::Mutex> above all). notify_one/notify_all work from
// threads outside the runtime; so does waiting (it blocks the thread).
//
// The waiter is linked under the CondVar's own lock before the user's lock
// is released, and the CondVar's lock is released only after the fiber's
// context is saved (park), so a notify between "unlock" and "sleep" is never
// lost. notify_one() skips waiters whose timeout already won.

#include <chrono>
#include <condition_variable>  // std::cv_status

#include <sa/detail/wait_queue.hpp>

namespace sa {

class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // wait() releases `lock`, parks until notified (spurious wake-ups are
  // possible, as with std::condition_variable), and relocks. Blocks the fiber.
  template <class Lock>
  void wait(Lock& lock) {
    wait_ns(lock, detail::TimerHeap::kNever);
  }
  template <class Lock, class Pred>
  void wait(Lock& lock, Pred pred) {
    while (!pred()) wait(lock);
  }

  // wait_until() is wait() that returns cv_status::timeout at `deadline`.
  template <class Lock>
  std::cv_status wait_until(Lock& lock, std::chrono::steady_clock::time_point deadline) {
    return wait_ns(lock, detail::to_ns(deadline));
  }
  template <class Lock, class Pred>
  bool wait_until(Lock& lock, std::chrono::steady_clock::time_point deadline, Pred pred) {
    while (!pred())
      if (wait_until(lock, deadline) == std::cv_status::timeout) return pred();
    return true;
  }
  template <class Lock, class Rep, class Period>
  std::cv_status wait_for(Lock& lock, std::chrono::duration<Rep, Period> d) {
    return wait_until(lock, deadline_after(d));
  }
  template <class Lock, class Rep, class Period, class Pred>
  bool wait_for(Lock& lock, std::chrono::duration<Rep, Period> d, Pred pred) {
    return wait_until(lock, deadline_after(d), std::move(pred));
  }

  // notify_one() wakes one waiting fiber or thread; never blocks.
  void notify_one() noexcept { waiters_.notify_one(); }
  // notify_all() wakes all of them; never blocks.
  void notify_all() noexcept { waiters_.notify_all(); }

 private:
  template <class Rep, class Period>
  static std::chrono::steady_clock::time_point deadline_after(std::chrono::duration<Rep, Period> d) {
    return std::chrono::steady_clock::now() + std::chrono::ceil<std::chrono::steady_clock::duration>(d);
  }

  template <class Lock>
  std::cv_status wait_ns(Lock& lock, int64_t deadline_ns) {
    detail::RuntimeSection section;  // no shim handoff while we hold the lock
    detail::Waiter w;
    waiters_.lock().lock();
    waiters_.list().push_back(&w);
    lock.unlock();  // with our lock held: a notifier cannot miss us
    detail::WaitState s = detail::park_spin(w, &waiters_.lock(), deadline_ns);  // a bound fiber may spin first
    if (s == detail::WaitState::TimedOut) waiters_.unlink(w);
    lock.lock();
    return s == detail::WaitState::TimedOut ? std::cv_status::timeout : std::cv_status::no_timeout;
  }

  detail::WaitQueue waiters_;
};

}  // namespace sa
