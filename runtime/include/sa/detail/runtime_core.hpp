#pragma once
// RuntimeCore: the state shared by the VProcs of one Runtime, and the
// scheduler entry points the public API and sync/ are built on:
//   start()  - a newly spawned fiber enters a ready queue
//   ready()  - a parked fiber becomes ready (wakers call it via try_wake)
//   park()   - the calling fiber (or outside thread) waits on a Waiter
//   yield()  - the calling fiber lets the others on its VProc run
// See vproc.hpp for the scheduler loop and the idle protocol.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <sa/detail/vproc.hpp>
#include <sa/detail/waiter.hpp>
#include <sa/shim/shim.hpp>

namespace sa {
struct Options;
}

namespace sa::detail {

class RuntimeCore final : public shim::UpcallHandler {
 public:
  explicit RuntimeCore(const Options& options);
  ~RuntimeCore() override;

  // Upcall: run processor `vp` on the calling activation until stop() or
  // until it moves to another activation.
  void processor_added(int vp) noexcept override;
  // Upcall, on a spare: `blocked` blocked in a call while running `vp`; run
  // `vp` here.
  void activation_blocked(int vp, shim::Activation& blocked) noexcept override;
  // Upcall, on `a`: its call returned after its VProc went to a spare. The
  // calling fiber goes back to a ready queue; `a` leaves its loop.
  void activation_unblocked(shim::Activation& a) noexcept override;
  // Notice, on the shim's monitor: the kernel preempted `a` running `vp`.
  void processor_preempted(int vp, shim::Activation& a) noexcept override;
  // Notice, on the shim's monitor: `vp` is taken from blocked `a`.
  void processor_taken(int vp, shim::Activation& a) noexcept override;
  // Upcall, on `a` (Held): queue it for a VProc, wait, take that VProc.
  void held_queued() noexcept override;
  void activation_held(shim::Activation& a) noexcept override;
  // hand_to_held() gives VProc `v` (run by the calling activation, in its
  // loop) to a held activation if one waits; true if it did (the caller
  // then leaves the loop).
  bool hand_to_held(VProc& v) noexcept;
  bool has_held() const noexcept { return shim_->has_held(); }

  // start() puts a new fiber (refs, id set) into a ready queue; any thread.
  void start(FiberCtl* f) noexcept;
  // wake_idle() is steps W1-W3 of the idle protocol after a fiber was
  // published on a shared queue.
  void wake_idle() noexcept;
  // wake_vproc() wakes `v` if it sleeps, after work was put in its inbox.
  void wake_vproc(VProc& v) noexcept;
  // bound_wake_pending() is true while a VProc that a waker claimed (W3)
  // has not woken yet and a bound fiber waits in its inbox: a hint for
  // searchers (VProc::search), read with relaxed loads.
  bool bound_wake_pending() noexcept;
  // revoke() takes VProc `vp` away (Runtime::revoke_processor); restore()
  // gives it back. Any thread; never block.
  void revoke(int vp) noexcept;
  void restore(int vp) noexcept;
  // stop() makes every VProc leave its loop; then the activations exit.
  void stop() noexcept;
  bool stopping() const noexcept { return stopping_.load(std::memory_order_seq_cst); }

  int size() const noexcept { return static_cast<int>(vprocs_.size()); }
  VProc& vproc(int i) noexcept { return *vprocs_[static_cast<size_t>(i)]; }
  shim::Shim& shim() noexcept { return *shim_; }

