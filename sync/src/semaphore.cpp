#include <sa/semaphore.hpp>

#include <stdexcept>

namespace sa {

Semaphore::Semaphore(std::ptrdiff_t initial) : count_(initial) {
  if (initial < 0) throw std::invalid_argument("sa::Semaphore: initial count must be >= 0");
}

bool Semaphore::acquire_slow(int64_t deadline_ns) noexcept {
  // Under the lock: either a permit is free, or we queue. Permits are added
  // to count_ only under the lock and only when nobody waits, so a waiter
  // can never sleep beside a free permit.
  detail::RuntimeSection section;  // no shim handoff while we hold the lock
  detail::Waiter w;
  waiters_.lock().lock();
  if (try_acquire()) {
    waiters_.lock().unlock();
    return true;
  }
  waiters_.list().push_back(&w);
  // Handed a permit? (A bound fiber may spin first: park_spin.)
  if (detail::park_spin(w, &waiters_.lock(), deadline_ns) == detail::WaitState::Notified) return true;
  waiters_.unlink(w);
  return false;
}

void Semaphore::release(std::ptrdiff_t n) {
  if (n < 0) throw std::invalid_argument("sa::Semaphore::release: n must be >= 0");
  detail::RuntimeSection section;  // no shim handoff while we hold the lock
  waiters_.lock().lock();
  while (n > 0 && waiters_.list().wake_one()) --n;  // one permit each, handed over
  // release: an acquirer that takes these permits sees our writes.
  if (n > 0) count_.fetch_add(n, std::memory_order_release);
  waiters_.lock().unlock();
}

}  // namespace sa
