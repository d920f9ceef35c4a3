// RuntimeCore: start-up, the waker side of the idle protocol, shutdown.

#include <sa/detail/runtime_core.hpp>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <pthread.h>
#include <thread>
#include <unistd.h>

#include <sa/blocking.hpp>
#include <sa/runtime.hpp>

namespace sa::detail {

namespace {

void install_overflow_handler();

// write_str() and write_u64() write to stderr from a signal handler.
void write_str(const char* s) noexcept {
  size_t n = 0;
  while (s[n]) ++n;
  [[maybe_unused]] auto r = ::write(2, s, n);
}

void write_u64(uint64_t v) noexcept {
  char buf[24];
  int i = sizeof buf;
  buf[--i] = '\0';
  do {
    buf[--i] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v && i > 0);
  write_str(buf + i);
}

}  // namespace

RuntimeCore::RuntimeCore(const Options& options) {
  shim::Topology topo = shim::Topology::discover();
  const int n = options.vprocs > 0 ? options.vprocs : static_cast<int>(topo.cpus().size());
  vprocs_.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) vprocs_.push_back(std::make_unique<VProc>(*this, i, options.stack_size));
  auto order = topo.steal_order(n);
  for (int i = 0; i < n; ++i) vprocs_[static_cast<size_t>(i)]->steal_order = std::move(order[static_cast<size_t>(i)]);
  // A VProc steals only from the others: alone, its run queue has no thief.
  if (n == 1) vprocs_[0]->runq.set_owner_only();
  for (auto& v : vprocs_) v->activations_mode = options.shim == ShimMode::on;

  install_overflow_handler();
  shim_ = std::make_unique<shim::Shim>(shim::ShimOptions{.processors = n,
                                                          .pin = options.pin,
                                                          .cpus = topo.cpus(),
                                                          .activations = options.shim == ShimMode::on,
                                                          .max_activations = options.max_activations,
                                                          .use_perf = options.use_perf},
                                       *this);
  try {
    shim_->start();
    if (options.time_slice.count() > 0) slicer_ = std::thread([this, slice = options.time_slice] { run_slicer(slice); });
  } catch (...) {
    stop();
    shim_->stop();
    throw;
  }
}

void RuntimeCore::run_slicer(std::chrono::microseconds slice) noexcept {
  ::pthread_setname_np(::pthread_self(), "sa-slicer");
  // A VProc whose switch count did not move between two looks has run one
  // fiber (or slept in its loop) for a whole slice at least. Mark it if
  // other fibers wait that it could run: its own queues, or the global one.
  // The mark is a hint, which attend() clears without looking at anything
  // else. It carries the switch count it is for (VProc::slice_switch): a
  // mark set just after the VProc picked a new fiber, or left behind by a
  // pick that raced with it, does not cut that fiber's slice short.
  std::vector<uint64_t> seen(vprocs_.size(), ~uint64_t{0});
  std::unique_lock g(slicer_lock_);
  while (!slicer_cv_.wait_for(g, slice, [this] { return slicer_stop_; })) {
    for (size_t i = 0; i < vprocs_.size(); ++i) {
      VProc& v = *vprocs_[i];
      const uint64_t switches = v.counters.switches.load(std::memory_order_relaxed);
      const bool same = switches == seen[i];
      seen[i] = switches;
      if (same && (!v.runq.empty() || v.inbox.looks_nonempty() || !global.empty())) {
        v.slice_switch.store(switches, std::memory_order_relaxed);
        if (!(v.attention.fetch_or(VProc::kAttnSlice, std::memory_order_release) & VProc::kAttnSlice))
          count(v.slice_marks);
      }
    }
  }
}

void RuntimeCore::stop_slicer() noexcept {
  {
    std::lock_guard g(slicer_lock_);
    slicer_stop_ = true;
  }
  slicer_cv_.notify_all();
  if (slicer_.joinable()) slicer_.join();
}

