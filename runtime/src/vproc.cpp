// VProc: the scheduler loop, local picking, stealing and the idle protocol
// (see the design comment in vproc.hpp).

#include <sa/detail/runtime_core.hpp>

#include <pthread.h>

#include <cerrno>
#include <stdexcept>
#include <string>

namespace sa::detail {

namespace {

// How long a VProc with nothing to do searches (steals) before sleeping,
// while another VProc runs fibers (work may appear to steal) ...
constexpr int64_t kSearchNs = 20'000;
// ... and while none does: only its own completions can come, and its
// sleep wakes for those; spinning would take the CPU from other processes
// (bench/run echo's client, 1 connection: 50 µs of server CPU per request).
constexpr int64_t kSearchAloneNs = 3'000;
// How long it searches, whatever else holds, while a VProc woken for a
// bound fiber has not started yet (RuntimeCore::bound_wake_pending).
constexpr int64_t kSearchBoundWakeNs = 100'000;
// How long a searcher leaves other VProcs' `next` slots alone.
constexpr int64_t kStealNextAfterNs = 3'000;
// A searcher reads the clock every kClockEvery-th turn.
constexpr uint32_t kClockEvery = 8;

}  // namespace

__attribute__((noinline, noipa)) VProc* current_vproc() noexcept { return tl_vproc; }

__attribute__((noinline, noipa)) void set_current_vproc(VProc* vp) noexcept { tl_vproc = vp; }

__attribute__((noinline, noipa)) void set_errno(int e) noexcept { errno = e; }

Poller& install_poller(std::unique_ptr<Poller> p) {
  RuntimeSection section;
  VProc* vp = current_vproc();
  if (!vp || !vp->in_fiber()) throw std::logic_error("sa: install_poller called outside a fiber");
  if (vp->poller_owner) throw std::logic_error("sa: VProc " + std::to_string(vp->index) + " has a poller already");
  vp->poller_owner = std::move(p);
  // release: a waker that reads the pointer sees a constructed poller.
  vp->poller.store(vp->poller_owner.get(), std::memory_order_release);
  return *vp->poller_owner;
}

Poller* poller_of_current() noexcept {
  VProc* vp = current_vproc();
  return vp ? vp->poller.load(std::memory_order_relaxed) : nullptr;
}

FiberCtl* current_fiber() noexcept {
  // A Lost activation holds here first, or it would read the fiber of the
  // activation that took its VProc; and the read happens inside the section
  // (Running), where the monitor hands nothing away, not after it, when a
  // stale switch record could make us Lost again while a spare writes
  // `current` (TSan saw that).
  RuntimeSection gate;
  VProc* vp = current_vproc();
  if (!vp || !vp->in_fiber()) return nullptr;
  return vp->current;
}

VProc::VProc(RuntimeCore& c, int i, std::size_t stack_size) : core(c), index(i), stacks(stack_size, 256) {}

SchedulerContext& activation_loop_context() noexcept {
  // One scheduler context per activation (kernel thread).
  static thread_local SchedulerContext ctx;
  return ctx;
}

void VProc::loop() noexcept {
  SchedulerContext& ctx = activation_loop_context();
#if defined(SA_ASAN)
  if (!ctx.stack_bottom) {
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      void* addr = nullptr;
      std::size_t size = 0;
      pthread_attr_getstack(&attr, &addr, &size);
      ctx.stack_bottom = addr;
      ctx.stack_usable = size;
      pthread_attr_destroy(&attr);
    }
  }
#endif
#if defined(SA_TSAN)
  ctx.tsan_fiber = __tsan_get_current_fiber();
#endif
  ctx.state.store(FiberState::Running, std::memory_order_relaxed);
  loop_ctx = &ctx;
  current = &ctx;
  while (FiberCtl* f = find_runnable()) {
    current = f;
    count(counters.switches);
    jump(&ctx, f, nullptr, nullptr);
    // Back on this activation's stack; the fiber that came here ran its
    // action. If that fiber's call blocked and our VProc went to another
    // activation, we are no longer its activation: leave.
    if (current_vproc() != this) return;
  }
}

