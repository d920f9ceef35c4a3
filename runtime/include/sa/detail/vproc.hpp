#pragma once
// VProc: a virtual processor. Runs the scheduler loop on its activation and
// owns a run queue, an inbox for bound fibers, a timer heap and a stack cache.
//
// Scheduler loop (VProc::loop, on the activation's own stack):
//   1. Fire expired timers; take work from the inbox, the run queue, the
//      global queue (every 61st pick first, for fairness, as Go does).
//   2. Nothing: become a *searcher* (RuntimeCore::nsearching) and steal from
//      the other VProcs, nearest first (hwloc order), for a short while.
//   3. Still nothing: go idle with the protocol below.
// A fiber that parks or yields switches straight to the next local fiber
// (no trip through the loop); only when it finds none does it switch to the
// loop's context. A bound fiber that waits while nothing else is ready here
// first spins for up to kParkSpinNs on its own wait (park_spin, waiter.hpp):
// a wake-up from another VProc in that time needs neither the inbox nor the
// loop.
//
// Idle protocol (cannot lose a wakeup; I2):
//   Sleeper (VProc v):
//     1. v.idle := Sleeping (seq_cst); nsleeping += 1; if searching, stop
//        searching (nsearching -= 1); seq_cst fence.
//     2. Final check: every queue this VProc may take from (its inbox, run
//        queue, the global queue, every other run queue, due timers, held
//        activations waiting for a processor), the stop flag and the
//        revoked flag (RuntimeCore::revoke stores it, then does W1-W3 on v).
//     3. Work found: CAS v.idle Sleeping -> Awake; if that fails a waker
//        already claimed us (step W3) and counted us as searching.
//     4. Otherwise this_processor_is_idle(v.idle == Sleeping, next timer).
//        On return, the same CAS as step 3 tells a timeout or spurious
//        return (we undo step 1 ourselves) from a wake-up (the waker did).
//   Waker (after making a fiber ready):
//     W1. Publish the fiber (queue push, release), then a seq_cst fence.
//     W2. If nsearching > 0, a searcher will find it: done. If nsleeping
//         == 0, every VProc is awake and will look: done.
//     W3. Claim a sleeper with CAS idle Sleeping -> Notified (counting it
//         in nsearching first), then wake_processor() its activation.
//   Searcher that finds work (VProc::take):
//     W4. Stop searching (nsearching -= 1); if it was the last searcher,
//         a seq_cst fence, then look at the shared queues (the global queue
//         and every run queue): if any holds a fiber, do W2-W3.
//   Either the waker's W2 loads come after the sleeper's step 1 in the
//   seq_cst order, and it sees the sleeper, or the sleeper's step 2 comes
//   after W1, and it sees the fiber. A waker that skipped the wake-up at W2
//   because a searcher existed relies on W4: either its W2 load of
//   nsearching saw that searcher before W4's decrement, and then W4's loads
//   (after the fence) see its fiber, which is in a shared queue, and wake
//   a sleeper; or it came after, saw 0, and woke one itself. Fibers for a
//   bound VProc's inbox never rely on W2: their waker wakes that VProc.
//   Go's resetspinning wakes a sleeper unconditionally at W4; looking first
//   saves a wake-up and a fruitless search per request in a server whose
//   fibers mostly wait for I/O (measured: bench/run echo, 1 connection).

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include <sa/detail/context.hpp>
#include <sa/detail/fiber_ctl.hpp>
#include <sa/detail/poller.hpp>
#include <sa/detail/run_queue.hpp>
#include <sa/detail/stack_pool.hpp>
#include <sa/detail/timer_heap.hpp>