  // next_fiber_id() is a new fiber id, unique in this runtime; `vp` is the
  // caller's VProc of this runtime (ids come a block at a time from it) or
  // null (outside the runtime: one at a time).
  uint64_t next_fiber_id(VProc* vp) noexcept;
  // Spawns and ends of fibers, for the shutdown check and stats(): counted
  // per VProc (VProcCounters::spawns and ::finished; a count shared by all
  // was one more line bounced between VProcs at every spawn and end), and
  // here for the spawns and ends outside any VProc.
  void count_spawn(VProc* vp) noexcept;
  void count_finish(VProc* vp) noexcept;
  // spawned_fibers() is how many fibers were spawned so far.
  uint64_t spawned_fibers() const noexcept;
  // live_fibers() is how many fibers were spawned and have not finished:
  // at least the number alive when it was called (never fewer, so a
  // shutdown that finds 0 has none left). It reads every end count first,
  // then every spawn count: a fiber's spawn is counted before it can run,
  // so the spawn of every end it saw is in the sum.
  int64_t live_fibers() const noexcept;

  GlobalQueue global;
  std::atomic<int32_t> nsearching{0};  // VProcs awake and looking for work
  std::atomic<int32_t> nsleeping{0};   // VProcs in idle steps 1-4

 private:
  bool claim(VProc& v) noexcept;
  // run_slicer() is the time slicer's thread (Options::time_slice): every
  // slice it marks kAttnSlice on each VProc that made no switch since its
  // last look while other fibers wait for it. stop_slicer() ends it.
  void run_slicer(std::chrono::microseconds slice) noexcept;
  void stop_slicer() noexcept;

  std::vector<std::unique_ptr<VProc>> vprocs_;
  std::unique_ptr<shim::Shim> shim_;
  std::mutex slicer_lock_;  // guards slicer_stop_
  std::condition_variable slicer_cv_;
  bool slicer_stop_ = false;
  std::thread slicer_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> outside_spawns_{0};    // spawns from threads outside the runtime
  std::atomic<uint64_t> outside_finished_{0};  // ends counted outside any VProc (unstarted fibers failed there)
  std::atomic<uint32_t> wake_start_{0};
};

// A fiber whose callable enters the runtime (a Mutex, a sleep, sa::io) is
// not in the kernel there, and if it parks its VProc runs other fibers,
// which must not run as part of its call: RuntimeSection pauses the call.
// call_pause() ends the announcement (the fiber may move, as at the call's
// end) and returns its depth (tl_call_depth: nested calls, 0 outside any);
// call_resume(depth) announces it again. Both keep errno.
inline constinit thread_local int tl_call_depth = 0;
int call_pause() noexcept;
void call_resume(int depth) noexcept;

// RuntimeSection: brackets runtime code run by a fiber (ShimMode::on), so
// that the shim never hands the processor away in the middle of it; also
// where a Lost activation holds (shim.hpp, steps 6-8). A fiber inside
// sa::blocking first pauses its call (above): before the runtime code takes
// any lock, since ending the call may move the fiber to another activation.
struct RuntimeSection {
  RuntimeSection() noexcept
      : paused_call(tl_call_depth > 0 ? call_pause() : 0), entered(shim::Shim::enter_runtime()) {}
  ~RuntimeSection() {
    if (entered) shim::Shim::leave_runtime();
    if (paused_call) call_resume(paused_call);
  }
  RuntimeSection(const RuntimeSection&) = delete;
  RuntimeSection& operator=(const RuntimeSection&) = delete;
  const int paused_call;
  const bool entered;
};

// Critical sections (issue 5): how many sa::Spinlocks the calling kernel
// thread holds. A fiber holding one is never descheduled by the runtime: it
// may not park or yield (either reports the misuse and aborts), and its
// sa::blocking calls run unannounced, so it stays on its activation until it
// unlocks; and
// safe points (processor revocation) wait until the depth is 0.
inline constinit thread_local int tl_critical_depth = 0;
// The outermost critical section moved the activation User -> Running
// (Shim::enter_runtime), so that, like runtime code, it is never handed
// away while it blocks in the kernel (a page fault): its VProc waits for it.
inline constinit thread_local bool tl_critical_entered = false;
// safe_point() is where a fiber acts on its activation's safepoint_requested
// flag (Shim::request_safe_point): outside critical sections, on a revoked
// VProc, it yields so the VProc stands down. May switch the fiber.
void safe_point() noexcept;
// critical_section_violation() reports "fiber N <what> while holding an
// sa::Spinlock" and aborts.
[[noreturn]] void critical_section_violation(const char* what) noexcept;

// Time as the scheduler keeps it: steady_clock nanoseconds.
inline int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
int64_t to_ns(std::chrono::steady_clock::time_point tp) noexcept;
inline std::chrono::steady_clock::time_point to_time_point(int64_t ns) noexcept {
  if (ns == TimerHeap::kNever) return std::chrono::steady_clock::time_point::max();
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(ns));
}