FiberCtl* VProc::first_run(FiberCtl* f) noexcept {
  // Give the fiber a stack now.
  try {
    f->stack = stacks.get();
  } catch (...) {
    f->error = std::current_exception();
    fail_unstarted(f);
    return nullptr;
  }
  const std::size_t usable = stacks.stack_size();
  f->stack_bottom = static_cast<char*>(f->stack.base) + (f->stack.size - usable);
  f->stack_usable = usable;
  f->ctx = bctx::make_fcontext(static_cast<char*>(f->stack.base) + f->stack.size, usable, &fiber_entry);
#if defined(SA_TSAN)
  f->tsan_fiber = __tsan_create_fiber(0);
#endif
  f->set_state(FiberState::New, FiberState::Running);
  return f;
}

FiberCtl* VProc::pick_periodic() noexcept {
  periodic_countdown_ = kGlobalEvery;
  if (!timers.empty()) timers.fire_expired(now_ns());
  return core.global.pop();
}

void VProc::switch_from(FiberCtl* self, PostSwitch action, void* arg, bool self_dies) noexcept {
  FiberCtl* next = pick_local();
  if (!next) next = loop_ctx;
  current = next;
  count(counters.switches);
  // To the loop: it polls first thing (poll_own), after the action too, and
  // runs what completed without waking another VProc for it.
  Poller* poll_after = next == loop_ctx ? nullptr : poller.load(std::memory_order_relaxed);
  jump(self, next, action, arg, poll_after, self_dies);
  // `this` may be another thread's VProc now: touch nothing.
}

FiberCtl* VProc::steal(bool take_next) noexcept {
  for (int v : steal_order) {
    if (FiberCtl* f = core.vproc(v).runq.steal_into(runq, take_next)) {
      count(counters.steals);
      return f;
    }
  }
  return nullptr;
}

FiberCtl* VProc::take(FiberCtl* f) noexcept {
  if (searching_) {
    searching_ = false;
    // The last searcher to find work wakes a sleeper if more work is in
    // sight (step W4 of the idle protocol).
    if (core.nsearching.fetch_sub(1, std::memory_order_seq_cst) == 1) {
      std::atomic_thread_fence(std::memory_order_seq_cst);  // the loads below come after the decrement
      if (shared_work_visible()) core.wake_idle();
    }
  }
  return prepare(f);
}

FiberCtl* VProc::find_runnable() noexcept {
  for (;;) {
    if (revoked.load(std::memory_order_acquire) && !core.stopping()) {
      stand_down();
      continue;
    }
    if (core.stopping()) {
      if (searching_) {
        searching_ = false;
        core.nsearching.fetch_sub(1, std::memory_order_seq_cst);
      }
      return nullptr;
    }
    // held_due_: pick_local() gave a held activation its turn and sent us
    // here to hand the VProc over (without it, held_turn() here would
    // take that turn back).
    const bool due = held_due_;
    held_due_ = false;
    if (core.has_held() && (due || !has_local_work() || held_turn())) {
      // A held activation waits: hand it this VProc. Stop searching first:
      // a VProc counted in nsearching while its new activation runs a fiber
      // would make producers skip wake-ups (W2).
      if (searching_) {
        searching_ = false;
        if (core.nsearching.fetch_sub(1, std::memory_order_seq_cst) == 1) core.wake_idle();
      }
      // Expired timers and completions first: the fibers they wake (a
      // pager, a fault server) may be what the held activations wait for,
      // and the held one resumes its own fiber, not this loop.
      if (!timers.empty()) timers.fire_expired(now_ns());
      if (Poller* p = poller.load(std::memory_order_relaxed)) p->poll();
      if (core.hand_to_held(*this)) return nullptr;  // we left this VProc
    }
    if (!timers.empty()) timers.fire_expired(now_ns());
    Poller* p = poller.load(std::memory_order_relaxed);
    if (p) poll_own(p);
    FiberCtl* f = inbox.pop();
    if (!f) f = runq.pop();
    if (!f) f = core.global.pop();
    if (!f) f = search(p);
    if (f) {
      if ((f = take(f))) return f;
      continue;
    }
    if (timers.next_deadline() <= now_ns()) continue;
    sleep();
  }
}

