#include <sa/barrier.hpp>

#include <stdexcept>

namespace sa {

// --- Barrier ---------------------------------------------------------------

Barrier::Barrier(std::size_t parties) : parties_(parties) {
  if (parties < 1) throw std::invalid_argument("sa::Barrier: parties must be >= 1");
}

bool Barrier::arrive_and_wait() noexcept {
  detail::RuntimeSection section;  // no shim handoff while we hold the lock
  waiters_.lock().lock();
  if (++arrived_ == parties_) {
    arrived_ = 0;
    ++round_;
    waiters_.list().wake_all();
    waiters_.lock().unlock();
    return true;
  }
  // Waits have no deadline, so only the last arrival wakes us, once.
  detail::Waiter w;
  waiters_.list().push_back(&w);
  detail::park(w, &waiters_.lock(), detail::TimerHeap::kNever);
  return false;
}

// --- WaitGroup -------------------------------------------------------------

void WaitGroup::add(int64_t n) {
  // acq_rel: the waiter released by reaching zero sees every done()'s writes.
  int64_t after = count_.fetch_add(n, std::memory_order_acq_rel) + n;
  if (after < 0) {
    count_.fetch_sub(n, std::memory_order_relaxed);
    throw std::logic_error("sa::WaitGroup: counter would go negative");
  }
  if (after == 0 && n != 0) waiters_.notify_all();
}

void WaitGroup::wait() noexcept {
  while (count_.load(std::memory_order_acquire) != 0)
    waiters_.wait_if([this] { return count_.load(std::memory_order_acquire) != 0; });
}

bool WaitGroup::wait_until(std::chrono::steady_clock::time_point deadline) noexcept {
  const int64_t ns = detail::to_ns(deadline);
  while (count_.load(std::memory_order_acquire) != 0)
    if (waiters_.wait_if([this] { return count_.load(std::memory_order_acquire) != 0; }, ns) ==
        detail::WaitState::TimedOut)
      return count_.load(std::memory_order_acquire) == 0;
  return true;
}

// --- Latch -----------------------------------------------------------------

Latch::Latch(std::ptrdiff_t count) {
  if (count < 0) throw std::invalid_argument("sa::Latch: count must be >= 0");
  group_.add(count);
}

// --- Event -----------------------------------------------------------------

void Event::set() noexcept {
  // release: a waiter that sees the event set sees what came before set().
  set_.store(true, std::memory_order_release);
  waiters_.notify_all();
}

void Event::wait() noexcept {
  while (!is_set()) waiters_.wait_if([this] { return !is_set(); });
}

bool Event::wait_until(std::chrono::steady_clock::time_point deadline) noexcept {
  const int64_t ns = detail::to_ns(deadline);
  while (!is_set())
    if (waiters_.wait_if([this] { return !is_set(); }, ns) == detail::WaitState::TimedOut) return is_set();
  return true;
}

}  // namespace sa
