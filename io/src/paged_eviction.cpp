// PagedCore's budget and eviction: protocol steps E1-E3 of
// <sa/paged_region.hpp> (CLOCK, write-protected writeback, MADV_DONTNEED).

#include <sys/mman.h>

#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <exception>
#include <mutex>
#include <span>
#include <vector>

#include "paged_core.hpp"

#if defined(SA_TSAN)
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace sa::detail {

namespace {

// written_back() is what the writeback of page `a` is given: the page
// itself. Under TSan, a copy made with TSan looking away: what orders the
// writers' last stores before these reads is the write protection (E2),
// kernel work that TSan cannot see, so it would report every writeback as
// a race with the writers (their stores carry no release of their own).
// The copy keeps the writeback's own accesses checked.
std::span<const std::byte> written_back([[maybe_unused]] std::vector<std::byte>& copy, const std::byte* a,
                                        std::size_t n) {
#if defined(SA_TSAN)
  copy.resize(n);
  __tsan_ignore_thread_begin();
  std::memcpy(copy.data(), a, n);
  __tsan_ignore_thread_end();
  return copy;
#else
  return {a, n};
#endif
}

}  // namespace

// --- budget and eviction (E1-E3) ------------------------------------------------

void PagedCore::reserve() noexcept {
  for (;;) {
    uint32_t victim;
    {
      RuntimeSection section;
      lock_.lock();
      if (budget_ == 0 || used_ < budget_) {
        ++used_;
        lock_.unlock();
        return;
      }
      victim = clock_pick();  // E1
      if (victim == kNoPage) {
        // Every budgeted page is being filled or evicted: wait for a fill
        // to end (finish() wakes one waiter), then look again.
        Waiter w;
        slot_waiters_.push_back(&w);
        park(w, &lock_, TimerHeap::kNever);
        continue;
      }
      lock_.unlock();
    }
    evict(victim);  // its budget becomes ours
    return;
  }
}

uint32_t PagedCore::clock_pick() noexcept {
  // Two laps at most: the first clears every bit it passes.
  for (std::size_t i = 0, n = 2 * resident_ + 1; hand_ != kNoPage && i < n; ++i) {
    const uint32_t p = hand_;
    hand_ = meta_[p].next;
    if (meta_[p].ref) {
      meta_[p].ref = false;
      continue;
    }
    ring_remove(p);
    set_state(p, PageState::Resident, PageState::Evicting);
    return p;
  }
  return kNoPage;
}

void PagedCore::ring_insert(uint32_t p) noexcept {
  PageMeta& m = meta_[p];
  if (hand_ == kNoPage) {
    m.next = m.prev = p;
    hand_ = p;
    return;
  }
  // Just behind the hand: the last page it reaches.
  const uint32_t tail = meta_[hand_].prev;
  m.next = hand_;
  m.prev = tail;
  meta_[tail].next = p;
  meta_[hand_].prev = p;
}

void PagedCore::ring_remove(uint32_t p) noexcept {
  PageMeta& m = meta_[p];
  if (m.next == p) {
    hand_ = kNoPage;
  } else {
    meta_[m.prev].next = m.next;
    meta_[m.next].prev = m.prev;
    if (hand_ == p) hand_ = m.next;
  }
  m.next = m.prev = kNoPage;
}

void PagedCore::evict(uint32_t v) noexcept {
  std::byte* a = addr(v);
  if (wp_) {
    try {
      RuntimeSection section;
      uffd_.write_protect(a, page_size_, true);  // E2: writers now fault and wait
    } catch (const std::system_error& e) {
      paged_fatal("region %s page %" PRIu32 ": %s", name_.c_str(), v, e.what());
    }
    try {
      std::vector<std::byte> copy;
      opt_.writeback(v, written_back(copy, a, page_size_));
    } catch (const std::exception& e) {
      paged_fatal("writeback of page %" PRIu32 " of region %s threw: %s; aborting (the page's data would be lost)", v,
                  name_.c_str(), e.what());
    } catch (...) {
      paged_fatal("writeback of page %" PRIu32 " of region %s threw; aborting (the page's data would be lost)", v,
                  name_.c_str());
    }
    n_writebacks_.fetch_add(1, std::memory_order_relaxed);
  }
  {
    RuntimeSection section;
    if (::madvise(a, page_size_, MADV_DONTNEED) != 0)  // E3
      paged_fatal("region %s page %" PRIu32 ": madvise(MADV_DONTNEED): %s", name_.c_str(), v, std::strerror(errno));
  }
  finish(v, PageState::Evicting, PageState::Missing, 0);
}

}  // namespace sa::detail