RuntimeCore::~RuntimeCore() {
  VProc* vp = current_vproc();
  if (vp && &vp->core == this) {
    std::fprintf(stderr, "sa: a Runtime was destroyed by one of its own fibers (fiber %llu)\n",
                 static_cast<unsigned long long>(vp->current->id));
    std::abort();
  }
  // Detached fibers that are finishing (their last wg.done() already
  // released the main fiber) get a moment.
  for (int i = 0; i < 500 && live_fibers() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (int64_t n = live_fibers(); n > 0) {
    std::fprintf(stderr,
                 "sa: Runtime destroyed while %lld fiber(s) are still alive (parked or running); "
                 "join them, or let them return, before the Runtime goes out of scope\n",
                 static_cast<long long>(n));
    std::abort();
  }
  stop_slicer();
  stop();
  shim_->stop();
}

void RuntimeCore::processor_added(int vp) noexcept {
  set_current_vproc(&vproc(vp));
  // The loop returns when the runtime stops, when our VProc went elsewhere
  // (current VProc null), or when this activation, held, was handed another
  // VProc (current VProc changed): then run that one.
  while (VProc* v = current_vproc()) {
    v->loop();
    if (current_vproc() == v) break;
  }
  set_current_vproc(nullptr);
}

void RuntimeCore::processor_preempted(int vp, shim::Activation&) noexcept {
  // Counted (VProcStats::preemptions). sa::Spinlock does not wait for this
  // notice, which comes a sweep late: its waiters read the holder's
  // run-state word themselves (sync/include/sa/spinlock.hpp). Most notices
  // without CPU hogs are the sysmon's own wake-ups (about 900/s with two
  // busy processors: bench/results/idle-helpers-session17.md).
  vproc(vp).counters.preemptions.fetch_add(1, std::memory_order_relaxed);
}

void RuntimeCore::processor_taken(int vp, shim::Activation& a) noexcept {
  // The blocked activation keeps its fiber; remember it and its scheduler
  // context, to give it a VProc again if it is held. Nobody runs `vp` now.
  const VProc& v = vproc(vp);
  a.user_fiber = v.current;
  a.loop_context = v.loop_ctx;
}

void RuntimeCore::activation_blocked(int vp, shim::Activation&) noexcept {
  // The blocked activation keeps its fiber; everything else on the VProc
  // (queues, timers, reactor) carries on here.
  processor_added(vp);
}

void RuntimeCore::held_queued() noexcept {
  // Running VProcs notice it at their next pick (the shim counted it in
  // has_held() first: see VProc::attend()); a sleeping one comes to hand
  // itself over. (Perhaps in a signal handler: a lock-free RMW is safe.)
  for (auto& v : vprocs_) v->attention.fetch_or(VProc::kAttnHeld, std::memory_order_seq_cst);
  wake_idle();
}

void RuntimeCore::activation_held(shim::Activation& a) noexcept {
  set_current_vproc(nullptr);  // our old VProc is another activation's
  const int vp = shim_->wait_for_processor(a);
  if (vp < 0) {  // in a signal handler, perhaps: no stdio
    write_str("sa: the runtime stopped while fiber ");
    if (const auto* f = static_cast<const FiberCtl*>(a.user_fiber)) write_u64(f->id);
    write_str(" was held after a block in the kernel; it can never run again\n");
    std::abort();
  }
  VProc& v = vproc(vp);
  // Nobody else runs `v` now (its activation left it, or is blocked in a
  // call): resume our fiber on it, with our own loop context.
  v.current = static_cast<FiberCtl*>(a.user_fiber);
  v.loop_ctx = static_cast<FiberCtl*>(a.loop_context);
  // A switch like any other: among other things, it starts the fiber's
  // time slice (a mark set for the loop's count is not for it).
  count(v.counters.switches);
  set_current_vproc(&v);
}

bool RuntimeCore::hand_to_held(VProc& v) noexcept {
  shim::Activation* a = shim_->take_held(v.index);
  if (!a) return false;
  set_current_vproc(nullptr);  // we leave `v` before the held one takes it
  shim_->give_processor(*a, v.index);
  return true;
}

namespace {

thread_local FiberCtl* tl_call_fiber = nullptr;
thread_local shim::Shim* tl_call_shim = nullptr;
thread_local bool tl_call_entered = false;  // blocking_enter moved us User -> Running

// post_requeue: the fiber whose call outlived its VProc is saved; ready it
// (the calling activation has no VProc now, so it goes to the global queue).
void post_requeue(FiberCtl* prev, void*) noexcept { ready(prev); }

}  // namespace

void RuntimeCore::activation_unblocked(shim::Activation&) noexcept {
  // (Leaving here: no processor; the fiber goes back to a ready queue.)
  FiberCtl* self = tl_call_fiber;
  set_current_vproc(nullptr);  // our VProc runs on another activation now
  self->set_state(FiberState::Running, FiberState::Parked);
  SchedulerContext& loop = activation_loop_context();
  jump(self, &loop, &post_requeue, nullptr);
  // Resumed by some VProc, perhaps on another activation.
}

bool blocking_enter() noexcept {
  // A fiber in a critical section keeps its activation (runtime_core.hpp):
  // its call runs unannounced, like any foreign blocking call.
  if (tl_critical_depth > 0) return false;
  if (tl_call_depth > 0) {  // nested: the outermost call speaks for both
    ++tl_call_depth;
    return true;
  }
  VProc* vp = current_vproc();
  if (!vp || !vp->in_fiber() || !vp->core.shim().activations_mode()) return false;
  const bool entered = shim::Shim::enter_runtime();  // User -> Running (holds first if Lost)
  vp = current_vproc();                              // a hold may have moved us
  tl_call_fiber = vp->current;
  tl_call_shim = &vp->core.shim();
  tl_call_entered = entered;
  if (!tl_call_shim->enter_call()) {
    if (entered) shim::Shim::leave_runtime();
    return false;
  }
  tl_call_depth = 1;
  return true;
}

void blocking_exit(int call_errno) noexcept {
  if (--tl_call_depth > 0) return;
  // The thread-locals are this activation's: read them before exit_call(),
  // after which the fiber may be running on another activation.
  const bool entered = tl_call_entered;
  tl_call_shim->exit_call();
  if (entered) shim::Shim::leave_runtime();  // Running -> User, on whichever activation we are
  set_errno(call_errno);
}

int call_pause() noexcept {
  const int depth = tl_call_depth;
  if (depth == 0 || tl_critical_depth > 0) return 0;  // (a section inside an sa::Spinlock: the call is unannounced)
  const int e = errno;
  tl_call_depth = 1;  // end the whole announcement, nested calls too
  blocking_exit(e);
  return depth;
}

void call_resume(int depth) noexcept {
  if (depth == 0) return;
  const int e = errno;
  if (blocking_enter()) tl_call_depth = depth;
  set_errno(e);
}

void RuntimeCore::start(FiberCtl* f) noexcept {
  VProc* vp = current_vproc();
  if (VProc* home = f->home) {  // read before the push, as in ready()
    home->inbox.push(f);
    if (home != vp) wake_vproc(*home);
    return;
  }
  if (vp && &vp->core == this) vp->runq.push_next(f, global);
  else global.push(f);
  wake_idle();
}

uint64_t RuntimeCore::next_fiber_id(VProc* vp) noexcept {
  constexpr uint64_t kIdBlock = 256;
  if (!vp) return next_id_.fetch_add(1, std::memory_order_relaxed);
  if (vp->next_id == vp->id_block_end) {
    vp->next_id = next_id_.fetch_add(kIdBlock, std::memory_order_relaxed);
    vp->id_block_end = vp->next_id + kIdBlock;
  }
  return vp->next_id++;
}

void RuntimeCore::count_spawn(VProc* vp) noexcept {
  if (vp) count(vp->counters.spawns);
  else outside_spawns_.fetch_add(1, std::memory_order_relaxed);
}

void RuntimeCore::count_finish(VProc* vp) noexcept {
  // release: live_fibers() that sees this end sees the fiber's spawn.
  if (vp) {
    std::atomic<uint64_t>& c = vp->counters.finished;
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  } else {
    outside_finished_.fetch_add(1, std::memory_order_release);
  }
}

uint64_t RuntimeCore::spawned_fibers() const noexcept {
  uint64_t n = outside_spawns_.load(std::memory_order_acquire);
  for (const auto& v : vprocs_) n += v->counters.spawns.load(std::memory_order_acquire);
  return n;
}

int64_t RuntimeCore::live_fibers() const noexcept {
  // Ends first (acquire), then spawns: see the header.
  uint64_t ended = outside_finished_.load(std::memory_order_acquire);
  for (const auto& v : vprocs_) ended += v->counters.finished.load(std::memory_order_acquire);
  return static_cast<int64_t>(spawned_fibers() - ended);
}

bool RuntimeCore::claim(VProc& v) noexcept {
  uint32_t expected = static_cast<uint32_t>(IdleState::Sleeping);
  if (v.idle.load(std::memory_order_relaxed) != expected) return false;
  if (!v.idle.compare_exchange_strong(expected, static_cast<uint32_t>(IdleState::Notified), std::memory_order_seq_cst))
    return false;
  // Counted only after the claim succeeded: a count above the truth could
  // make a producer skip a wake-up (W2); one below it only costs an extra
  // wake-up. The claimed VProc decrements nsearching when it finds work.
  nsleeping.fetch_sub(1, std::memory_order_seq_cst);
  nsearching.fetch_add(1, std::memory_order_seq_cst);
  // acquire: pairs with install_poller(); the claimed VProc may sleep in it.
  shim_->wake_processor(v.index, v.idle, v.poller.load(std::memory_order_acquire));
  return true;
}

bool RuntimeCore::bound_wake_pending() noexcept {
  for (int i = 0; i < size(); ++i) {
    VProc& v = vproc(i);
    if (v.idle.load(std::memory_order_relaxed) == static_cast<uint32_t>(IdleState::Notified) &&
        v.inbox.looks_nonempty())
      return true;
  }
  return false;
}

void RuntimeCore::wake_idle() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // W1
  if (nsearching.load(std::memory_order_seq_cst) > 0) return;  // W2
  if (nsleeping.load(std::memory_order_seq_cst) <= 0) return;
  const uint32_t n = static_cast<uint32_t>(vprocs_.size());
  const uint32_t first = wake_start_.fetch_add(1, std::memory_order_relaxed);
  for (uint32_t i = 0; i < n; ++i)  // W3
    if (claim(*vprocs_[(first + i) % n])) return;
}