FiberCtl* VProc::search(Poller* p) noexcept {
  // Counted from the start: a searcher that finds work chains the wake-up
  // of the next sleeper (take(), W4). Counting only after a quiet 2 µs
  // (tried: it kept the count's line off the bound ping-pong's path) broke
  // that chain whenever the work was found sooner, and a sleeping VProc
  // could then miss a whole burst of work (tests: work spreads).
  if (!searching_) {
    searching_ = true;
    core.nsearching.fetch_add(1, std::memory_order_seq_cst);
  }
  const int64_t started = now_ns();
  const int64_t until = started + kSearchNs;
  bool take_next = false;
  for (uint32_t turn = 1;; ++turn) {
    if (p) poll_own(p);
    FiberCtl* f = inbox.pop();
    if (f || (f = runq.pop()) || (f = steal(take_next)) || (f = core.global.pop())) return f;
    SA_CPU_RELAX();
    // Reading the clock costs more than a turn's look at the queues (~35 ns
    // here, a vDSO read of kvm-clock; it was a tenth of the bound
    // ping_pong's profile): do it, and the checks of what ends a search, on
    // every kClockEvery-th turn only.
    if (turn % kClockEvery != 0) continue;
    const int64_t now = now_ns();
    if (timers.next_deadline() <= now || core.stopping() || core.has_held() ||
        revoked.load(std::memory_order_relaxed))
      return nullptr;
    // A VProc was woken for a bound fiber and has not run it yet. Bound
    // fibers on different VProcs usually converse: the reply to what woke
    // it comes back soon after it runs, perhaps to a fiber bound here. Were
    // we asleep by then, the reply would pay a wake-up too, and so would
    // every message after it: each side's search (kSearchAloneNs, since
    // both count as searchers while the wake-up is in flight) is shorter
    // than a wake-up (32-43 µs on the 2-vCPU VM), so once one side slept,
    // both went on sleeping by turns. The bound ping_pong slept 0.06 times
    // per round trip that way, 2.3 µs a round trip at the median, against
    // 0.0009 and 0.49 µs searching on while the wake-up is pending
    // (bench/results/ping-pong-bound-wake.md). Unbound work never waits
    // here: a searcher steals it instead of waking a sleeper for it.
    const bool bound_wake = core.bound_wake_pending();
    if (now >= (bound_wake ? started + kSearchBoundWakeNs : until)) return nullptr;
    // Nobody runs fibers (every VProc searches or sleeps): stop soon, but
    // only after turns that took from `next` slots too (take_next, set at
    // the previous look). A fiber left in a sleeping VProc's `next` slot
    // would otherwise wait there for good, and this searcher, which sees
    // it in has_work(), would never sleep: it would search and stop again
    // for ever.
    if (!bound_wake && take_next && now - started >= kSearchAloneNs &&
        core.nsleeping.load(std::memory_order_relaxed) + core.nsearching.load(std::memory_order_relaxed) >=
            core.size())
      return nullptr;
    // A fiber in another VProc's `next` slot was usually just woken by
    // the fiber running there, which is about to park: give that VProc
    // a moment to run it itself before taking it (Go's runqsteal waits
    // 3 µs too), or two fibers talking would bounce between CPUs.
    take_next = now - started >= kStealNextAfterNs;
  }
}

void VProc::stand_down() noexcept {
  if (searching_) {
    searching_ = false;
    if (core.nsearching.fetch_sub(1, std::memory_order_seq_cst) == 1) core.wake_idle();
  }
  stood_down.store(true, std::memory_order_release);
  while (revoked.load(std::memory_order_acquire) && !core.stopping()) {
    if (!timers.empty()) timers.fire_expired(now_ns());
    if (Poller* p = poller.load(std::memory_order_relaxed)) p->poll();
    // What became ready here (and what was queued) goes to the others.
    bool moved = false;
    while (FiberCtl* f = runq.pop()) {
      core.global.push(f);
      moved = true;
    }
    if (moved) core.wake_idle();
    core.shim().this_processor_is_idle(index, revoked, 1, to_time_point(timers.next_deadline()),
                                       poller.load(std::memory_order_acquire));
  }
  stood_down.store(false, std::memory_order_release);
}