namespace sa::detail {

class RuntimeCore;

enum class IdleState : uint32_t {
  Awake,     // running or searching for work
  Sleeping,  // parked (or about to) in this_processor_is_idle
  Notified,  // claimed by a waker; will run as a searcher
};

// Counters written only by the owning VProc; read by Runtime::stats().
struct VProcCounters {
  std::atomic<uint64_t> switches{0};
  std::atomic<uint64_t> spawns{0};
  std::atomic<uint64_t> steals{0};
  std::atomic<uint64_t> fiber_parks{0};
  std::atomic<uint64_t> fiber_wakes{0};
  std::atomic<uint64_t> spin_wakeups{0};  // park_spin() waits woken while spinning: no switch
  std::atomic<uint64_t> idle_sleeps{0};
  std::atomic<uint64_t> idle_wakeups{0};
  std::atomic<uint64_t> fibers_run{0};  // distinct dispatches from a queue
  std::atomic<uint64_t> spin_recoveries{0};  // Spinlock waits on a holder not on a CPU
  std::atomic<uint64_t> spin_donations{0};   // ... that gave the holder this CPU
  std::atomic<uint64_t> slice_yields{0};     // maybe_yield() calls that yielded: the slice ran out
  // Fibers whose code ended here (complete()); stored with release, so that
  // RuntimeCore::live_fibers() can pair it with `spawns` (see there).
  std::atomic<uint64_t> finished{0};
  // Written by the shim's monitor thread (fetch_add), not the owner.
  std::atomic<uint64_t> preemptions{0};
};

// count() adds one to a counter only its owner writes: no locked instruction.
inline void count(std::atomic<uint64_t>& c) noexcept {
  c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

// The scheduler context of an activation: its own native stack, where it
// runs a VProc's loop between fibers.
struct SchedulerContext final : FiberCtl {
  void invoke() override {}
};

class VProc {
 public:
  VProc(RuntimeCore& core, int index, std::size_t stack_size);
  VProc(const VProc&) = delete;
  VProc& operator=(const VProc&) = delete;

  // loop() runs the scheduler on the calling activation until the runtime
  // stops. Its context lives on the activation's own stack (loop_ctx).
  void loop() noexcept;

  // in_fiber() is true while a fiber (not the loop) runs here.
  bool in_fiber() const noexcept { return current != loop_ctx; }

  // pick_local() returns the next fiber to run from this VProc's own queues
  // (and, now and then, expired timers and the global queue), ready to
  // switch to (its stack prepared), or null: nothing is ready here, or the
  // VProc must go through its loop (`attention`: revoked, or a held
  // activation's turn). Never blocks. It does not poll
  // the poller: the caller may be a fiber that is parking on I/O. Inline
  // (runtime_core.hpp): every yield and park passes here.
  FiberCtl* pick_local() noexcept;
  // look_at_global_next() makes the next pick_local() the periodic one
  // (timers, then the global queue, first). Owner only.
  void look_at_global_next() noexcept { periodic_countdown_ = 1; }
  // pick_fast() is pick_local() in its common case only, for a yield of
  // `self`: nothing in `attention`, the periodic look not due, the inbox
  // empty; then the run queue's pick, or null (also when any of those does
  // not hold: the caller then uses pick_local(), which handles them). The
  // fiber is not prepared: the caller prepare()s it (a new one out of its
  // fast path: first_run() is a call). `tag` is set to the yield's
  // transfer tag: kYieldTag, with kYieldQueued when an owner-only queue
  // took `self` in the same step (RunQueue::rotate). Owner only; inline
  // (runtime_core.hpp): yield()'s fast path.
  FiberCtl* pick_fast(FiberCtl* self, uintptr_t& tag) noexcept;
  // prepare() makes ready fiber `f` Running (its stack prepared), or
  // returns null if it could not start (first_run(): no stack; it is
  // finished with the error). Inline: every switch from a queue passes here.
  FiberCtl* prepare(FiberCtl* f) noexcept {
    if (!f->ctx) [[unlikely]] {
      count(counters.fibers_run);
      return first_run(f);
    }
    count(counters.fibers_run);
    f->set_state(FiberState::Ready, FiberState::Running);
    return f;
  }

  // switch_from() switches the running fiber `self` to the next local fiber,
  // or to the scheduler loop, running `action` on the far side. Returns when
  // `self` is resumed, perhaps on another VProc.
  void switch_from(FiberCtl* self, PostSwitch action, void* arg, bool self_dies = false) noexcept;

  // poll_own() polls the poller from the loop, which runs what it readies
  // next: the first fiber readied onto our run queue wakes no sleeper (a
  // sleeper woken for it would find nothing: one wasted wake-up per I/O
  // completion otherwise); more than one, or one beside a bound fiber in
  // the inbox (which runs first), do the W1-W3 wake once. Loop only.
  void poll_own(Poller* p) noexcept;

  // has_work() is the final check of the idle protocol (step 2).
  bool has_work() const noexcept;
  // shared_work_visible() is true if the global queue or any run queue
  // (this one included) holds a fiber: work a woken sleeper could take.
  bool shared_work_visible() const noexcept;

  RuntimeCore& core;
  const int index;
  FiberCtl* current = nullptr;   // the fiber running here; loop_ctx in the loop
  FiberCtl* loop_ctx = nullptr;  // the scheduler context of the activation running us
  RunQueue runq;
  Inbox inbox;
  TimerHeap timers;
  StackCache stacks;
  // On a line of its own: every waker of a fiber bound here reads it, and
  // the owner writes the counters below at every switch.
  alignas(64) std::atomic<uint32_t> idle{static_cast<uint32_t>(IdleState::Awake)};
  std::vector<int> steal_order;
  alignas(64) VProcCounters counters;
  // Fiber ids handed out here, a block at a time from the runtime's
  // counter (a shared counter bumped by every spawn bounced its line
  // between the spawning VProcs). Owner only.
  uint64_t next_id = 0;
  uint64_t id_block_end = 0;
  // Attention: what other threads need this VProc to notice at its next
  // switch, folded into one word so that yield() and pick_local() test it
  // with one load: kAttnRevoked (revoke() sets it after `revoked`,
  // restore() clears it before), kAttnHeld (activation_held() sets it on
  // every VProc once a held activation waits; attend() clears it when none
  // does). A hint: attend() decides from `revoked` and has_held()
  // themselves, and only clears a bit with an RMW followed by a look at
  // its source, so a bit is never clear while its condition holds.
  // kAttnSlice (the time slicer, RuntimeCore::run_slicer) says that the
  // running fiber's time slice is over: maybe_yield() yields; any pick, the
  // start of the next slice, clears it.
  static constexpr uint32_t kAttnRevoked = 1;
  static constexpr uint32_t kAttnHeld = 2;
  static constexpr uint32_t kAttnSlice = 4;
  std::atomic<uint32_t> attention{0};
  // The switch count the slicer saw twice when it set kAttnSlice (written
  // before the bit, with release). A fiber picked since then sees another
  // count: the mark was not for it, and maybe_yield() does not yield.
  std::atomic<uint64_t> slice_switch{0};
  // How many times the slicer set the bit (it was clear): slices that ran
  // out while others waited. Written by the slicer only.
  std::atomic<uint64_t> slice_marks{0};
  // Processor revocation (RuntimeCore::revoke): 1 while the VProc is taken
  // away (the futex word it sleeps on then), 2 once the runtime stops while
  // it was (RuntimeCore::stop: the word changes, so its wait returns); 0
  // otherwise. stood_down is true while it runs no fibers because of it.
  std::atomic<uint32_t> revoked{0};
  // poll_own() in progress (owner only): ready() counts instead of waking.
  bool deferring_wakes = false;
  uint32_t deferred_wakes = 0;
  std::atomic<bool> stood_down{false};
  // The I/O reactor, if a fiber here installed one (poller.hpp). Written
  // once by the owner; read by wakers (acquire) to wake it when idle.
  std::atomic<Poller*> poller{nullptr};
  std::unique_ptr<Poller> poller_owner;
  // ShimMode::on (set once, before the VProcs start): yield()'s fast path
  // is for plain mode only.
  bool activations_mode = false;
  // The fiber that yielded in the switch in progress (owner only; read by
  // finish_yield() on the far side of that switch).
  FiberCtl* yielded = nullptr;

 private:
  FiberCtl* find_runnable() noexcept;
  FiberCtl* take(FiberCtl* f) noexcept;  // found work: stop searching
  [[gnu::noinline]] FiberCtl* first_run(FiberCtl* f) noexcept;
  // attend() is pick_local()'s slow path, when `attention` is not 0: false
  // if the pick must go through the loop (revoked; a held activation's
  // turn), true if it may go on. Clears the bits whose cause is gone.
  [[gnu::noinline]] bool attend() noexcept;
  // Every kGlobalEvery-th local pick looks at the global queue and the
  // timers first, so neither starves behind fibers that keep handing off
  // locally (periodic_countdown_ counts down to it: no division on the
  // switch path).
  static constexpr uint32_t kGlobalEvery = 61;
  // pick_periodic() fires expired timers and takes from the global queue:
  // what every kGlobalEvery-th local pick looks at first. Out of line, off
  // the switch path.
  [[gnu::noinline]] FiberCtl* pick_periodic() noexcept;
  FiberCtl* steal(bool take_next) noexcept;
  // search() spins looking at every queue (polling, stealing) until it
  // finds a fiber, or returns null when it should stop: after kSearchNs, or
  // kSearchAloneNs while no VProc runs fibers, or for a due timer, a held
  // activation, revocation or the stop; while a VProc woken for a bound
  // fiber has not started, after kSearchBoundWakeNs instead of either of
  // the first two. It counts itself in nsearching.
  FiberCtl* search(Poller* p) noexcept;
  void sleep() noexcept;
  void end_sleep() noexcept;
  // stand_down() is the revoked VProc's loop: it runs no fiber, hands what
  // becomes ready here (timers, I/O completions) to the global queue, and
  // sleeps until restored or stopped.
  void stand_down() noexcept;

  // held_turn() alternates between a held activation and a local ready
  // fiber when both wait: true on the held activation's turns.
  bool held_turn() noexcept;
  bool has_local_work() const noexcept;
  bool held_turn_ = false;
  bool held_due_ = false;  // attend() gave a held activation its turn: the loop hands over
  bool searching_ = false;
  uint32_t periodic_countdown_ = kGlobalEvery;
  uint32_t steal_start_ = 0;
};

// activation_loop_context() is the calling activation's scheduler context.
SchedulerContext& activation_loop_context() noexcept;

// current_vproc() is the VProc the calling kernel thread runs, or null
// outside the runtime. Not inlined: a fiber may resume on another thread, and
// a cached thread-local address would then point at the old one.
VProc* current_vproc() noexcept;
// tl_vproc is what current_vproc() returns. Read it directly only where no
// switch can come between the read and every use of the value, and the
// function does not switch before it returns either (yield()'s fast path
// reads it before its switch and uses only the switch's transfer after);
// everywhere else, call current_vproc().
inline constinit thread_local VProc* tl_vproc = nullptr;

// set_errno() sets the calling thread's errno. Out of line for the same
// reason: glibc's __errno_location() is a const function, so a caller could
// reuse the address it got before its fiber moved to another kernel thread,
// and write that thread's errno.
void set_errno(int e) noexcept;

}  // namespace sa::detail
