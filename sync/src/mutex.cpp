#include <sa/mutex.hpp>

namespace sa {

namespace {
// Spins before parking: about the length of a short critical section.
constexpr int kSpins = 64;
}  // namespace

bool Mutex::lock_slow(int64_t deadline_ns) noexcept {
  for (int i = 0; i < kSpins; ++i) {
    SA_CPU_RELAX();
    uint32_t c = 0;
    if (state_.load(std::memory_order_relaxed) == 0 &&
        state_.compare_exchange_weak(c, 1, std::memory_order_acquire, std::memory_order_relaxed))
      return true;
  }
  // From here on we may have company: always leave 2 behind us.
  uint32_t c = state_.exchange(2, std::memory_order_acquire);
  while (c != 0) {
    auto s = waiters_.wait_if([this] { return state_.load(std::memory_order_relaxed) == 2; }, deadline_ns);
    if (s == detail::WaitState::TimedOut) return false;
    c = state_.exchange(2, std::memory_order_acquire);
  }
  return true;
}

}  // namespace sa
