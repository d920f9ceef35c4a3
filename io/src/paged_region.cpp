// sa::PagedRegion: page faults served by a user-level pager through
// userfaultfd. The design comment, page states and protocol are in
// <sa/paged_region.hpp>; this file (the fault server, steps 1-2, and the
// pager, steps 3-4) and paged_eviction.cpp (E1-E3) follow its step numbers.

#include <sa/paged_region.hpp>

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sa/detail/runtime_core.hpp>
#include <sa/fiber.hpp>
#include <sa/io.hpp>
#include <sa/runtime.hpp>
#include <sa/shim/futex.hpp>
#include <sa/shim/uffd.hpp>
#include <sa/this_fiber.hpp>

#include "paged_core.hpp"

namespace sa::detail {

void paged_fatal(const char* fmt, ...) {
  std::va_list ap;
  va_start(ap, fmt);
  std::fputs("sa: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::fflush(stderr);
  std::abort();
}

namespace {

constexpr std::size_t kBatch = 64;  // uffd messages read at once by the fault server

// what_of() is the message of the exception `e` (caught on this thread).
std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

void record(std::atomic<uint64_t>* buckets, int64_t ns) noexcept {
  const int64_t us = ns / 1000;
  int b = 0;
  while (b < shim::LatencyHistogram::kBuckets - 1 && us >= (int64_t{1} << b)) ++b;
  buckets[b].fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

const char* to_string(PageState s) noexcept {
  switch (s) {
    case PageState::Missing: return "Missing";
    case PageState::Filling: return "Filling";
    case PageState::Resident: return "Resident";
    case PageState::Evicting: return "Evicting";
    case PageState::Failed: return "Failed";
  }
  return "?";
}

namespace {

std::size_t system_page() noexcept { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

// checked() validates the options before anything is mapped.
PagedRegionOptions checked(PagedRegionOptions o) {
  const std::size_t sys = system_page();
  if (o.page_size == 0) o.page_size = sys;
  if (o.page_size % sys != 0)
    throw std::invalid_argument("sa::PagedRegion: page_size " + std::to_string(o.page_size) +
                                " is not a multiple of the system page size " + std::to_string(sys));
  if (o.size == 0) throw std::invalid_argument("sa::PagedRegion: size is 0");
  if (o.size % o.page_size != 0)
    throw std::invalid_argument("sa::PagedRegion: size " + std::to_string(o.size) +
                                " is not a multiple of the page size " + std::to_string(o.page_size));
  if (o.size / o.page_size >= kNoPage) throw std::invalid_argument("sa::PagedRegion: too many pages");
  if (!o.pager) throw std::invalid_argument("sa::PagedRegion: no pager");
  if (o.pager_threads < 0) throw std::invalid_argument("sa::PagedRegion: pager_threads < 0");
  if (o.fault_mode == PagedFaultMode::park_fiber) {
    if (o.pager_threads > 0)
      throw std::invalid_argument("sa::PagedRegion: fault_mode park_fiber needs pager fibers (pager_threads = 0)");
#if defined(SA_TSAN)
    throw std::invalid_argument("sa::PagedRegion: fault_mode park_fiber is not available under ThreadSanitizer");
#endif
  }
  return o;
}

}  // namespace

PagedCore::PagedCore(RuntimeCore& rt, PagedRegionOptions options)
    : opt_(checked(std::move(options))),
      page_size_(opt_.page_size),
      budget_(opt_.resident_pages),
      rt_(rt),
      shim_(rt.shim()),
      uffd_(UFFD_FEATURE_THREAD_ID | (opt_.writeback ? UFFD_FEATURE_PAGEFAULT_FLAG_WP : 0) |
                (opt_.fault_mode == PagedFaultMode::park_fiber ? UFFD_FEATURE_SIGBUS : 0),
            shim::Userfaultfd::kFeaturePoison),
      map_(opt_.size),
      meta_(opt_.size / opt_.page_size) {
  if (opt_.name.empty()) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "region@%p", static_cast<void*>(map_.base));
    name_ = buf;
  } else {
    name_ = opt_.name;
  }
  wp_ = static_cast<bool>(opt_.writeback);
  park_ = opt_.fault_mode == PagedFaultMode::park_fiber;
  const uint64_t ioctls = uffd_.register_range(map_.base, map_.len,
                                               UFFDIO_REGISTER_MODE_MISSING | (wp_ ? UFFDIO_REGISTER_MODE_WP : 0));
  const uint64_t need = (uint64_t{1} << _UFFDIO_COPY) | (uint64_t{1} << _UFFDIO_WAKE) |
                        (wp_ ? uint64_t{1} << _UFFDIO_WRITEPROTECT : 0);
  if ((ioctls & need) != need)
    throw std::system_error(ENOTSUP, std::generic_category(),
                            "sa::PagedRegion: the kernel lacks UFFDIO_COPY/WAKE" +
                                std::string(wp_ ? "/WRITEPROTECT (needed by a writeback)" : "") +
                                " on anonymous memory");
  stop_fd_.fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_.fd < 0) throw std::system_error(errno, std::generic_category(), "sa::PagedRegion: eventfd");
  epoll_fd_.fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_.fd < 0) throw std::system_error(errno, std::generic_category(), "sa::PagedRegion: epoll_create1");
  for (int fd : {uffd_.fd(), stop_fd_.fd}) {
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = fd;
    if (::epoll_ctl(epoll_fd_.fd, EPOLL_CTL_ADD, fd, &e) != 0)
      throw std::system_error(errno, std::generic_category(), "sa::PagedRegion: epoll_ctl");
  }
}

void PagedCore::start() {
  if (park_) {  // faults arrive as signals (P1): no messages to serve
    signal_slot_ = signal_table_add(this, map_.base, map_.len);
    return;
  }
  if (opt_.pager_threads == 0) {
    server_ = wrap(launch(rt_, {}, make_fiber([this] { serve_fibers(); })));
    return;
  }
  try {
    for (int i = 0; i < opt_.pager_threads; ++i) threads_.emplace_back([this] { serve_thread(); });
  } catch (...) {
    stopping_.store(true);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(stop_fd_.fd, &one, sizeof one);
    for (auto& t : threads_) t.join();
    threads_.clear();  // joined: the destructor must not join them again
    throw;
  }
}

PagedCore::~PagedCore() {
  // Stop the server(s): after this nobody reads messages or starts fills.
  stopping_.store(true, std::memory_order_seq_cst);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t w = ::write(stop_fd_.fd, &one, sizeof one);
  if (server_.joinable()) server_.join();
  for (auto& t : threads_) t.join();
  if (signal_slot_ >= 0) signal_table_remove(signal_slot_);  // no fault queued from here on

  // Faults still pending: the pages with waiters, and unread messages.
  std::vector<uint32_t> pending;
  std::size_t faults = 0;
  {
    RuntimeSection section;
    std::lock_guard g(lock_);
    for (const auto& [p, ws] : waiters_) {
      if (ws.empty()) continue;
      pending.push_back(p);
      faults += ws.size();
    }
  }
  try {
    uffd_msg msgs[kBatch];
    while (std::size_t n = uffd_.read(msgs, kBatch))
      for (std::size_t i = 0; i < n; ++i) {
        if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
        ++faults;
        const uint64_t off = msgs[i].arg.pagefault.address - reinterpret_cast<uint64_t>(map_.base);
        pending.push_back(static_cast<uint32_t>(off / page_size_));
      }
  } catch (const std::system_error& e) {
    paged_fatal("region %s: reading its last fault messages failed: %s", name_.c_str(), e.what());
  }
  if (faults > 0) {
    std::string pages;
    for (std::size_t i = 0; i < pending.size() && i < 16; ++i) pages += (i ? ", " : "") + std::to_string(pending[i]);
    if (pending.size() > 16) pages += ", ...";
    paged_fatal("region %s destroyed while %zu faults are pending (pages %s); aborting: the faulting threads would "
                "wake on unmapped memory",
                name_.c_str(), faults, pages.c_str());
  }
  // Fills that resumed their waiters may still be returning their buffer.
  while (in_flight_.load(std::memory_order_acquire) > 0) {
    if (current_fiber()) sa::this_fiber::yield();
    else std::this_thread::yield();
  }
  for (std::byte* b : buffers_) ::operator delete(b, std::align_val_t{system_page()});
}

void PagedCore::set_state(uint32_t p, PageState from, PageState to) noexcept {
  PageMeta& m = meta_[p];
  if (m.state != from)
    paged_fatal("region %s page %" PRIu32 ": state %s, expected %s on the way to %s (a PagedRegion bug)", name_.c_str(),
                p, to_string(m.state), to_string(from), to_string(to));
  m.state = to;
}

// --- fault server (step 2) -------------------------------------------------

void PagedCore::serve_fibers() noexcept {
  uffd_msg msgs[kBatch];
  while (!stopping_.load(std::memory_order_acquire)) {
    std::size_t n = 0;
    try {
      n = uffd_.read(msgs, kBatch);
    } catch (const std::system_error& e) {
      paged_fatal("region %s: %s", name_.c_str(), e.what());
    }
    if (n == 0) {
      // Park until the uffd or the stop eventfd is readable: one io_uring
      // poll on the epoll set; the activation runs other fibers meanwhile.
      pollfd pf{epoll_fd_.fd, POLLIN, 0};
      if (sa::io::poll(&pf, 1, -1) < 0 && errno != EINTR)
        paged_fatal("region %s: polling its userfaultfd failed: %s", name_.c_str(), std::strerror(errno));
      continue;
    }
    dispatch(msgs, n, /*inline_fills=*/false);
  }
}

void PagedCore::serve_thread() noexcept {
  char name[16];
  std::snprintf(name, sizeof name, "sa-pager");
  ::pthread_setname_np(::pthread_self(), name);
  while (!stopping_.load(std::memory_order_acquire)) {
    uffd_msg m;
    std::size_t n = 0;
    try {
      n = uffd_.read(&m, 1);  // one at a time: the other pager threads take the rest
    } catch (const std::system_error& e) {
      paged_fatal("region %s: %s", name_.c_str(), e.what());
    }
    if (n == 0) {
      pollfd pf[2] = {{uffd_.fd(), POLLIN, 0}, {stop_fd_.fd, POLLIN, 0}};
      if (::poll(pf, 2, -1) < 0 && errno != EINTR)
        paged_fatal("region %s: polling its userfaultfd failed: %s", name_.c_str(), std::strerror(errno));
      continue;
    }
    dispatch(&m, 1, /*inline_fills=*/true);
  }
}

void PagedCore::route(const uffd_msg& m, int64_t now, std::vector<uint32_t>& fills,
                      std::vector<std::pair<uint32_t, FaultWaiter>>& resume_now) noexcept {
  if (m.event != UFFD_EVENT_PAGEFAULT) return;  // no other event was asked for
  const uint64_t off = m.arg.pagefault.address - reinterpret_cast<uint64_t>(map_.base);
  if (off >= map_.len) return;
  const auto p = static_cast<uint32_t>(off / page_size_);
  const FaultWaiter w{static_cast<int>(m.arg.pagefault.feat.ptid), now};
  const bool wp_fault = m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP;
  n_faults_.fetch_add(1, std::memory_order_relaxed);
  if (wp_fault && meta_[p].state == PageState::Missing) {
    resume_now.emplace_back(p, w);  // a write fault from before an eviction ended: it faults again, as missing
    return;
  }
  switch (admit(p, w)) {
    case Admission::fill: fills.push_back(p); break;
    case Admission::wait: break;
    case Admission::now: resume_now.emplace_back(p, w); break;
  }
}

PagedCore::Admission PagedCore::admit(uint32_t p, const FaultWaiter& w) noexcept {
  switch (meta_[p].state) {
    case PageState::Missing:
      set_state(p, PageState::Missing, PageState::Filling);
      waiters_[p].push_back(w);
      return Admission::fill;
    case PageState::Filling:
      waiters_[p].push_back(w);
      n_coalesced_.fetch_add(1, std::memory_order_relaxed);
      return Admission::wait;
    case PageState::Evicting:
      waiters_[p].push_back(w);
      return Admission::wait;
    case PageState::Resident:  // filled after this fault was raised (or a stale write fault)
    case PageState::Failed:    // poisoned: its access raises SIGBUS
      break;
  }
  return Admission::now;
}

void PagedCore::dispatch(const uffd_msg* msgs, std::size_t n, bool inline_fills) noexcept {
  std::vector<uint32_t> fills;
  std::vector<std::pair<uint32_t, FaultWaiter>> now_list;
  const int64_t now = now_ns();
  {
    RuntimeSection section;
    {
      std::lock_guard g(lock_);
      for (std::size_t i = 0; i < n; ++i) route(msgs[i], now, fills, now_list);
      in_flight_.fetch_add(static_cast<int>(fills.size()), std::memory_order_relaxed);
    }
    // Step 1's handoff, sooner: the message names the sleeper, so its VProc
    // need not wait for the monitor (which runs only on an idle CPU).
    for (std::size_t i = 0; i < n; ++i)
      if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
        shim_.fault_seen(static_cast<int>(msgs[i].arg.pagefault.feat.ptid), now);
  }
  for (auto& [p, w] : now_list) resume(p, {w});
  for (uint32_t p : fills) {
    if (inline_fills) fill(p);
    else launch_fill(p);
  }
}

void PagedCore::launch_fill(uint32_t p) noexcept {
  try {
    wrap(launch(rt_, {}, make_fiber([this, p] { fill(p); }))).detach();
  } catch (const std::exception& e) {
    paged_fatal("region %s: cannot start a pager fiber for page %" PRIu32 ": %s", name_.c_str(), p, e.what());
  }
}

// --- park_fiber faults (P1-P4) -------------------------------------------------

SignalFault PagedCore::on_signal(std::byte* a, std::atomic<int>& slot_users) noexcept {
  if (a < map_.base || static_cast<std::size_t>(a - map_.base) >= map_.len) {  // a slot reused meanwhile
    slot_users.fetch_sub(1, std::memory_order_release);
    return SignalFault::not_ours;
  }
  const auto p = static_cast<uint32_t>(static_cast<std::size_t>(a - map_.base) / page_size_);
  // Read before the section, which may take a lock of its own.
  const bool in_lock = tl_spin_locks > 0 || tl_critical_depth > 0;
  RuntimeSection section;  // P1
  // A fiber's own code may park. Not: a thread outside the runtime, a fiber
  // holding an sa::Spinlock (it must stay on its activation) or a runtime
  // SpinLock (a Channel copying a value from the region: a fiber of this
  // thread could spin on it for ever), and, with the shim on, runtime code
  // (an activation that was Running already).
  const shim::Activation* act = shim::Activation::current();
  const bool activations = act && act->shim && act->shim->activations_mode();
  const bool may_park = current_fiber() != nullptr && !in_lock && (section.entered || !activations);
  Waiter w;
  if (!may_park) w.fiber = nullptr;  // try_wake futex-wakes it instead
  const FaultWaiter fw{0, now_ns(), &w};  // (no tid: the Waiter says who waits)
  lock_.lock();
  n_faults_.fetch_add(1, std::memory_order_relaxed);
  if (meta_[p].state == PageState::Failed) {  // poisoned: not ours to serve (its SIGBUS is BUS_MCEERR_AR)
    lock_.unlock();
    slot_users.fetch_sub(1, std::memory_order_release);
    return SignalFault::not_ours;
  }
  const Admission admission = admit(p, fw);  // P2
  if (admission == Admission::fill) {
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    // It cannot finish before we park: finish() takes the lock. Launched
    // even when this fault must not park (in_lock): the launch takes the
    // stack pool's and the run queue's locks, which no code holds while it
    // touches region memory, so the lock held here is never one of those.
    launch_fill(p);
  }
  slot_users.fetch_sub(1, std::memory_order_release);  // queued (or done): the destructor sees it
  if (admission == Admission::now) {  // Resident: filled since the fault, retry
    lock_.unlock();
    return SignalFault::retry;
  }
  if (may_park) {  // P3
    n_parked_.fetch_add(1, std::memory_order_relaxed);
    park(w, &lock_, TimerHeap::kNever);
    return SignalFault::parked;
  }
  n_thread_waits_.fetch_add(1, std::memory_order_relaxed);
  lock_.unlock();
  for (uint32_t s; (s = w.state.load(std::memory_order_acquire)) == static_cast<uint32_t>(WaitState::Waiting);)
    shim::futex_wait(w.state, s, std::chrono::steady_clock::time_point::max());
  return SignalFault::waited;
}

// --- pager (steps 3-4) -------------------------------------------------------

std::byte* PagedCore::take_buffer() {
  {
    RuntimeSection section;
    std::lock_guard g(lock_);
    if (!buffers_.empty()) {
      std::byte* b = buffers_.back();
      buffers_.pop_back();
      return b;
    }
  }
  return static_cast<std::byte*>(::operator new(page_size_, std::align_val_t{system_page()}));
}

void PagedCore::give_buffer(std::byte* b) noexcept {
  RuntimeSection section;
  std::lock_guard g(lock_);
  try {
    buffers_.push_back(b);
  } catch (...) {
    ::operator delete(b, std::align_val_t{system_page()});
  }
}

void PagedCore::fill(uint32_t p) noexcept {
  reserve();
  std::byte* buf = nullptr;
  try {
    buf = take_buffer();
  } catch (const std::exception& e) {
    paged_fatal("region %s: no staging buffer for page %" PRIu32 ": %s", name_.c_str(), p, e.what());
  }
  const int64_t t0 = now_ns();
  std::exception_ptr error;
  try {
    opt_.pager(p, std::span<std::byte>(buf, page_size_));
  } catch (...) {
    error = std::current_exception();  // no park between the throw and here: same thread
  }
  const int64_t took = now_ns() - t0;
  if (error) {
    const std::string what = what_of(error);
    const FiberId f = sa::this_fiber::id();
    if (f)
      std::fprintf(stderr, "sa: pager for page %" PRIu32 " of region %s threw: %s (fiber %" PRIu64 ")\n", p,
                   name_.c_str(), what.c_str(), f);
    else
      std::fprintf(stderr, "sa: pager for page %" PRIu32 " of region %s threw: %s (pager thread %d)\n", p,
                   name_.c_str(), what.c_str(), static_cast<int>(::gettid()));
    std::fflush(stderr);
    if (!uffd_.has(shim::Userfaultfd::kFeaturePoison))
      paged_fatal("region %s: cannot poison page %" PRIu32 " (no UFFD_FEATURE_POISON): aborting", name_.c_str(), p);
    try {
      RuntimeSection section;
      uffd_.poison(addr(p), page_size_, /*wake=*/false);
    } catch (const std::system_error& e) {
      paged_fatal("region %s page %" PRIu32 ": %s", name_.c_str(), p, e.what());
    }
    finish(p, PageState::Filling, PageState::Failed, took);
  } else {
    try {
      RuntimeSection section;
      uffd_.copy(addr(p), buf, page_size_, /*wake=*/false);  // step 3: nobody runs yet
    } catch (const std::system_error& e) {
      paged_fatal("region %s page %" PRIu32 ": %s", name_.c_str(), p, e.what());
    }
    finish(p, PageState::Filling, PageState::Resident, took);
  }
  give_buffer(buf);
  in_flight_.fetch_sub(1, std::memory_order_release);
}

void PagedCore::finish(uint32_t p, PageState from, PageState to, int64_t pager_ns) noexcept {
  RuntimeSection section;
  std::vector<FaultWaiter> ws;
  {
    std::lock_guard g(lock_);
    set_state(p, from, to);
    PageMeta& m = meta_[p];
    if (to == PageState::Resident) {
      m.ref = true;  // one lap of grace for its faulters
      ring_insert(p);
      if (++resident_ > resident_high_) resident_high_ = resident_;
      n_filled_.fetch_add(1, std::memory_order_relaxed);
      if (m.evicted_before) n_refills_.fetch_add(1, std::memory_order_relaxed);
    } else if (to == PageState::Failed) {
      if (budget_) --used_;
      n_failed_.fetch_add(1, std::memory_order_relaxed);
    } else {  // Evicting -> Missing: the budget passes to the evicting fill
      m.evicted_before = true;
      --resident_;
      n_evictions_.fetch_add(1, std::memory_order_relaxed);
    }
    if (from == PageState::Filling) {
      pager_ns_.fetch_add(static_cast<uint64_t>(pager_ns), std::memory_order_relaxed);
      record(pager_buckets_, pager_ns);
      // A victim (or budget) for a fill that waits for one.
      slot_waiters_.wake_one();
    }
    if (auto it = waiters_.find(p); it != waiters_.end()) {
      ws = std::move(it->second);
      waiters_.erase(it);
    }
  }
  resume(p, ws);  // step 4
}

void PagedCore::resume(uint32_t p, const std::vector<FaultWaiter>& ws) noexcept {
  if (ws.empty()) return;
  RuntimeSection section;  // resume_faulted takes the shim's lock: our activation is not handed off meanwhile
  const int64_t now = now_ns();
  // Stats first: a resumed fiber may finish and its test read stats() at once.
  for (const FaultWaiter& w : ws) record(blocked_buckets_, now - w.since_ns);
  if (park_) {  // P4: parked fibers and threads on their futex
    for (const FaultWaiter& w : ws) try_wake(w.waiter);
    return;
  }
  // A lone waiter that is a Lost activation stays asleep until a VProc
  // hands it a processor (Shim::resume_faulted): then nothing else may wake
  // it. With several waiters one UFFDIO_WAKE of the page wakes them all, so
  // each is signalled instead.
  const shim::Shim::FaultPage page{.uffd = uffd_.fd(), .addr = addr(p), .len = page_size_};
  const bool alone = ws.size() == 1;
  bool wake = false;
  for (const FaultWaiter& w : ws) {
    switch (shim_.resume_faulted(w.tid, alone ? &page : nullptr)) {
      case shim::Shim::FaultResume::queued:
        n_shim_.fetch_add(1, std::memory_order_relaxed);
        break;
      case shim::Shim::FaultResume::signalled:
        n_shim_.fetch_add(1, std::memory_order_relaxed);
        wake = true;
        break;
      case shim::Shim::FaultResume::not_ours:
        n_woken_.fetch_add(1, std::memory_order_relaxed);
        wake = true;
        break;
    }
  }
  // Wake, after the signals, unless the only waiter was queued asleep: a
  // signalled activation takes its (pending) signal before its next user
  // instruction, and one whose mask blocks the hold signal would otherwise
  // sleep in the fault for ever.
  if (wake) {
    try {
      uffd_.wake(addr(p), page_size_);
    } catch (const std::system_error& e) {
      paged_fatal("region %s page %" PRIu32 ": %s", name_.c_str(), p, e.what());
    }
  }
}

PagedRegionStats PagedCore::stats() const {
  PagedRegionStats s;
  s.faults = n_faults_.load(std::memory_order_relaxed);
  s.coalesced = n_coalesced_.load(std::memory_order_relaxed);
  s.pages_filled = n_filled_.load(std::memory_order_relaxed);
  s.refills = n_refills_.load(std::memory_order_relaxed);
  s.pager_failures = n_failed_.load(std::memory_order_relaxed);
  s.evictions = n_evictions_.load(std::memory_order_relaxed);
  s.writebacks = n_writebacks_.load(std::memory_order_relaxed);
  s.resumed_by_shim = n_shim_.load(std::memory_order_relaxed);
  s.woken = n_woken_.load(std::memory_order_relaxed);
  s.parked = n_parked_.load(std::memory_order_relaxed);
  s.thread_waits = n_thread_waits_.load(std::memory_order_relaxed);
  s.pager_seconds = static_cast<double>(pager_ns_.load(std::memory_order_relaxed)) / 1e9;
  for (int i = 0; i < shim::LatencyHistogram::kBuckets; ++i) {
    s.pager_us.buckets[i] = pager_buckets_[i].load(std::memory_order_relaxed);
    s.blocked_us.buckets[i] = blocked_buckets_[i].load(std::memory_order_relaxed);
  }
  RuntimeSection section;
  std::lock_guard g(lock_);
  s.resident = resident_;
  s.resident_high_water = resident_high_;
  return s;
}

}  // namespace sa::detail