void VProc::poll_own(Poller* p) noexcept {
  deferring_wakes = true;
  deferred_wakes = 0;
  p->poll();
  deferring_wakes = false;
  if (deferred_wakes > 1 || (deferred_wakes == 1 && !inbox.empty())) core.wake_idle();
}

bool VProc::attend() noexcept {
  const uint32_t bits = attention.load(std::memory_order_relaxed);
  // A pick starts the next fiber's slice (a bit set after this, for the
  // fiber before, is told apart by VProc::slice_switch).
  if (bits & kAttnSlice) attention.fetch_and(~kAttnSlice, std::memory_order_relaxed);
  // A bit is cleared with an RMW and its source read after it: the setter
  // sets its source first, so either we read it, or its fetch_or comes
  // after our fetch_and and the bit stays set.
  if (bits & kAttnRevoked) {
    if (revoked.load(std::memory_order_acquire)) return false;
    attention.fetch_and(~kAttnRevoked, std::memory_order_seq_cst);
    if (revoked.load(std::memory_order_seq_cst)) {
      attention.fetch_or(kAttnRevoked, std::memory_order_relaxed);
      return false;
    }
  }
  if (bits & kAttnHeld) {
    if (!core.has_held()) {
      attention.fetch_and(~kAttnHeld, std::memory_order_seq_cst);
      if (!core.has_held()) return true;
      attention.fetch_or(kAttnHeld, std::memory_order_relaxed);
    }
    if (held_turn()) {
      held_due_ = true;
      return false;
    }
  }
  return true;
}

bool VProc::held_turn() noexcept {
  held_turn_ = !held_turn_;
  return held_turn_;
}

bool VProc::has_local_work() const noexcept { return !inbox.empty() || !runq.empty(); }

bool VProc::shared_work_visible() const noexcept {
  if (!core.global.empty()) return true;
  for (int i = 0; i < core.size(); ++i)
    if (!core.vproc(i).runq.empty()) return true;
  return false;
}

bool VProc::has_work() const noexcept {
  if (!inbox.empty() || !runq.empty() || !core.global.empty() || core.has_held()) return true;
  if (revoked.load(std::memory_order_seq_cst)) return true;  // it must stand down, not sleep
  if (timers.next_deadline() <= now_ns()) return true;
  for (int v : steal_order)
    if (!core.vproc(v).runq.empty()) return true;
  return false;
}

void VProc::sleep() noexcept {
  // Step 1.
  idle.store(static_cast<uint32_t>(IdleState::Sleeping), std::memory_order_seq_cst);
  core.nsleeping.fetch_add(1, std::memory_order_seq_cst);
  if (searching_) {
    searching_ = false;
    core.nsearching.fetch_sub(1, std::memory_order_seq_cst);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // Steps 2 and 3.
  if (core.stopping() || has_work()) {
    end_sleep();
    return;
  }
  // Step 4.
  count(counters.idle_sleeps);
  core.shim().this_processor_is_idle(index, idle, static_cast<uint32_t>(IdleState::Sleeping),
                                     to_time_point(timers.next_deadline()), poller.load(std::memory_order_relaxed));
  end_sleep();
}

void VProc::end_sleep() noexcept {
  uint32_t expected = static_cast<uint32_t>(IdleState::Sleeping);
  if (idle.compare_exchange_strong(expected, static_cast<uint32_t>(IdleState::Awake), std::memory_order_seq_cst)) {
    core.nsleeping.fetch_sub(1, std::memory_order_seq_cst);
    return;
  }
  // A waker claimed us (W3): it took us off nsleeping and counted us among
  // the searchers.
  idle.store(static_cast<uint32_t>(IdleState::Awake), std::memory_order_relaxed);
  searching_ = true;
  count(counters.idle_wakeups);
}

}  // namespace sa::detail
