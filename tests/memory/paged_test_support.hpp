#pragma once
// What the PagedRegion tests share: page contents that can be checked, and
// pagers that take their time.

#include <sa/sa.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace sa_test {

// The content of word `i` of page `page`: a function of both, never 0.
inline uint64_t word_of(std::size_t page, std::size_t i) { return page * 1000003u + i * 7u + 1u; }

inline void fill_page(std::size_t page, std::span<std::byte> out) {
  auto* w = reinterpret_cast<uint64_t*>(out.data());
  for (std::size_t i = 0; i < out.size() / sizeof(uint64_t); ++i) w[i] = word_of(page, i);
}

// page_ok() reads every word of page `p` of `r` (faulting it in) and checks it.
inline bool page_ok(const sa::PagedRegion& r, std::size_t p) {
  const auto* w = reinterpret_cast<const volatile uint64_t*>(r.page(p).data());
  bool ok = true;
  for (std::size_t i = 0; i < r.page_size() / sizeof(uint64_t); ++i) ok &= w[i] == word_of(p, i);
  return ok;
}

inline std::size_t sys_page() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

// A pager that sleeps (parks its fiber) before filling, and counts calls.
struct SleepyPager {
  std::chrono::microseconds delay;
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  void operator()(std::size_t page, std::span<std::byte> out) const {
    ++*calls;
    sa::this_fiber::sleep_for(delay);
    fill_page(page, out);
  }
};

// A pager for pager threads: sleeps the thread 20 ms, then fills.
struct SleepyPagerOnThread {
  void operator()(std::size_t page, std::span<std::byte> out) const {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    fill_page(page, out);
  }
};

// Every VProc's fiber (and more) faults on a page of its own; every pager
// waits for an Event that only a fiber spawned last sets.
inline void pager_needs_a_fiber(int vprocs, sa::PagedFaultMode mode = sa::PagedFaultMode::upcall) {
  sa::Event go;
  sa::PagedRegion region({.size = 16 * sys_page(),
                          .pager = [&go](std::size_t page, std::span<std::byte> out) {
                            go.wait();
                            fill_page(page, out);
                          },
                          .fault_mode = mode,
                          .name = "needs-a-fiber"});
  std::vector<sa::Fiber> fibers;
  for (int f = 0; f < vprocs + 2; ++f)
    fibers.push_back(sa::spawn([&, f] { SA_FIBER_CHECK(page_ok(region, static_cast<std::size_t>(f))); }));
  sa::this_fiber::yield();  // let the readers fault first
  fibers.push_back(sa::spawn([&] { go.set(); }));
  for (auto& f : fibers) f.join();
}

}  // namespace sa_test
