#pragma once
// PagedCore: the state behind one sa::PagedRegion (private to io/). The
// design comment, page states and protocol are in <sa/paged_region.hpp>;
// paged_region.cpp has the fault server, the pager and the public API,
// paged_eviction.cpp the budget and CLOCK eviction.

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sa/detail/runtime_core.hpp>
#include <sa/detail/spin_lock.hpp>
#include <sa/detail/waiter.hpp>
#include <sa/fiber.hpp>
#include <sa/paged_region.hpp>
#include <sa/shim/uffd.hpp>

namespace sa::detail {

inline constexpr uint32_t kNoPage = UINT32_MAX;

// paged_fatal() prints "sa: <message>" and aborts: for errors after which
// a region's sleepers could only see wrong memory or hang.
[[noreturn]] __attribute__((format(printf, 1, 2))) void paged_fatal(const char* fmt, ...);

// Fd: an owned file descriptor.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Mapping: an owned anonymous mapping.
struct Mapping {
  std::byte* base = nullptr;
  std::size_t len = 0;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  explicit Mapping(std::size_t n) : len(n) {
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "sa::PagedRegion: mmap");
    base = static_cast<std::byte*>(p);
    // Huge pages would fault in 2 MiB at a time past the pager's page size.
    ::madvise(p, n, MADV_NOHUGEPAGE);
  }
  ~Mapping() {
    if (base) ::munmap(base, len);
  }
};

enum class PageState : uint8_t {
  Missing,   // not mapped; in no queue
  Filling,   // a pager fills its staging buffer; faulting tids in waiters_
  Resident,  // mapped; in the CLOCK ring
  Evicting,  // out of the ring, written back and dropped; faults wait in waiters_
  Failed,    // the pager threw; poisoned (SIGBUS on access); no budget
};

const char* to_string(PageState s) noexcept;

struct PageMeta {
  PageState state = PageState::Missing;
  bool ref = false;             // CLOCK reference bit
  bool evicted_before = false;  // a fill of it is a refill
  uint32_t next = kNoPage;        // CLOCK ring (Resident pages only)
  uint32_t prev = kNoPage;
};

// A fault waiting for a page, and when it was seen (its message read, or
// its signal taken). upcall mode: a thread asleep in the fault, by tid;
// park_fiber mode: a Waiter (a parked fiber, or a thread on its futex).
struct FaultWaiter {
  int tid;
  int64_t since_ns;
  Waiter* waiter = nullptr;
};

// How PagedCore::on_signal() served a fault.
enum class SignalFault {
  not_ours,  // not this region's to serve: pass it on
  retry,     // resolved meanwhile: retry the access
  waited,    // waited for the page on this thread (P3)
  parked,    // the fiber parked (P3); other fibers ran here meanwhile
};

class PagedCore {
 public:
  PagedCore(RuntimeCore& rt, PagedRegionOptions options);
  ~PagedCore();

  std::byte* base() const noexcept { return map_.base; }
  std::size_t size() const noexcept { return map_.len; }
  std::size_t page_size() const noexcept { return page_size_; }
  std::size_t pages() const noexcept { return meta_.size(); }
  const std::string& name() const noexcept { return name_; }
  bool wp() const noexcept { return wp_; }
  PagedRegionStats stats() const;

  // start() starts the fault server(s); `rt` must be the region's runtime.
  void start();

  // on_signal() serves a fault of this thread at `a` in park_fiber mode
  // (protocol P1-P4) and returns once the page may be accessed again, or
  // at once if the fault is not one to serve (`a` outside the region, or a
  // Failed page). Called by the SIGBUS handler (paged_signal.cpp) with
  // `slot_users` counted up; counts it down once the fault is queued.
  SignalFault on_signal(std::byte* a, std::atomic<int>& slot_users) noexcept;

 private:
  std::byte* addr(uint32_t p) const noexcept { return map_.base + std::size_t{p} * page_size_; }
  // set_state() moves page p from `from` to `to` under lock_; aborts if it
  // was not in `from` (a bug of this file, never the user's).
  void set_state(uint32_t p, PageState from, PageState to) noexcept;