// ready() makes parked fiber `f` runnable: on its home VProc if bound, else on
// the calling VProc's run queue (next if `run_next`, else at the back), else
// on the global queue. Any thread; never blocks.
void ready(FiberCtl* f, bool run_next = true) noexcept;

// park() waits until `w` is woken (try_wake) or `deadline_ns` passes
// (TimerHeap::kNever: no deadline) and returns how it ended. `lock`, if
// given, is held by the caller and released once the wait is set up. In a
// fiber it blocks the fiber only; outside the runtime it blocks the thread.
WaitState park(Waiter& w, SpinLock* lock, int64_t deadline_ns) noexcept;

// park_spin() is park(w, lock, deadline_ns) for the waiters of
// synchronisation objects (`lock` held by the caller): without a deadline it
// first spins, for at most kParkSpinNs, while this VProc has nothing else to
// run, so that a wake-up from another CPU in that time costs no switch
// (waiter.hpp, S1-S4). Only a fiber bound to its VProc spins (an unbound one
// is better moved to its waker's VProc); never on a VProc with an I/O poller
// (the spin would delay its completions) nor outside the runtime. Blocks the
// fiber only.
WaitState park_spin(Waiter& w, SpinLock* lock, int64_t deadline_ns = TimerHeap::kNever) noexcept;
// spin_eligible() is the calling fiber's VProc if the fiber may spin-wait
// now (park_spin's conditions: bound, outside critical sections, on a VProc
// with no poller and nothing else to run), else null. Call it in a
// RuntimeSection.
VProc* spin_eligible() noexcept;
// spin_while() spins while `word` holds `value`, for at most kParkSpinNs
// and while `vp` (from spin_eligible(), in the same RuntimeSection) has
// nothing else to run, and returns the last value it read (acquire):
// `value` if the spin ran out, else the change, which it counts in
// spin_wakeups. Never blocks.
uint32_t spin_while(VProc* vp, const std::atomic<uint32_t>& word, uint32_t value) noexcept;
// How long park_spin() spins: a few cross-CPU round trips (a cache line
// goes there and back in about 0.1 µs on the 2-vCPU VM; a fiber woken
// through the VProc's inbox takes 0.4-1.6 µs a round trip). Past it, the
// VProc's own search spins on (VProc::search), so a longer spin here would
// only move that search into the fiber.
constexpr int64_t kParkSpinNs = 2'000;

// blocking_enter() / blocking_exit() (declared in <sa/blocking.hpp>)
// bracket a call that may block the kernel thread. Outside ShimMode::on
// they cost a branch.
//

// yield() lets the other ready fibers of this VProc run; outside the
// runtime it yields the thread.
void yield() noexcept;

// maybe_yield() is sa::this_fiber::maybe_yield(): a yield if the time
// slicer marked this VProc (kAttnSlice) while this fiber ran, outside
// critical sections; one load and a branch otherwise. The rest is
// slice_yield() (sched.cpp): with the shim on, this activation may have
// lost its VProc, which it may only look at inside a RuntimeSection.
void slice_yield() noexcept;
inline void maybe_yield() noexcept {
  VProc* vp = tl_vproc;  // before the switch only (vproc.hpp)
  if (!vp || !(vp->attention.load(std::memory_order_relaxed) & VProc::kAttnSlice)) [[likely]]
    return;
  slice_yield();
}

