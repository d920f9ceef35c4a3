// The scheduler entry points: ready, park, yield, and a fiber's first and
// last moments (fiber_entry, the post-switch actions).

#include <sa/detail/runtime_core.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sched.h>

namespace sa::detail {

namespace {

// Post-switch actions (context.hpp): run on the far side of a switch.

// post_unlock: the fiber that parked is saved; now wakers may find it.
void post_unlock(FiberCtl*, void* lock) noexcept { static_cast<SpinLock*>(lock)->unlock(); }

// A park with a deadline: its timer, the heap to arm it on, and the lock
// to release (or null).
struct TimedPark {
  TimerNode* timer;
  TimerHeap* heap;
  SpinLock* lock;
};

// post_arm: the fiber that parked is saved; now its timer may fire, then
// wakers may find it. Armed before the switch, the timer could fire in the
// pick that chooses the next fiber (every kGlobalEvery-th pick fires the
// expired timers): with a short deadline, that readied the parking fiber
// itself, which was then switched to on its stale context (a crash), or
// stolen and run twice.
void post_arm(FiberCtl*, void* arg) noexcept {
  // Copied first, as complete_record() copies its record: it lives on the
  // parked fiber's stack, and the fiber may run again once its lock is
  // released (or, were any other thread to fire this heap, once armed).
  const TimedPark p = *static_cast<const TimedPark*>(arg);
  p.heap->arm(p.timer);
  if (p.lock) p.lock->unlock();
}

// post_exit: the fiber that finished gives its stack back and is retired.
void post_exit(FiberCtl* prev, void*) noexcept {
  VProc* vp = current_vproc();
#if defined(SA_TSAN)
  __tsan_destroy_fiber(prev->tsan_fiber);
  prev->tsan_fiber = nullptr;
#endif
  vp->stacks.put(prev->stack);
  prev->stack = Stack{};
  retire(prev, FiberState::Running);
}

// park_thread: park() for a kernel thread outside the runtime.
WaitState park_thread(Waiter& w, SpinLock* lock, int64_t deadline_ns) noexcept {
  if (lock) lock->unlock();
  const auto deadline = to_time_point(deadline_ns);
  for (;;) {
    uint32_t s = w.state.load(std::memory_order_acquire);
    if (s != static_cast<uint32_t>(WaitState::Waiting)) return static_cast<WaitState>(s);
    if (!shim::futex_wait(w.state, s, deadline)) {
      // Timed out: race the notifiers for the wake-up.
      if (w.state.compare_exchange_strong(s, static_cast<uint32_t>(WaitState::TimedOut), std::memory_order_acq_rel))
        return WaitState::TimedOut;
      return static_cast<WaitState>(s);
    }
  }
}

}  // namespace

[[gnu::noinline]] void complete_record(void* record, bctx::fcontext_t from) noexcept {
  const SwitchRecord rec = *static_cast<SwitchRecord*>(record);
  rec.prev->ctx = from;
  if (rec.action) rec.action(rec.prev, rec.arg);
  if (rec.poll) rec.poll->poll();
}

int64_t to_ns(std::chrono::steady_clock::time_point tp) noexcept {
  if (tp == std::chrono::steady_clock::time_point::max()) return TimerHeap::kNever;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(tp.time_since_epoch()).count();
}

bool try_wake(Waiter* w, WaitState how) noexcept {
  // Read the fiber first: once the CAS succeeds, a thread waiter may return
  // and its Waiter go away. (The futex_wake below may then hit a dead stack
  // word: at worst a spurious wake-up, which every futex waiter tolerates.)
  FiberCtl* f = w->fiber;
  constexpr auto kWaiting = static_cast<uint32_t>(WaitState::Waiting);
  constexpr auto kSpinning = static_cast<uint32_t>(WaitState::Spinning);
  // acq_rel: the woken side sees what the waker did before; the waker sees
  // the waiter's setup.
  for (uint32_t s = kWaiting;;) {
    if (w->state.compare_exchange_strong(s, static_cast<uint32_t>(how), std::memory_order_acq_rel)) break;
    if (s != kSpinning) return false;  // woken already
    // A spinning fiber (park_spin, S3): the CAS is the whole wake-up.
    if (w->state.compare_exchange_strong(s, static_cast<uint32_t>(how), std::memory_order_acq_rel)) return true;
    // The spinner went Waiting at S4 (its context is saved now): try
    // again from Waiting, and ready it. Anything else: woken already.
    if (s != kWaiting) return false;
  }
  // A timeout joins the back of the queue, so expired timers run in
  // deadline order; a notification runs next, for locality.
  if (f) ready(f, how != WaitState::TimedOut);
  else shim::futex_wake(w->state, 1);
  return true;
}

void ready(FiberCtl* f, bool run_next) noexcept {
  RuntimeSection section;
  f->set_state(FiberState::Parked, FiberState::Ready);
  RuntimeCore& core = *f->core;
  VProc* vp = current_vproc();
  // Read `f` before it is queued: from then on its VProc may run it to the
  // end and a join() free it (TSan caught this read after the push).
  if (VProc* home = f->home) {
    home->inbox.push(f);
    if (home != vp) core.wake_vproc(*home);
    return;
  }
  if (vp && &vp->core == &core) {
    if (run_next) vp->runq.push_next(f, core.global);
    else vp->runq.push(f, core.global);
    count(vp->counters.fiber_wakes);
    if (vp->deferring_wakes) {  // its loop polls and runs what it readies: poll_own()
      ++vp->deferred_wakes;
      return;
    }
  } else {
    core.global.push(f);
  }
  core.wake_idle();
}

void safe_point() noexcept {
  if (tl_critical_depth > 0) return;  // the end of the outermost section is the safe point
  shim::Activation* a = shim::Activation::current();
  if (a) a->safepoint_requested.store(false, std::memory_order_relaxed);
  VProc* vp = current_vproc();
  if (vp && vp->in_fiber() && vp->revoked.load(std::memory_order_acquire)) yield();
}

void critical_section_violation(const char* what) noexcept {
  FiberCtl* f = current_fiber();
  std::fprintf(stderr, "sa: fiber %llu %s while holding an sa::Spinlock (unlock it first)\n",
               static_cast<unsigned long long>(f ? f->id : 0), what);
  std::abort();
}

WaitState park(Waiter& w, SpinLock* lock, int64_t deadline_ns) noexcept {
  if (tl_critical_depth > 0) critical_section_violation("waited (park)");
  RuntimeSection section;
  VProc* vp = current_vproc();
  if (!vp || !vp->in_fiber()) return park_thread(w, lock, deadline_ns);
  FiberCtl* self = vp->current;
  TimerNode timer;
  self->set_state(FiberState::Running, FiberState::Parked);
  count(vp->counters.fiber_parks);
  if (deadline_ns != TimerHeap::kNever) {
    // Armed on the far side of the switch (post_arm), on this VProc: the
    // switch does not change threads.
    timer.deadline = deadline_ns;
    timer.waiter = &w;
    TimedPark p{&timer, &vp->timers, lock};
    vp->switch_from(self, &post_arm, &p);
  } else {
    vp->switch_from(self, lock ? &post_unlock : nullptr, lock);
  }
  // Resumed, perhaps on another VProc: `vp` is stale.
  if (timer.heap) timer.heap->disarm(&timer);
  return w.load();
}

namespace {

// post_park_spun: the far side of park_spin()'s switch (S4). The fiber
// that parked is saved; leave Spinning for Waiting, or, if a waker came
// first (it readied nothing), ready the fiber here.
void post_park_spun(FiberCtl* prev, void* arg) noexcept {
  std::atomic<uint32_t>& state = static_cast<Waiter*>(arg)->state;
  uint32_t s = static_cast<uint32_t>(WaitState::Spinning);
  // acq_rel: on success, a waker's later CAS sees the saved context (its
  // ready() follows it); on failure, the fiber resumes after the waker's
  // writes. `arg` is not touched after a success: the fiber may run then.
  if (state.compare_exchange_strong(s, static_cast<uint32_t>(WaitState::Waiting), std::memory_order_acq_rel)) return;
  ready(prev, s != static_cast<uint32_t>(WaitState::TimedOut));
}

// spin_ok() is true while `vp` may let a waiting fiber spin: nothing else
// to run here and nothing that wants the loop (revocation, a held
// activation, a slice mark). The caller checks the timers.
bool spin_ok(const VProc* vp) noexcept {
  return vp->inbox.empty() && vp->runq.empty() && vp->attention.load(std::memory_order_relaxed) == 0;
}

}  // namespace

VProc* spin_eligible() noexcept {
  VProc* vp = current_vproc();
  // Only a bound fiber spins. An unbound one woken from another VProc
  // moves to its waker's (ready(): the waker's `next` slot), so two unbound
  // fibers that talk end up on one VProc, which beats any exchange between
  // CPUs; a spin would keep them apart (bench/run ping_pong, unbound: 180-
  // 215 ns a round trip parking, 240-290 spinning).
  // A fiber holding an sa::Spinlock may not wait at all: it goes on to
  // park(), which reports the misuse.
  if (!vp || !vp->in_fiber() || !vp->current->home || tl_critical_depth > 0 ||
      vp->poller.load(std::memory_order_relaxed) || !spin_ok(vp))
    return nullptr;
  return vp;
}

uint32_t spin_while(VProc* vp, const std::atomic<uint32_t>& word, uint32_t value) noexcept {
  // A turn loads the word only; the clock and the VProc's queues are
  // looked at every 8th turn, and the spin's end is set at the first of
  // those looks: a clock read costs more than a turn here (about 35 ns, a
  // vDSO read of kvm-clock), and a partner on another CPU often answers
  // before it (bench/run ping_pong: about 100 ns one way).
  int64_t until = 0;
  for (uint32_t turn = 1;; ++turn) {
    // acquire: pairs with the waker's release, after its writes (a value).
    const uint32_t s = word.load(std::memory_order_acquire);
    if (s != value) {
      count(vp->counters.spin_wakeups);
      return s;
    }
    SA_CPU_RELAX();
    if (turn % 8 != 0) continue;
    const int64_t now = now_ns();
    // A due timer ends the spin too (its deadline read once: only this
    // VProc's fibers arm timers here, and none runs while we spin).
    if (until == 0) until = std::min(now + kParkSpinNs, vp->timers.next_deadline());
    if (now >= until || !spin_ok(vp)) return value;
  }
}

WaitState park_spin(Waiter& w, SpinLock* lock, int64_t deadline_ns) noexcept {
  if (deadline_ns != TimerHeap::kNever) return park(w, lock, deadline_ns);
  if (tl_critical_depth > 0) critical_section_violation("waited (park)");
  RuntimeSection section;
  VProc* vp = spin_eligible();
  if (!vp) return park(w, lock, TimerHeap::kNever);
  // S1. relaxed: the unlock (release) publishes it to the next waker.
  w.state.store(static_cast<uint32_t>(WaitState::Spinning), std::memory_order_relaxed);
  if (lock) lock->unlock();
  // S2 (S3 is the waker's).
  const auto spinning = static_cast<uint32_t>(WaitState::Spinning);
  if (const uint32_t s = spin_while(vp, w.state, spinning); s != spinning) return static_cast<WaitState>(s);
  // S4.
  FiberCtl* self = vp->current;
  self->set_state(FiberState::Running, FiberState::Parked);
  count(vp->counters.fiber_parks);
  vp->switch_from(self, &post_park_spun, &w);
  // Resumed, perhaps on another VProc: `vp` is stale.
  return w.load();
}

namespace {

// yield_slow() is yield() in every case: the fast path below hands it all
// that it does not handle itself. With `slice` it is maybe_yield()'s slow
// path instead: the time slicer marked the VProc.
[[gnu::noinline]] void yield_slow(bool slice = false) noexcept {
  if (tl_critical_depth > 0) {
    if (slice) return;  // a slice ends at the first safe point after the section
    critical_section_violation("yielded");
  }
  // Shim on: an activation that lost its VProc to a block holds here until
  // it has one again; current_vproc() is then the VProc it runs.
  RuntimeSection section;
  VProc* vp = current_vproc();
  if (!vp || !vp->in_fiber()) {
    if (!slice) ::sched_yield();
    return;
  }
  if (slice) {
    // The bit seen may have been another VProc's (shim on: this activation
    // was held and resumed on `vp`). The mark is for the slice that began
    // at switch `slice_switch`: a fiber picked since then has not had its
    // slice yet. acquire: pairs with the slicer's fetch_or (release), which
    // followed its store.
    if (!(vp->attention.load(std::memory_order_acquire) & VProc::kAttnSlice)) return;
    const uint64_t switches = vp->counters.switches.load(std::memory_order_relaxed);
    if (vp->slice_switch.load(std::memory_order_relaxed) != switches) {
      // Not ours: clear it. A mark for us may have come just before the
      // clear (its fetch_or found the bit set): the acq_rel RMW then sees
      // its slice_switch, and we yield for it after all.
      vp->attention.fetch_and(~VProc::kAttnSlice, std::memory_order_acq_rel);
      if (vp->slice_switch.load(std::memory_order_relaxed) != switches) return;
    }
    // The slicer counted the global queue as waiting work, which the pick
    // below looks at only every kGlobalEvery-th time: when nothing waits
    // here, look there now. (Not before local work: fibers spawned from
    // outside would then always pass those queued here, bound ones too.)
    if (vp->runq.empty() && vp->inbox.empty()) vp->look_at_global_next();
  }
  FiberCtl* self = vp->current;
  // The yielding fiber waits for no I/O, so completions cannot wake it early.
  if (Poller* p = vp->poller.load(std::memory_order_relaxed)) p->poll();
  FiberCtl* next = vp->pick_local();
  if (!next) {
    // Nobody else is ready here: go on, unless the VProc must go through
    // its loop (a safe point on a revoked VProc stands it down; a held
    // activation's turn hands it over). relaxed: as in pick_local().
    if (vp->attention.load(std::memory_order_relaxed) == 0) return;
    next = vp->loop_ctx;
  }
  if (slice) count(vp->counters.slice_yields);
  yield_switch(vp, self, next);
}

// yield_to_new() is the fast path's end when the fiber it picked never
// ran: give it a stack (a call the fast path keeps out of its own frame).
[[gnu::noinline]] void yield_to_new(VProc* vp, FiberCtl* f) noexcept {
  FiberCtl* next = vp->prepare(f);
  if (!next) return yield_slow();  // it could not start (and is finished): pick again
  yield_switch(vp, vp->current, next);
}

}  // namespace

// yield(): the fast path. A fiber yielding to the others of a busy VProc
// in plain mode meets only the cases below; everything else goes to
// yield_slow(), which handles every case. What the fast path leaves out,
// and why that is safe:
//   - a critical section: yield_slow reports the misuse;
//   - ShimMode::on (VProc::activations_mode): a fiber's own code runs User
//     there, and the switch must run Running (RuntimeSection's CAS pair, so
//     that a block in it is never handed off), and a fiber may be inside an
//     sa::blocking call (RuntimeSection pauses it). In plain mode neither
//     happens: every activation is Running all the time and blocking_enter()
//     announces nothing, so RuntimeSection would do nothing. (Reading the
//     VProc and its flag before any RuntimeSection is harmless even for a
//     Lost activation: it only decides to take the slow path.);
//   - no VProc, the loop context, or a VProc with a poller (yield_slow
//     polls it before it picks);
//   - pick_fast() null: attention (revocation, held activations), the
//     periodic look at timers and the global queue due, a fiber in the
//     inbox, or nothing in the run queue; and a new fiber (yield_to_new).
// Otherwise it does what yield_slow does: the same pick, the same state
// changes and counters, `self` at the back of the run queue (on one VProc
// before the switch, RunQueue::rotate: no thief exists to take it early).
void yield() noexcept {
  if (tl_critical_depth != 0) [[unlikely]] return yield_slow();
  VProc* vp = tl_vproc;  // before the switch only (vproc.hpp)
  if (!vp || vp->activations_mode || !vp->in_fiber() || vp->poller.load(std::memory_order_relaxed)) [[unlikely]]
    return yield_slow();
  FiberCtl* const self = vp->current;
  uintptr_t tag;
  FiberCtl* next = vp->pick_fast(self, tag);
  if (!next) [[unlikely]] return yield_slow();
  if (!next->ctx) [[unlikely]] return yield_to_new(vp, next);  // (never after a rotate)
  yield_switch(vp, self, vp->prepare(next), tag);
}

void slice_yield() noexcept { yield_slow(/*slice=*/true); }

void fiber_entry(bctx::transfer_t t) noexcept {
  sanitizer_enter(nullptr);
  complete_switch(t);
  FiberCtl* self = current_vproc()->current;
  shim::Shim::to_user();  // the fiber's own code starts
  try {
    self->invoke();
  } catch (...) {
    self->error = std::current_exception();
  }
  shim::Shim::enter_runtime();  // and ends: Running for good
  complete(self);
  current_vproc()->switch_from(self, &post_exit, nullptr, /*self_dies=*/true);
  __builtin_unreachable();
}

}  // namespace sa::detail