  // Fault server (protocol step 2).
  void serve_fibers() noexcept;
  void serve_thread() noexcept;
  // route() handles one message under lock_: what must happen next goes to
  // `fills` (pages to fill) and `now` (waiters to resume at once).
  void route(const uffd_msg& m, int64_t now, std::vector<uint32_t>& fills,
             std::vector<std::pair<uint32_t, FaultWaiter>>& resume_now) noexcept;
  void dispatch(const uffd_msg* msgs, std::size_t n, bool inline_fills) noexcept;
  // admit() takes fault `w` on page p by the page's state, under lock_
  // (step 2 / P2): Missing -> Filling with `w` its first waiter (fill: the
  // caller starts the pager); Filling or Evicting: `w` joins the waiters
  // (wait); Resident or Failed: nothing to wait for (now).
  enum class Admission { fill, wait, now };
  Admission admit(uint32_t p, const FaultWaiter& w) noexcept;

  // Pager (steps 3-4) and eviction (E1-E3).
  void fill(uint32_t p) noexcept;
  void reserve() noexcept;
  uint32_t clock_pick() noexcept;  // under lock_
  void ring_insert(uint32_t p) noexcept;
  void ring_remove(uint32_t p) noexcept;
  void evict(uint32_t v) noexcept;
  // finish() moves p from `from` to `to` under lock_, takes its waiters and
  // resumes them; for Filling -> Resident / Failed and Evicting -> Missing.
  void finish(uint32_t p, PageState from, PageState to, int64_t pager_ns) noexcept;
  // resume() resumes the waiters of page p (its fault is resolved): each
  // activation through the shim, the other threads with one UFFDIO_WAKE.
  void resume(uint32_t p, const std::vector<FaultWaiter>& ws) noexcept;

  // launch_fill() starts a pager fiber for page p (already Filling).
  void launch_fill(uint32_t p) noexcept;
  std::byte* take_buffer();
  void give_buffer(std::byte* b) noexcept;

  const PagedRegionOptions opt_;
  std::string name_;
  std::size_t page_size_ = 0;
  std::size_t budget_ = 0;
  RuntimeCore& rt_;
  shim::Shim& shim_;
  // uffd_ before map_: the mapping goes first, so an access racing the
  // destructor faults on unmapped memory (SIGSEGV) instead of finding the
  // range unregistered and reading a zero page.
  shim::Userfaultfd uffd_;
  Mapping map_;
  bool wp_ = false;
  bool park_ = false;     // fault_mode == park_fiber
  int signal_slot_ = -1;  // park_fiber: our entry in the SIGBUS handler's table
  Fd stop_fd_;   // eventfd: written once to stop the server(s)
  Fd epoll_fd_;  // {uffd, stop_fd}: one pollable fd for the fiber server

  // Guarded by lock_ (taken inside a RuntimeSection by fibers).
  mutable SpinLock lock_;
  std::vector<PageMeta> meta_;
  std::unordered_map<uint32_t, std::vector<FaultWaiter>> waiters_;  // Filling / Evicting pages
  WaitList slot_waiters_;   // fills waiting for budget with no victim to evict
  std::size_t used_ = 0;    // budget taken: pages reserved for a fill, Resident or Evicting
  std::size_t resident_ = 0;
  std::size_t resident_high_ = 0;
  uint32_t hand_ = kNoPage;   // CLOCK hand; kNoPage when the ring is empty
  std::vector<std::byte*> buffers_;  // free staging buffers

  std::atomic<bool> stopping_{false};
  std::atomic<int> in_flight_{0};  // fills started and not finished
  Fiber server_;
  std::vector<std::thread> threads_;

  // Counters (relaxed: read as a snapshot by stats()).
  std::atomic<uint64_t> n_faults_{0}, n_coalesced_{0}, n_filled_{0}, n_refills_{0}, n_failed_{0},
      n_evictions_{0}, n_writebacks_{0}, n_shim_{0}, n_woken_{0}, n_parked_{0}, n_thread_waits_{0}, pager_ns_{0};
  std::atomic<uint64_t> pager_buckets_[shim::LatencyHistogram::kBuckets] = {};
  std::atomic<uint64_t> blocked_buckets_[shim::LatencyHistogram::kBuckets] = {};
};

// The SIGBUS handler's table of park_fiber regions (paged_signal.cpp).
// add() installs the handler on first use and returns the region's slot;
// throws std::system_error (sigaction) or std::length_error (table full).
// remove() empties the slot and waits until no handler is between finding
// the region and queueing its fault.
int signal_table_add(PagedCore* core, std::byte* base, std::size_t len);
void signal_table_remove(int slot) noexcept;

}  // namespace sa::detail
