#include <sa/shim/futex.hpp>

#include <cerrno>
#include <climits>
#include <ctime>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace sa::shim {

namespace {

// The address of the word as the kernel sees it. std::atomic<uint32_t> is
// layout-compatible with uint32_t (static_assert below).
const uint32_t* address_of(const std::atomic<uint32_t>& word) noexcept {
  return reinterpret_cast<const uint32_t*>(&word);
}
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

}  // namespace

bool futex_wait(const std::atomic<uint32_t>& word, uint32_t expected,
                Clock::time_point deadline) noexcept {
  timespec abs{};
  timespec* timeout = nullptr;
  if (deadline != Clock::time_point::max()) {
    // steady_clock is CLOCK_MONOTONIC on Linux; FUTEX_WAIT_BITSET takes an
    // absolute CLOCK_MONOTONIC deadline.
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
    if (ns < 0) ns = 0;
    abs.tv_sec = ns / 1'000'000'000;
    abs.tv_nsec = ns % 1'000'000'000;
    timeout = &abs;
  }
  long r = ::syscall(SYS_futex, address_of(word), FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected,
                     timeout, nullptr, FUTEX_BITSET_MATCH_ANY);
  return !(r == -1 && errno == ETIMEDOUT);
}

void futex_wake(const std::atomic<uint32_t>& word, int n) noexcept {
  ::syscall(SYS_futex, address_of(word), FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, nullptr, nullptr, 0);
}

}  // namespace sa::shim
