// The SIGBUS side of PagedFaultMode::park_fiber (<sa/paged_region.hpp>,
// "Fault modes", P1 and P4): the process-wide table of such regions and the
// handler that turns a fault into a parked fiber.
//
// The handler is installed with the first park_fiber region and stays
// (a later region installs it again if another handler replaced it): a
// SIGBUS on an address in no region, or of another kind (a poisoned page,
// a truncated file mapping, a signal sent by kill), goes to the action that
// was there before, so the process dies as it would have without sa (or a
// sanitizer reports it). It runs on the stack of whatever took the fault
// (no SA_ONSTACK): a fiber's stack, where the fiber can park inside it.

#include <pthread.h>
#include <signal.h>
#include <ucontext.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <system_error>

#include <sa/detail/runtime_core.hpp>
#include <sa/detail/spin_lock.hpp>

#include "paged_core.hpp"

namespace sa::detail {

namespace {

constexpr int kSlots = 64;

// One park_fiber region. `users` counts handlers between finding the region
// here and queueing their fault in it (then the region's own lock and
// waiter list take over, and its destructor sees the fault as pending).
struct Slot {
  std::atomic<PagedCore*> core{nullptr};
  std::atomic<uintptr_t> base{0};
  std::atomic<std::size_t> len{0};
  std::atomic<int> users{0};
};

Slot g_slots[kSlots];
SpinLock g_table_lock;             // add / remove; never taken by the handler
// The SIGBUS action before ours. Replaced (under g_table_lock) when sa's
// handler is installed again; read by the handler at any time, so each
// value is a copy of its own that is never freed (a few bytes per
// reinstallation, which is rare).
std::atomic<const struct sigaction*> g_previous{nullptr};

// SIG_DFL with an empty mask (all zero bits on Linux). Also what
// g_previous becomes when a previous handler with SA_RESETHAND runs, as the
// kernel would have left it (set in a signal handler, so a static object
// rather than a new copy).
constinit const struct sigaction g_default_action = {};

// How many previous handlers pass_on() is running on this thread. Atomic:
// pass_on() may finish on another thread (see there).
constinit thread_local std::atomic<int> tl_pass_depth{0};

// pass_depth() is this thread's tl_pass_depth. Out of line and opaque to
// the optimiser (noipa), like set_errno() (vproc.hpp): after a park the address
// must be found again, on the thread the fiber runs on then.
[[gnu::noipa]] std::atomic<int>* pass_depth() noexcept { return &tl_pass_depth; }

// this_thread() is pthread_self(), which glibc declares const: the call
// could be folded with one made before the fiber parked and moved.
[[gnu::noipa]] pthread_t this_thread() noexcept { return ::pthread_self(); }

// true_to_this_thread() gives the signal frame `ucv` this thread's current
// signal mask and alternate stack, which sigreturn installs: the ones saved
// at the fault are another thread's if the fiber moved since (P4).
void true_to_this_thread(void* ucv) noexcept {
  auto* uc = static_cast<ucontext_t*>(ucv);
  ::pthread_sigmask(SIG_SETMASK, nullptr, &uc->uc_sigmask);
  ::sigaltstack(nullptr, &uc->uc_stack);
}

// synchronous() is true for a SIGBUS raised by an access (it recurs if the
// access is retried), false for one sent (kill) or reported (BUS_MCEERR_AO).
bool synchronous(const siginfo_t* si) noexcept {
  return si->si_code == BUS_ADRALN || si->si_code == BUS_ADRERR || si->si_code == BUS_OBJERR ||
         si->si_code == BUS_MCEERR_AR;
}

// pass_on() does with a SIGBUS that is not a park_fiber fault what the
// action installed before ours would have done. A handler is called with
// its sa_mask added (on this stack: its SA_ONSTACK is not honoured); one
// with SA_RESETHAND is called once, and the default action takes its place
// behind ours (park_fiber faults still need ours in front). The default
// action is restored and, for a signal that does not recur, raised again:
// the process dies as it would have (a fault cannot be ignored, so an
// ignored SIGBUS that is a fault dies too).
//
// Unlike the kernel, we leave SIGBUS unblocked during a handler without
// SA_NODEFER: a park_fiber page it touches faults with SIGBUS, and a
// blocked synchronous SIGBUS kills the process (the kernel resets it to
// the default action), where sa must serve the fault.
//
// A previous handler that passes the signal on to the handler before it
// may reach ours again (it was installed after sa's and chains to it, and a
// later region put ours back in front): on this thread, inside its own
// call, pass_on() then takes the default action instead of calling it
// again for ever.
void pass_on(int sig, siginfo_t* si, void* uc) {
  const struct sigaction* prev = g_previous.load(std::memory_order_acquire);
  if (!prev) return;  // (never: the handler is installed after it is set)
  const bool sync = synchronous(si);
  std::atomic<int>* const depth = pass_depth();
  const bool chained_back = depth->load(std::memory_order_relaxed) > 0;
  if (prev->sa_handler == SIG_IGN && !sync && !chained_back) return;
  if (prev->sa_handler == SIG_DFL || prev->sa_handler == SIG_IGN || chained_back) {
    ::sigaction(SIGBUS, &g_default_action, nullptr);
    if (!sync) ::raise(SIGBUS);
    return;
  }
  // SA_RESETHAND: the first SIGBUS to pass it on (another thread may be
  // passing one on too) calls it; the others find the default action.
  if ((prev->sa_flags & SA_RESETHAND) &&
      !g_previous.compare_exchange_strong(prev, &g_default_action, std::memory_order_acq_rel))
    return pass_on(sig, si, uc);
  sigset_t mask = prev->sa_mask;
  sigdelset(&mask, SIGBUS);
  sigset_t old;
  ::pthread_sigmask(SIG_BLOCK, &mask, &old);
  // `depth` is this thread's: should the handler park a fiber in a
  // park_fiber fault and resume on another thread, the count still drops
  // where it rose.
  depth->fetch_add(1, std::memory_order_relaxed);
  if (prev->sa_flags & SA_SIGINFO) prev->sa_sigaction(sig, si, uc);
  else prev->sa_handler(sig);
  depth->fetch_sub(1, std::memory_order_relaxed);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void on_sigbus(int sig, siginfo_t* si, void* ucv) {
  const int saved_errno = errno;  // the faulting thread's: read before any park
  // A fault inside sa::blocking() may also come back on another thread
  // without parking: entering the runtime ends the announced call, whose
  // processor may have been handed off meanwhile (Shim::exit_call).
  const pthread_t faulted_on = this_thread();
  if (si->si_code == BUS_ADRERR) {  // what UFFD_FEATURE_SIGBUS raises
    const auto a = reinterpret_cast<uintptr_t>(si->si_addr);
    for (Slot& s : g_slots) {
      PagedCore* core = s.core.load(std::memory_order_acquire);
      if (!core || a - s.base.load(std::memory_order_relaxed) >= s.len.load(std::memory_order_relaxed)) continue;
      // Counted, then checked again: signal_table_remove() empties the
      // slot, then waits for the count (seq_cst both ways, as Dekker's).
      s.users.fetch_add(1, std::memory_order_seq_cst);
      if (s.core.load(std::memory_order_seq_cst) != core) {
        s.users.fetch_sub(1, std::memory_order_release);
        continue;
      }
      const SignalFault how = core->on_signal(reinterpret_cast<std::byte*>(a), s.users);
      if (how == SignalFault::not_ours) continue;  // a slot reused meanwhile: look on
      // P4: parked, other fibers ran on this thread (one may have changed
      // its mask), or the fiber runs on another one now.
      if (how == SignalFault::parked || !::pthread_equal(this_thread(), faulted_on)) true_to_this_thread(ucv);
      set_errno(saved_errno);
      return;  // the access is retried
    }
  }
  if (!::pthread_equal(this_thread(), faulted_on)) true_to_this_thread(ucv);
  set_errno(saved_errno);
  pass_on(sig, si, ucv);
}

}  // namespace

int signal_table_add(PagedCore* core, std::byte* base, std::size_t len) {
  std::lock_guard g(g_table_lock);
  // Installed unless ours is in place: a handler installed since (by
  // someone who did not pass our faults on) is the one we now pass on to.
  struct sigaction now = {};
  if (::sigaction(SIGBUS, nullptr, &now) != 0)
    throw std::system_error(errno, std::generic_category(), "sa::PagedRegion: sigaction(SIGBUS)");
  if (!(now.sa_flags & SA_SIGINFO) || now.sa_sigaction != on_sigbus) {
    struct sigaction sa = {};
    sa.sa_sigaction = on_sigbus;
    // SA_NODEFER: the fiber parks inside the handler and its thread runs
    // other fibers, which may fault too; nothing may block SIGBUS then.
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    g_previous.store(new struct sigaction(now), std::memory_order_release);
    if (::sigaction(SIGBUS, &sa, nullptr) != 0)
      throw std::system_error(errno, std::generic_category(), "sa::PagedRegion: sigaction(SIGBUS)");
  }
  for (int i = 0; i < kSlots; ++i) {
    Slot& s = g_slots[i];
    if (s.core.load(std::memory_order_relaxed) || s.users.load(std::memory_order_acquire) != 0) continue;
    s.base.store(reinterpret_cast<uintptr_t>(base), std::memory_order_relaxed);
    s.len.store(len, std::memory_order_relaxed);
    s.core.store(core, std::memory_order_release);
    return i;
  }
  throw std::length_error("sa::PagedRegion: more than 64 park_fiber regions at once");
}

void signal_table_remove(int slot) noexcept {
  Slot& s = g_slots[slot];
  {
    std::lock_guard g(g_table_lock);
    s.core.store(nullptr, std::memory_order_seq_cst);
  }
  // A handler that found the region before it left the table is about to
  // queue its fault (or to find the region gone). It may first wait for the
  // region's lock or, a Lost activation, for a processor: let others run.
  while (s.users.load(std::memory_order_seq_cst) != 0) yield();
}

}  // namespace sa::detail