// fiber_entry() is the first function on every fiber stack.
void fiber_entry(bctx::transfer_t t) noexcept;

// complete() reports a finished fiber to its joiner (or, detached with an
// exception, aborts with a report). Runs before its stack is released.
void complete(FiberCtl* f) noexcept;
// retire() ends a finished fiber's execution reference (its stack is gone).
void retire(FiberCtl* f, FiberState from) noexcept;
// fail_unstarted() finishes a fiber that could not get a stack; f->error is set.
void fail_unstarted(FiberCtl* f) noexcept;
// set_current_vproc() records the VProc the calling activation runs.
void set_current_vproc(VProc* vp) noexcept;

// VProc::pick_local() is here, not in vproc.hpp: its slow path asks the
// RuntimeCore about held activations.
inline FiberCtl* VProc::pick_local() noexcept {
  // Revoked: go through the loop, which stands the VProc down. A held
  // activation waits for a processor: likewise, the loop hands this one
  // over, but on every other turn only (held_turn()), so the ready fibers
  // here are not starved by activations that fault again and again. Both
  // raise `attention`: one load and a branch when neither is the case.
  // relaxed: a hint; attend() reads the flags themselves.
  if (attention.load(std::memory_order_relaxed) != 0) [[unlikely]]
    if (!attend()) return nullptr;
  for (;;) {
    FiberCtl* f = nullptr;
    if (--periodic_countdown_ == 0) [[unlikely]] f = pick_periodic();
    if (!f) f = inbox.pop();
    if (!f) f = runq.pop_local();
    if (!f) return nullptr;
    if ((f = prepare(f))) return f;
  }
}

inline FiberCtl* VProc::pick_fast(FiberCtl* self, uintptr_t& tag) noexcept {
  if (attention.load(std::memory_order_relaxed) != 0 || periodic_countdown_ <= 1 || !inbox.empty()) [[unlikely]]
    return nullptr;
  FiberCtl* f = runq.rotate(self);
  if (f) {
    tag = kYieldTag | kYieldQueued;
  } else {
    f = runq.pop_local();
    if (!f) return nullptr;
    tag = kYieldTag;
  }
  --periodic_countdown_;
  return f;
}

// yield_switch() switches the yielding fiber `self` to `next` (a fiber, or
// the loop context), on VProc `vp`. No switch record: the far side
// (finish_yield) finds `self` in vp->yielded. `tag`: kYieldTag, with
// kYieldQueued if `self` is in the run queue already (RunQueue::rotate).
inline void yield_switch(VProc* vp, FiberCtl* self, FiberCtl* next, uintptr_t tag = kYieldTag) noexcept {
  self->set_state(FiberState::Running, FiberState::Ready);
  vp->current = next;
  count(vp->counters.switches);
  vp->yielded = self;
  switch_with(self, next, reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(vp) | tag));
}

// finish_yield() (context.hpp) is the far side of a yield: the fiber that
// yielded on VProc `vp` (this thread's VProc: a switch does not change
// threads) is saved; unless it is queued already, put it at the back of
// vp's queue, or in vp's inbox if it is bound (to vp), where no thief can
// take it.
inline void finish_yield(void* data, bctx::fcontext_t from) noexcept {
  static_assert(alignof(VProc) > (kYieldTag | kYieldQueued));
  const uintptr_t bits = reinterpret_cast<uintptr_t>(data);
  VProc* vp = reinterpret_cast<VProc*>(bits & ~(kYieldTag | kYieldQueued));
  FiberCtl* prev = vp->yielded;
  prev->ctx = from;
  if (bits & kYieldQueued) return;
  if (prev->home) [[unlikely]] prev->home->inbox.push(prev);
  else vp->runq.push(prev, vp->core.global);
}

}  // namespace sa::detail
