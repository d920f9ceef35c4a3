#pragma once
// Futex wait and wake on a 32-bit atomic word: how the shim parks idle
// processors and kernel threads waiting outside the runtime.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace sa::shim {

using Clock = std::chrono::steady_clock;

// futex_wait() blocks the kernel thread while `word` holds `expected`, until
// futex_wake() or `deadline` (Clock::time_point::max() = none). Returns false
// on timeout. Spurious returns are possible: callers re-check their condition.
bool futex_wait(const std::atomic<uint32_t>& word, uint32_t expected,
                Clock::time_point deadline = Clock::time_point::max()) noexcept;

// futex_wake() wakes up to `n` kernel threads waiting on `word`; never blocks.
void futex_wake(const std::atomic<uint32_t>& word, int n = 1) noexcept;

}  // namespace sa::shim
