#include <sa/spinlock.hpp>

#include <sa/detail/runtime_core.hpp>

namespace sa {

namespace detail {
FiberId current_fiber_id() noexcept {
  FiberCtl* f = current_fiber();
  return f ? f->id : 0;
}
}  // namespace detail

namespace {

// A holder off its CPU for less than this is left alone: the waiter spins
// on. A CPU hog takes a time slice (milliseconds) from the holder, but most
// preemptions last microseconds (the sysmon's wake-up every millisecond, a
// kworker), and recovering from one of those costs more than it saves: the
// donor sleeps, the holder migrates twice, and the woken donor can preempt
// the holder on the donated CPU before it re-pins itself.
constexpr int64_t kRecoverAfterNs = 50'000;

}  // namespace

void Spinlock::lock_slow() noexcept {
  constexpr int kMaxBackoff = 1024;  // pauses between looks, at most
  constexpr int kYieldAfter = 64;    // backoff rounds before yielding the fiber
  // Holding another Spinlock, we may not leave our activation: spin only.
  const bool may_leave = detail::tl_critical_depth == 0;
  int backoff = 1;
  unsigned rounds = 0;
  for (;;) {
    for (uintptr_t w; (w = word_.load(std::memory_order_relaxed)) != 0;) {
      shim::Activation* h = activation_of(w);
      int64_t since = 0;  // when the holder left its CPU (CLOCK_MONOTONIC, as now_ns())
      const shim::CpuState cs = h ? h->cpu_state(&since) : shim::CpuState::Unknown;
      if (may_leave && (cs == shim::CpuState::Preempted || cs == shim::CpuState::Sleeping) &&
          detail::now_ns() - since >= kRecoverAfterNs) {
        wait_for_holder(h, cs);
        backoff = 1;
        continue;
      }
      for (int i = 0; i < backoff; ++i) SA_CPU_RELAX();
      if (backoff < kMaxBackoff) backoff *= 2;
      if (may_leave && ++rounds % kYieldAfter == 0) detail::yield();
    }
    if (try_lock()) return;
  }
}

void Spinlock::wait_for_holder(shim::Activation* h, shim::CpuState state) noexcept {
  // Runtime code from here: a block (sched_setaffinity may sleep) must not
  // hand our processor away while we hold lock_.
  detail::RuntimeSection section;
  detail::VProc* vp = detail::current_vproc();
  if (vp && vp->in_fiber()) detail::count(vp->counters.spin_recoveries);
  // Step 1: nothing else to run here: give our CPU to the holder (one of
  // our runtime's activations: processors and CPUs are the shim's).
  shim::Shim* donor = nullptr;
  if (vp && state == shim::CpuState::Preempted && h->shim == &vp->core.shim() && !vp->has_work() &&
      vp->core.shim().donate(*h)) {
    donor = &vp->core.shim();
    if (vp->in_fiber()) detail::count(vp->counters.spin_donations);
    // seq_cst: after the store of `donated` (design comment). Released or
    // passed on before the holder could see the flag: end it ourselves
    // (and not again after our park: the flag may be another donor's then).
    if (activation_of(word_.load(std::memory_order_seq_cst)) != h) {
      donor->end_donation(*h);
      donor = nullptr;
    }
  }
  // Step 2: park until the next unlock, if the lock is still held.
  detail::Waiter w;
  lock_.lock();
  uintptr_t s = word_.load(std::memory_order_relaxed);
  while (s & kLocked) {
    // Succeeds only while held: an unlock in between makes it fail.
    if (word_.compare_exchange_weak(s, s | kParked, std::memory_order_relaxed, std::memory_order_relaxed)) {
      waiters_.push_back(&w);
      detail::park(w, &lock_, detail::TimerHeap::kNever);
      // Woken by the unlock, which ends the donation after it wakes us: we
      // may have preempted the holder on our CPU first (a woken sleeper
      // goes ahead of the thread that woke it), and its own processor would
      // then wait for our time slice to end. Re-pin it ourselves; the flag's
      // exchange lets one of us do it.
      if (donor) donor->end_donation(*h);
      return;
    }
  }
  lock_.unlock();
}

void Spinlock::unlock_slow(uintptr_t old, shim::Activation* self) noexcept {
  if (old & kParked) {
    // Hold the wait-list lock as a runtime section: a block in it must not
    // hand our processor away (the parked ones need us to finish).
    detail::RuntimeSection section;
    lock_.lock();
    waiters_.wake_all();
    lock_.unlock();
  }
  // Step 3, in this order: wake first, while we still run on the donor's
  // CPU. Re-pinning first moved us back to our own CPU, where the thread
  // that preempted us may still run its slice, before the donor, asleep
  // with nothing to run, was woken: both processors stalled for up to a
  // time slice (bench/run spinlock, 2 hogs, 1 worker per CPU: 612k
  // acquisitions/s this way round against 928k).
  if (self && self->shim) self->shim->end_donation(*self);
}

}  // namespace sa