void RuntimeCore::wake_vproc(VProc& v) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  claim(v);
}

void RuntimeCore::revoke(int vp) noexcept {
  VProc& v = vproc(vp);
  v.revoked.store(1, std::memory_order_seq_cst);
  v.attention.fetch_or(VProc::kAttnRevoked, std::memory_order_seq_cst);  // after `revoked` (VProc::attend)
  // The running fiber learns it at its next safe point (signal + flag); an
  // idle VProc wakes to stand down.
  shim_->request_safe_point(vp);
  wake_vproc(v);
}

void RuntimeCore::restore(int vp) noexcept {
  VProc& v = vproc(vp);
  v.attention.fetch_and(~VProc::kAttnRevoked, std::memory_order_seq_cst);  // before `revoked`
  v.revoked.store(0, std::memory_order_seq_cst);
  shim_->wake_processor(vp, v.revoked, v.poller.load(std::memory_order_acquire));
}

void RuntimeCore::stop() noexcept {
  stopping_.store(true, std::memory_order_seq_cst);
  for (auto& v : vprocs_) {
    claim(*v);
    // Standing down: wake it to leave. The futex word must change too: a
    // VProc that checked stopping() just before our store is about to wait
    // while `revoked` is 1, and a wake before that wait would be lost (seen:
    // 1 shutdown in ~150 hung under load).
    uint32_t one = 1;
    if (v->revoked.compare_exchange_strong(one, 2, std::memory_order_seq_cst) || one != 0)
      shim_->wake_processor(v->index, v->revoked, v->poller.load(std::memory_order_acquire));
  }
}