namespace sa {

namespace {

detail::RuntimeCore& core_of(Runtime& rt) {
  // The runtime's internals are reachable from its fibers only.
  detail::RuntimeCore* core = nullptr;
  rt.spawn([&core] { core = &detail::core_of_current("sa::PagedRegion"); }).join();
  return *core;
}

}  // namespace

PagedRegion::PagedRegion(PagedRegionOptions options)
    : core_(std::make_unique<detail::PagedCore>(detail::core_of_current("sa::PagedRegion"), std::move(options))) {
  core_->start();
}

PagedRegion::PagedRegion(Runtime& rt, PagedRegionOptions options)
    : core_(std::make_unique<detail::PagedCore>(core_of(rt), std::move(options))) {
  core_->start();
}

PagedRegion::~PagedRegion() = default;

std::byte* PagedRegion::data() const noexcept { return core_->base(); }
std::size_t PagedRegion::size() const noexcept { return core_->size(); }
std::size_t PagedRegion::page_size() const noexcept { return core_->page_size(); }
std::size_t PagedRegion::pages() const noexcept { return core_->pages(); }
const std::string& PagedRegion::name() const noexcept { return core_->name(); }
bool PagedRegion::write_protected_eviction() const noexcept { return core_->wp(); }
PagedRegionStats PagedRegion::stats() const { return core_->stats(); }

}  // namespace sa
