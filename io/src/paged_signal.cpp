// The SIGBUS side of PagedFaultMode::park_fiber (<sa/paged_region.hpp>,
// "Fault modes", P1 and P4): the process-wide table of such regions and the
// handler that turns a fault into a parked fiber.
//
// The handler is installed with the first park_fiber region and stays: a
// SIGBUS on an address in no region, or of another kind (a poisoned page,
// a truncated file mapping, a signal sent by kill), goes to the action that
// was there before, so the process dies as it would have without sa (or a
// sanitizer reports it). It runs on the stack of whatever took the fault
// (no SA_ONSTACK): a fiber's stack, where the fiber can park inside it.

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
struct sigaction g_previous = {};  // the SIGBUS action before ours
bool g_installed = false;          // guarded by g_table_lock

// pass_on() gives a SIGBUS that is not a park_fiber fault to the action
// installed before ours. The default action (or an ignored SIGBUS, which a
// fault cannot ignore) is restored: a fault then recurs on return and
// kills the process; a signal sent by kill is raised again.
void pass_on(int sig, siginfo_t* si, void* uc) {
  if (g_previous.sa_handler == SIG_DFL || g_previous.sa_handler == SIG_IGN) {
    struct sigaction dfl = {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    ::sigaction(SIGBUS, &dfl, nullptr);
    if (si->si_code <= 0) ::raise(SIGBUS);
    return;
  }
  if (g_previous.sa_flags & SA_SIGINFO) g_previous.sa_sigaction(sig, si, uc);
  else g_previous.sa_handler(sig);
}

// thread_pointer() tells kernel threads apart without a system call: the
// TCB's self pointer at %fs:0, read anew each time (the compiler may keep
// the address of a thread_local, or pthread_self(), across a call: the
// fiber's move to another thread is invisible to it). Null: unknown.
const void* thread_pointer() noexcept {
#if defined(__x86_64__)
  const void* tp;
  asm volatile("mov %%fs:0, %0" : "=r"(tp));
  return tp;
#else
  return nullptr;
#endif
}

void on_sigbus(int sig, siginfo_t* si, void* ucv) {
  const int saved_errno = errno;
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
      const void* thread = thread_pointer();
      if (!core->on_signal(reinterpret_cast<std::byte*>(a), s.users)) break;
      if (!thread || thread_pointer() != thread) {
        // P4: the fiber runs on another kernel thread now. sigreturn
        // installs the signal mask and the alternate stack saved in the
        // frame, the faulting thread's: give it this thread's own. (On the
        // same thread the frame's are right: two system calls saved.)
        auto* uc = static_cast<ucontext_t*>(ucv);
        ::pthread_sigmask(SIG_SETMASK, nullptr, &uc->uc_sigmask);
        ::sigaltstack(nullptr, &uc->uc_stack);
      }
      errno = saved_errno;
      return;  // the access is retried
    }
  }
  errno = saved_errno;
  pass_on(sig, si, ucv);
}

}  // namespace

int signal_table_add(PagedCore* core, std::byte* base, std::size_t len) {
  std::lock_guard g(g_table_lock);
  if (!g_installed) {
    struct sigaction sa = {};
    sa.sa_sigaction = on_sigbus;
    // SA_NODEFER: the fiber parks inside the handler and its thread runs
    // other fibers, which may fault too; nothing may block SIGBUS then.
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (::sigaction(SIGBUS, &sa, &g_previous) != 0)
      throw std::system_error(errno, std::generic_category(), "sa::PagedRegion: sigaction(SIGBUS)");
    g_installed = true;
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