// ---------------------------------------------------------------------------
// Stack overflow: a fault on a fiber's guard page is reported, on the
// activation's alternate signal stack, as "stack overflow in fiber <id>".

namespace {

// The handler ours replaced, for faults that are not ours. Each install
// publishes a fresh record (release; the handler loads it with acquire) and
// never frees the older ones, since a fault on another thread may be reading
// one; they stay linked from the newest, so nothing leaks unreachable. One
// small record per install that found our handler replaced.
struct PreviousSegv {
  struct sigaction action {};
  const PreviousSegv* older = nullptr;
};
std::atomic<const PreviousSegv*> g_previous_segv{nullptr};

void on_segv(int sig, siginfo_t* info, void* uctx) {
  VProc* vp = current_vproc();
  FiberCtl* f = vp ? vp->current : nullptr;
  if (f && f->stack.base) {
    auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
    auto guard = reinterpret_cast<uintptr_t>(f->stack.base);
    if (addr >= guard && addr < guard + StackCache::page_size()) {
      write_str("sa: stack overflow in fiber ");
      write_u64(f->id);
      write_str(" (stack of ");
      write_u64(f->stack.size - StackCache::page_size());
      write_str(" bytes; raise sa::Options::stack_size)\n");
      std::abort();
    }
  }
  // Not a guard page: hand the fault to whoever handled SIGSEGV before us,
  // once: that handler may itself hand it back to us (it was installed
  // after an earlier Runtime's handler and chains to it; we then took the
  // front again, install_overflow_handler()). A fault handed back is a call
  // nested in ours: the same signal frame (uctx), deeper on the same stack.
  // (Not a flag set while we hand on: a handler that leaves by siglongjmp,
  // as probing code does, would leave it set, and every later fault on the
  // thread would skip that handler. A later delivery has another frame, or
  // the same one at the same depth: never both the same frame and deeper.)
  struct HandingOn {
    void* uctx = nullptr;
    uintptr_t frame = 0;
  };
  static thread_local HandingOn outer;
  const auto frame = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  if (!(outer.uctx == uctx && frame < outer.frame)) {
    const HandingOn saved = outer;
    outer = HandingOn{uctx, frame};
    const PreviousSegv* record = g_previous_segv.load(std::memory_order_acquire);
    const struct sigaction* prev = record ? &record->action : nullptr;
    bool handled = false;
    if (!prev) {
      // The first install has not published its predecessor yet: default action.
    } else if (prev->sa_flags & SA_SIGINFO) {
      if (prev->sa_sigaction) {
        prev->sa_sigaction(sig, info, uctx);
        handled = true;
      }
    } else if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
      prev->sa_handler(sig);
      handled = true;
    }
    outer = saved;
    if (handled) return;
  }
  // Default action: restore it; returning re-executes the faulting access.
  signal(SIGSEGV, SIG_DFL);
}

// install_overflow_handler() runs at every Runtime's construction, not once
// per process: a handler installed after an earlier Runtime's (the
// application's, a test framework's) would otherwise take the guard-page
// faults of every later one. Ours stays first and hands other faults to it.
void install_overflow_handler() {
  static std::mutex m;
  std::lock_guard g(m);
  struct sigaction current {};
  ::sigaction(SIGSEGV, nullptr, &current);
  if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == &on_segv) return;
  struct sigaction sa {};
  sa.sa_sigaction = &on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  auto* record = new (std::nothrow) PreviousSegv{};
  if (!record) return;  // no overflow report rather than faults lost
  record->older = g_previous_segv.load(std::memory_order_relaxed);  // only installs write it, under m
  ::sigaction(SIGSEGV, &sa, &record->action);
  g_previous_segv.store(record, std::memory_order_release);
}

}  // namespace

}  // namespace sa::detail
