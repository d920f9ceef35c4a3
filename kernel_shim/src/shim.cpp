// The shim: activations, the spare pool, the handoff protocol (shim.hpp).

#include <sa/shim/shim.hpp>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <optional>
#include <sched.h>
#include <stdexcept>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sa/shim/block_monitor.hpp>

namespace sa::shim {

namespace {

void install_safe_point_handler();

int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// Whether resume_faulted may leave a faulter asleep (Resumable). Not under
// TSan: it runs an asynchronous signal's handler only at the thread's next
// intercepted call, so a Resuming activation would go on with user code (and
// fault again) before its handler took the processor it was handed. The
// signal-at-once path stays correct there: a Lost activation holds at its
// next runtime call at the latest.
#if defined(SA_TSAN)
constexpr bool kMayLeaveAsleep = false;
#else
constexpr bool kMayLeaveAsleep = true;
#endif

// Whether idle runners start unless SA_IDLE_RUNNERS says (design (i)). Not
// under TSan: a runner spins, idle class, through TSan's interceptors, and
// one preempted inside TSan's own locks stalls every normal thread that
// needs them until its CPU idles (an I1 sampler got 10 samples in 300 ms
// instead of 150-320). The runner tests turn them on (SA_IDLE_RUNNERS=1).
#if defined(SA_TSAN)
constexpr bool kRunnersByDefault = false;
#else
constexpr bool kRunnersByDefault = true;
#endif

}  // namespace

uint64_t LatencyHistogram::count() const noexcept {
  uint64_t n = 0;
  for (uint64_t b : buckets) n += b;
  return n;
}

double LatencyHistogram::percentile(double p) const noexcept {
  const uint64_t n = count();
  if (n == 0) return 0;
  const double want = p / 100.0 * static_cast<double>(n);
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets[i];
    if (static_cast<double>(seen) >= want) return static_cast<double>(1ULL << i);
  }
  return static_cast<double>(1ULL << (kBuckets - 1));
}

Shim::Shim(ShimOptions options, UpcallHandler& handler) : options_(std::move(options)), handler_(handler) {
  if (options_.processors <= 0) throw std::invalid_argument("sa::shim::Shim: processors must be > 0");
  if (options_.max_activations <= 0) options_.max_activations = 4 * options_.processors + 8;
  if (options_.max_activations < options_.processors) options_.max_activations = options_.processors;
  if (options_.spares < 0) options_.spares = 0;
  slots_ = std::make_unique<std::atomic<Activation*>[]>(static_cast<size_t>(options_.max_activations));
}

Shim::~Shim() { stop(); }

int Shim::cpu_of(int vp) const noexcept {
  if (!options_.pin || options_.cpus.empty()) return -1;
  return options_.cpus[static_cast<size_t>(vp) % options_.cpus.size()];
}

Activation* Shim::start_activation(uint32_t job) {
  const int id = static_cast<int>(all_.size());
  all_.push_back(std::make_unique<Activation>(id, [this, job](Activation& a) {
    a.shim = this;
    a.job.store(job, std::memory_order_relaxed);
    run(a);
  }));
  int n = static_cast<int>(all_.size());
  // release: the activation object before a runner reads it.
  slots_[static_cast<size_t>(id)].store(all_.back().get(), std::memory_order_release);
  n_slots_.store(n, std::memory_order_release);
  int hw = high_water_.load(std::memory_order_relaxed);
  while (n > hw && !high_water_.compare_exchange_weak(hw, n, std::memory_order_relaxed)) {
  }
  return all_.back().get();
}

void Shim::start() {
  PoolLock g(lock_);
  install_safe_point_handler();
  if (options_.activations) {
    install_hold_handler();
    const char* sweep_only = std::getenv("SA_MONITOR_SWEEP_ONLY");  // the sweep's test: no runners
    const char* runners = std::getenv("SA_IDLE_RUNNERS");
    const bool wanted = runners && runners[0] ? runners[0] == '1' : kRunnersByDefault;
    runners_on_ = options_.idle_runners && options_.use_perf && cpu_of(0) >= 0 &&
                  !(sweep_only && sweep_only[0] == '1') && wanted;
    live_by_vp_ = std::make_unique<std::atomic<bool>[]>(static_cast<size_t>(options_.processors));
    for (int vp = 0; vp < options_.processors; ++vp)
      live_by_vp_[static_cast<size_t>(vp)].store(!runners_on_, std::memory_order_relaxed);
    monitor_ = std::make_unique<BlockMonitor>(*this, options_.use_perf);
    if (runners_on_) start_runners();
  }
  for (int vp = 0; vp < options_.processors; ++vp) start_activation(make_job(kAdded, vp));
  if (options_.activations)
    for (int i = 0; i < options_.spares && static_cast<int>(all_.size()) < options_.max_activations; ++i)
      start_activation(kNone);
}

void Shim::stop() noexcept {
  stopping_.store(true, std::memory_order_seq_cst);
  stop_runners();  // they may be in a handoff, which needs the activations
  {
    PoolLock g(lock_);
    for (auto& a : all_) {
      a->job.store(kExit, std::memory_order_release);
      // One asleep in a resolved fault sleeps on no futex: its handler
      // finds the exit.
      if (a->try_state(ActivationState::Resumable, ActivationState::Resuming))
        ::syscall(SYS_tgkill, ::getpid(), a->tid(), kHoldSignal());
      else
        futex_wake(a->job, 1);
    }
  }
  // Join outside the lock: exiting activations detach from the monitor.
  for (size_t i = 0;; ++i) {
    Activation* a = nullptr;
    {
      PoolLock g(lock_);
      if (i >= all_.size()) break;
      a = all_[i].get();
    }
    a->join();
  }
  monitor_.reset();
  PoolLock g(lock_);
  n_slots_.store(0, std::memory_order_relaxed);
  for (auto& r : runners_) r->reserve.store(nullptr, std::memory_order_relaxed);
  all_.clear();
  spares_ = nullptr;
  std::lock_guard h(held_lock_);
  held_incoming_.store(nullptr, std::memory_order_relaxed);
  held_head_ = nullptr;
}

void Shim::run(Activation& a) noexcept {
  if (monitor_) monitor_->attach(a);
  if (options_.activations && options_.use_perf) a.watch_run_state();
  ActivationState state = ActivationState::Starting;
  for (;;) {
    uint32_t job;
    // acquire: see takes_over / blocked_at_ns written before the job.
    while ((job = a.job.exchange(kNone, std::memory_order_acquire)) == kNone) {
      if (stopping_.load(std::memory_order_seq_cst)) {
        job = kExit;
        break;
      }
      if (state == ActivationState::Starting) {
        a.set_state(ActivationState::Starting, ActivationState::Spare);
        state = ActivationState::Spare;
        return_spare(a);
        // Only a spare started for growth is counted in starting_ (the
        // ones start() makes are not): decrement without going below 0.
        int n = starting_.load(std::memory_order_relaxed);
        while (n > 0 && !starting_.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
        }
        if (n > 0 && monitor_) monitor_->call_started();  // a handoff may be waiting for us
      }
      a.set_stream(false);
      futex_wait(a.job, kNone);
    }
    if (kind_of(job) == kExit) break;
    const int vp = vp_of(job);
    // Paused while it waited; live while it runs `vp`, unless `vp`'s idle
    // runner watches it.
    a.set_stream(stream_live_for(vp));
    a.vproc.store(vp, std::memory_order_relaxed);  // before Running: observers of a Running one read it
    a.new_epoch(state, ActivationState::Running);
    arm_runner(vp);
    if (monitor_) monitor_->activity();
    a.pin(cpu_of(vp));
    if (kind_of(job) == kAdded) {
      n_added_.fetch_add(1, std::memory_order_relaxed);
      handler_.processor_added(vp);
    } else {
      // A runner's handoff left the Lost one's stream and signal to us, at
      // normal class (design (i) in shim.hpp).
      if (a.takes_over_lost_word != 0) lost_handed_off(*a.takes_over, a.takes_over_lost_word, a.takes_over_signalled);
      n_blocked_.fetch_add(1, std::memory_order_relaxed);
      record_handoff(a.blocked_at_ns, a.takes_over_call);
      handler_.activation_blocked(vp, *a.takes_over);
    }
    // The upcall returned: the runtime stopped, or the processor moved on.
    if (!a.try_state(ActivationState::Leaving, ActivationState::Spare))
      a.set_state(ActivationState::Running, ActivationState::Spare);
    state = ActivationState::Spare;
    if (stopping_.load(std::memory_order_seq_cst)) break;
    return_spare(a);
  }
  if (monitor_) monitor_->detach(a);
}

Activation* Shim::take_spare(int cpu) noexcept {
  PoolLock g(lock_);
  // The pool is short (at most max_activations): look for one that needs
  // no re-pin, else take the top.
  Activation** link = &spares_;
  for (Activation** l = &spares_; cpu >= 0 && *l; l = &(*l)->next_spare)
    if ((*l)->pinned_cpu() == cpu) {
      link = l;
      break;
    }
  Activation* s = *link;
  if (s) {
    *link = s->next_spare;
    s->next_spare = nullptr;
    return s;
  }
  // The list is dry: a runner's reserve, preferably on `cpu`.
  for (int pass = 0; pass < 2 && !s; ++pass)
    for (auto& r : runners_)
      if ((pass == 1 || r->cpu == cpu) && (s = r->reserve.exchange(nullptr, std::memory_order_acq_rel))) break;
  return s;
}

void Shim::return_spare(Activation& a) noexcept {
  PoolLock g(lock_);
  // Its CPU's runner's reserve first, if empty (one never pinned: any).
  for (auto& r : runners_) {
    Activation* empty = nullptr;
    if ((r->cpu == a.pinned_cpu() || a.pinned_cpu() < 0) &&
        r->reserve.compare_exchange_strong(empty, &a, std::memory_order_acq_rel))
      return;
  }
  a.next_spare = spares_;
  spares_ = &a;
}

Activation* Shim::take_reserve(int vp) noexcept {
  Runner* r = runner_of_vp_[static_cast<size_t>(vp)];
  // acquire: the spare's fields as its filler left them.
  return r ? r->reserve.exchange(nullptr, std::memory_order_acq_rel) : nullptr;
}

bool Shim::put_back_reserve(int vp, Activation& s) noexcept {
  Runner* r = runner_of_vp_[static_cast<size_t>(vp)];
  Activation* empty = nullptr;
  return r && r->reserve.compare_exchange_strong(empty, &s, std::memory_order_acq_rel);
}

void Shim::fill_reserves() noexcept {
  for (auto& r : runners_) {
    if (!spares_) return;
    if (r->reserve.load(std::memory_order_relaxed)) continue;
    Activation** link = &spares_;
    for (Activation** l = &spares_; *l; l = &(*l)->next_spare)
      if ((*l)->pinned_cpu() == r->cpu) {
        link = l;
        break;
      }
    // Off the list before it is published: the runner may take it at once.
    Activation* s = *link;
    *link = s->next_spare;
    s->next_spare = nullptr;
    Activation* empty = nullptr;
    if (!r->reserve.compare_exchange_strong(empty, s, std::memory_order_acq_rel)) {
      // The runner put one back meanwhile: `s` goes back where it was.
      s->next_spare = *link;
      *link = s;
    }
  }
}

bool Shim::handoff(Activation& a, int64_t blocked_at_ns, HandoffBy by) noexcept {
  // acquire/release: one handoff of `a` at a time, each seeing the last
  // one's writes (taken_recorded, signalled). The other caller is already
  // on it: nothing to do here.
  uint8_t holder = 0;
  if (!a.in_handoff.compare_exchange_strong(holder, static_cast<uint8_t>(1 + static_cast<int>(by)),
                                            std::memory_order_acquire, std::memory_order_relaxed)) {
    // A runner on it still, when the sysmon comes for a block it left for
    // kRunnerGraceNs: preempted in the middle and starved (boost_runner).
    if (by == HandoffBy::sysmon && holder == 1 + static_cast<int>(HandoffBy::runner))
      boost_runner(a.vproc.load(std::memory_order_relaxed));
    return true;
  }
  Activation* taker = nullptr;
  const bool done = handoff_locked(a, blocked_at_ns, by, taker);
  a.in_handoff.store(0, std::memory_order_release);
  // Wake the taker only now: a caller of the idle class (a runner, the
  // monitor) is preempted at once by the spare it wakes on its own CPU, and
  // must not hold `in_handoff` meanwhile (another block of `a` would be
  // skipped as "on it" until that CPU next idles).
  if (taker) {
    futex_wake(taker->job, 1);
    // Keep one spare ready for the next block, off the critical path; a
    // runner leaves it to the sysmon (restock()): it would take the pool
    // lock in whatever scrap of CPU it gets next.
    if (by != HandoffBy::runner) restock();
  }
  return done;
}

bool Shim::handoff_locked(Activation& a, int64_t blocked_at_ns, HandoffBy by, Activation*& taker) noexcept {
  // The state word, then the processor, read once, before the CAS (after
  // it, `a` may be held and handed another processor): the CAS is on the
  // whole word, so it fails if `a` came to own another processor since,
  // even in the same state (an ownership epoch: activation.hpp).
  const uint32_t seen = a.state_word();
  const ActivationState from = Activation::state_of(seen);
  const bool from_monitor = by != HandoffBy::fault_server;
  if (stopping_.load(std::memory_order_seq_cst) ||
      (from != ActivationState::InCall && from != ActivationState::User) ||
      (!from_monitor && from != ActivationState::User))
    return true;
  const int vp = a.vproc.load(std::memory_order_relaxed);
  // A runner (idle class) takes no lock: a scrap of CPU that ended while it
  // held one would stall every other user of it (VProcs taking held
  // activations, activations going back to the pool, the sysmon) until its
  // CPU idles again. It pops its reserve; without one (two blocks on its
  // CPU within a sweep, or the pool ran dry) it does the rest lifted to
  // normal class.
  std::optional<NormalClassWhileRunner> normal;
  Activation* s = by == HandoffBy::runner ? take_reserve(vp) : nullptr;
  if (!s) {
    normal.emplace(by);
    s = take_spare(cpu_of(vp));
  }
  // give_back() returns an unused spare: to the reserve it came from, or
  // (normal class) to the pool.
  auto give_back = [&](Activation& spare) {
    if (by == HandoffBy::runner && !normal && put_back_reserve(vp, spare)) return;
    if (!normal) normal.emplace(by);
    return_spare(spare);
  };
  if (!s && from == ActivationState::InCall && from_monitor) {
    // A held activation is as good a taker as a spare. It leaves the queue
    // only once `a` is ours: a VProc that saw it queued must not go idle on
    // an empty queue meanwhile.
    std::unique_lock g(held_lock_);
    if (Activation* h = held_front()) {
      if (!a.try_word(seen, ActivationState::Blocked)) return true;
      n_handoffs_by_[static_cast<int>(by)].fetch_add(1, std::memory_order_relaxed);
      pop_held();
      g.unlock();
      handler_.processor_taken(vp, a);
      give_processor(*h, vp);
      return true;
    }
  }
  if (!s) {
    PoolLock g(lock_);
    if (stopping_.load(std::memory_order_seq_cst)) return true;
    if (static_cast<int>(all_.size()) < options_.max_activations) {
      // Grow the pool; the new activation announces itself by joining it.
      if (starting_.load(std::memory_order_relaxed) == 0) {
        try {
          starting_.fetch_add(1, std::memory_order_relaxed);
          start_activation(kNone);
        } catch (...) {
          starting_.fetch_sub(1, std::memory_order_relaxed);
        }
      }
      return false;
    }
    if (!a.exhausted_counted.exchange(true, std::memory_order_relaxed)) {
      n_exhausted_.fetch_add(1, std::memory_order_relaxed);
    }
    if (!warned_exhausted_.exchange(true))
      std::fprintf(stderr,
                   "sa: all %d activations are in use; a blocked call keeps its processor "
                   "(raise the activation limit)\n",
                   options_.max_activations);
    // A blocked announced call is retried while it stays blocked: a held
    // activation may come to take its processor. An unannounced block is
    // not: the activation may be running again by then.
    return from != ActivationState::InCall;
  }
  const ActivationState to = from == ActivationState::InCall ? ActivationState::Blocked : ActivationState::Lost;
  const bool was_signalled = a.signalled.load(std::memory_order_relaxed);
  // A runner saw the block in the run-state word: look once more, just
  // before the CAS, that it is the same block (not a later one of the same
  // ownership; the epoch covers another one). Cheaper than a handoff that
  // a stale look would start.
  int64_t still = 0;
  if (by == HandoffBy::runner && (a.cpu_state(&still) != CpuState::Sleeping || still != blocked_at_ns)) {
    give_back(*s);
    return true;
  }
  a.taken_recorded.store(false, std::memory_order_relaxed);
  if (!a.try_word(seen, to)) {
    a.taken_recorded.store(true, std::memory_order_release);
    give_back(*s);  // it moved on first (returned, entered the runtime): nothing to do
    return true;
  }
  // Ours now: a concurrent handoff's CAS failed. Reset the Lost bookkeeping
  // only after the CAS, so a loser cannot clear what the winner set.
  n_handoffs_by_[static_cast<int>(by)].fetch_add(1, std::memory_order_relaxed);
  a.woke_at_ns.store(0, std::memory_order_relaxed);
  a.exhausted_counted.store(false, std::memory_order_relaxed);
  handler_.processor_taken(vp, a);
  // release: what processor_taken recorded, before a held `a` reads it.
  a.taken_recorded.store(true, std::memory_order_release);
  s->takes_over_lost_word = 0;
  if (to == ActivationState::Lost) {
    const uint32_t lost_word = (seen & ~0xffu) | static_cast<uint32_t>(ActivationState::Lost);
    if (by == HandoffBy::runner && !normal) {
      // The stream's lock and ioctl are the taker's, at normal class.
      s->takes_over_lost_word = lost_word;
      s->takes_over_signalled = was_signalled;
    } else {
      lost_handed_off(a, lost_word, was_signalled);
    }
  }
  s->takes_over = &a;
  s->blocked_at_ns = blocked_at_ns;
  s->takes_over_call = to == ActivationState::Blocked;
  // release: takes_over and blocked_at_ns before the job.
  s->job.store(make_job(kTakeOver, vp), std::memory_order_release);
  taker = s;  // handoff() wakes it
  return true;
}

void Shim::lost_handed_off(Activation& a, uint32_t lost_word, bool was_signalled) noexcept {
  // Its switch-in must wake the monitor (step 6), even where a runner
  // watched it with its stream paused. A wake-up before the stream is live
  // shows in the run-state word below.
  sync_stream(a);
  if (a.state_word() != lost_word) return;  // held already (a signal, or the sysmon's)
  // `signalled` is cleared when an activation holds, so set before the
  // handoff it means a signal came while `a` was still User
  // (resume_faulted) and did nothing. Then, or if `a` runs already (a stale
  // record), nobody else will signal it: do it now. Otherwise the monitor
  // (switch-in record) or resume_faulted signals it when it wakes.
  if (was_signalled || a.cpu_state() == CpuState::Running) {
    a.signalled.store(true, std::memory_order_relaxed);
    ::syscall(SYS_tgkill, ::getpid(), a.tid(), kHoldSignal());
  } else {
    a.signalled.store(false, std::memory_order_relaxed);
  }
}

void Shim::restock() noexcept {
  PoolLock g(lock_);
  fill_reserves();
  // (stop() sets stopping_ before it joins; under the lock, no activation
  // starts after its join loop has read all_.)
  if (!stopping_.load(std::memory_order_seq_cst) && !spares_ && starting_.load(std::memory_order_relaxed) == 0 &&
      static_cast<int>(all_.size()) < options_.max_activations) {
    try {
      starting_.fetch_add(1, std::memory_order_relaxed);
      start_activation(kNone);
    } catch (...) {
      starting_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
}

namespace {

void record(std::atomic<uint64_t>* buckets, int64_t since_ns) noexcept {
  int64_t us = (now_ns() - since_ns) / 1000;
  int bucket = 0;
  while (bucket < LatencyHistogram::kBuckets - 1 && us >= (int64_t{1} << bucket)) ++bucket;
  buckets[bucket].fetch_add(1, std::memory_order_relaxed);
}

void on_hold_signal(int) {
  const int saved = errno;  // the interrupted code may be about to read it
  Activation* a = Activation::current();
  if (a && must_hold(a->state()) && a->shim->hold(*a)) {
    a->set_state(ActivationState::Held, ActivationState::User);
    a->shim->arm_runner(a->vproc.load(std::memory_order_relaxed));
  } else if (a)
    a->signalled.store(false, std::memory_order_relaxed);  // nothing to hold for (handoff reads it)
  errno = saved;
}

void on_safe_point_signal(int) {
  if (Activation* a = Activation::current()) a->safepoint_requested.store(true, std::memory_order_relaxed);
}

}  // namespace

int Shim::kSafePointSignal() noexcept { return SIGRTMIN + 8; }

void Shim::request_safe_point(int vp) noexcept {
  PoolLock g(lock_);
  for (const auto& a : all_) {
    const ActivationState st = a->state();
    if (a->vproc.load(std::memory_order_relaxed) != vp || a->tid() == 0) continue;
    if (st == ActivationState::Running || st == ActivationState::User || st == ActivationState::InCall ||
        st == ActivationState::Idle)
      ::syscall(SYS_tgkill, ::getpid(), a->tid(), kSafePointSignal());
  }
}

namespace {

void install_safe_point_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = &on_safe_point_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    ::sigaction(Shim::kSafePointSignal(), &sa, nullptr);
  });
}

}  // namespace

void Shim::install_hold_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = &on_hold_signal;
    // No SA_ONSTACK: a held activation parks in the handler, on its fiber's
    // stack, not on the per-thread alternate stack. SA_RESTART: the code we
    // interrupt does not see EINTR.
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    ::sigaction(kHoldSignal(), &sa, nullptr);
  });
}

int Shim::kHoldSignal() noexcept { return SIGRTMIN + 7; }

void Shim::record_handoff(int64_t blocked_at_ns, bool call) noexcept {
  record(handoff_buckets_, blocked_at_ns);
  record(call ? call_buckets_ : detected_buckets_, blocked_at_ns);
}

void Shim::preempted(Activation& a) noexcept {
  const ActivationState st = a.state();
  // The record may be read long after it was written (the monitor runs on
  // idle CPUs only): an activation that has gone Idle since still owns its
  // processor, and was preempted while it ran it.
  if (st != ActivationState::Running && st != ActivationState::User && st != ActivationState::InCall &&
      st != ActivationState::Idle)
    return;
  // A spare that just left the pool is Running before its first job's
  // processor is stored (and the record may predate it): no processor yet.
  const int vp = a.vproc.load(std::memory_order_relaxed);
  if (vp < 0 || vp >= options_.processors) return;
  n_preempted_.fetch_add(1, std::memory_order_relaxed);
  handler_.processor_preempted(vp, a);
}

// Shim::enter_runtime() and Shim::to_user() are inline (shim.hpp): every
// runtime call a fiber makes passes there.

void Shim::leave_runtime() noexcept {
  Activation* a = Activation::current();
  a->shim->check_stream(*a);  // in Running: never handed off meanwhile
  a->set_state(ActivationState::Running, ActivationState::User);
}

void Shim::sync_stream(Activation& a) noexcept {
  a.stream_locked([&] {
    const ActivationState st = a.state();
    if (must_hold(st))
      a.apply_stream(true);
    else if (st == ActivationState::Running || st == ActivationState::User || st == ActivationState::InCall)
      a.apply_stream(stream_live_for(a.vproc.load(std::memory_order_relaxed)));
  });
}

void Shim::set_cpu_contended(int cpu, bool contended) noexcept {
  if (!runners_on_) return;
  if (contended) n_contended_.fetch_add(1, std::memory_order_relaxed);
  for (int vp = 0; vp < options_.processors; ++vp)
    if (cpu_of(vp) == cpu) live_by_vp_[static_cast<size_t>(vp)].store(contended, std::memory_order_relaxed);
  {
    PoolLock g(lock_);
    for (const auto& a : all_)
      if (cpu_of(a->vproc.load(std::memory_order_relaxed)) == cpu) sync_stream(*a);
  }
  // Back from a contended spell: the runner may sleep with its processors busy.
  if (!contended)
    for (int vp = 0; vp < options_.processors; ++vp)
      if (cpu_of(vp) == cpu) arm_runner(vp);
}

bool Shim::hold(Activation& a) noexcept {
  for (;;) {
    const ActivationState s = a.state();
    if (s == ActivationState::Resumable || s == ActivationState::Resuming) {
      // Queued already by resume_faulted. Resuming: a processor is ours and
      // its signal woke us. Resumable: we woke by ourselves first (the
      // monitor signalled us, or we entered the runtime): the held window
      // ran from that wake-up.
      if (!a.try_state(s, ActivationState::Held)) continue;  // the giver made it Resuming
      a.signalled.store(false, std::memory_order_relaxed);
      if (int64_t woke = a.woke_at_ns.load(std::memory_order_relaxed); woke && s == ActivationState::Resumable)
        record(held_buckets_, woke);
      handler_.activation_held(a);
      return true;
    }
    if (s != ActivationState::Lost) return false;
    if (a.try_state(ActivationState::Lost, ActivationState::Held)) break;
  }
  a.signalled.store(false, std::memory_order_relaxed);  // consumed (handoff reads it)
  n_held_.fetch_add(1, std::memory_order_relaxed);
  if (int64_t woke = a.woke_at_ns.load(std::memory_order_relaxed)) record(held_buckets_, woke);
  push_held(a);
  handler_.activation_held(a);
  return true;
}

void Shim::push_held(Activation& a) noexcept {
  // release: our link before the push is seen (held_front's acquire).
  Activation* top = held_incoming_.load(std::memory_order_relaxed);
  do a.next_held = top;
  while (!held_incoming_.compare_exchange_weak(top, &a, std::memory_order_release, std::memory_order_relaxed));
  n_waiting_held_.fetch_add(1, std::memory_order_seq_cst);
  if (monitor_) monitor_->call_started();  // it may give `a` a blocked activation's processor
  handler_.held_queued();
}

Activation* Shim::find(int tid) const noexcept {
  PoolLock g(lock_);
  for (const auto& a : all_)
    if (a->tid() == tid) return a.get();
  return nullptr;
}

bool Shim::fault_seen(int tid, int64_t at_ns) noexcept {
  if (!options_.activations || tid <= 0) return false;
  const Section section;  // a pager's fiber must not be held in a handoff
  Activation* a = find(tid);
  if (!a || a->state() != ActivationState::User || a->cpu_state() != CpuState::Sleeping) return false;
  // The same path as the monitor's (they may race: one CAS User -> Lost
  // wins, the other gives its spare back).
  // handoff() returns true also when the monitor is on it: report only ours.
  return handoff(*a, at_ns, HandoffBy::fault_server) && a->state() == ActivationState::Lost;
}

Shim::FaultResume Shim::resume_faulted(int tid, const FaultPage* page) noexcept {
  if (!options_.activations || tid <= 0) return FaultResume::not_ours;
  const Section section;  // (the pager's fiber is not handed off meanwhile)
  Activation* a = find(tid);
  if (!a) return FaultResume::not_ours;
  // Asleep as far as the kernel's last record says. If it wakes by itself
  // after this look, it runs while Resumable: the monitor sees its
  // switch-in record and signals it, as for a Lost one.
  if (kMayLeaveAsleep && page && a->state() == ActivationState::Lost && a->cpu_state() == CpuState::Sleeping &&
      a->try_state(ActivationState::Lost, ActivationState::Resumable)) {
    // (Published by the queue push's release, read after it.)
    a->fault_uffd.store(page->uffd, std::memory_order_relaxed);
    a->fault_addr.store(page->addr, std::memory_order_relaxed);
    a->fault_len.store(page->len, std::memory_order_relaxed);
    n_held_.fetch_add(1, std::memory_order_relaxed);
    n_held_asleep_.fetch_add(1, std::memory_order_relaxed);
    push_held(*a);
    return FaultResume::queued;
  }
  // The held window is measured from here: the resolved fault runs no
  // user instruction before the handler holds it.
  a->woke_at_ns.store(now_ns(), std::memory_order_relaxed);
  // The monitor need not signal it again; not Lost yet, a handoff that
  // makes it Lost after this sees the flag and signals it (handoff).
  a->signalled.store(true, std::memory_order_relaxed);
  ::syscall(SYS_tgkill, ::getpid(), tid, kHoldSignal());
  return FaultResume::signalled;
}

void Shim::wake_resuming(Activation& a) noexcept {
  const int uffd = a.fault_uffd.load(std::memory_order_relaxed);
  if (a.state() != ActivationState::Resuming || uffd < 0) return;
  uffdio_range r{.start = reinterpret_cast<uint64_t>(a.fault_addr.load(std::memory_order_relaxed)),
                 .len = a.fault_len.load(std::memory_order_relaxed)};
  // If the region is gone, its uffd was closed, which woke every sleeper
  // on it; the call then fails (EBADF, ENOTTY) with nothing left to wake.
  // (Only a region destroyed while its fibers still touch it, which
  // paged_region.hpp forbids, lets the number name another file by then.)
  if (::ioctl(uffd, UFFDIO_WAKE, &r) == 0) n_resume_rewakes_.fetch_add(1, std::memory_order_relaxed);
}

bool Shim::donate(Activation& holder) noexcept {
  Activation* self = Activation::current();
  if (!options_.activations || !self || self == &holder) return false;
  const int cpu = cpu_of(self->vproc.load(std::memory_order_relaxed));
  if (cpu < 0 || cpu_of(holder.vproc.load(std::memory_order_relaxed)) < 0) return false;
  // seq_cst: the flag is set before the holder's unlock can look for it
  // (the holder's unlock exchange and its load of `donated` are seq_cst).
  holder.donated.store(true, std::memory_order_seq_cst);
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  // Moving a runnable thread off its CPU migrates it at once; failure (it
  // exited, a cpuset forbids the CPU) leaves it where it was. Either way its
  // own next pin() must not trust what it set last.
  holder.forget_pin();
  if (::sched_setaffinity(holder.tid(), sizeof set, &set) != 0) {
    end_donation(holder);
    return false;
  }
  // The holder may have unlocked and re-pinned itself between our store and
  // our sched_setaffinity: then the flag is gone and the pin above is ours
  // to undo.
  if (!holder.donated.load(std::memory_order_seq_cst)) pin_home(holder);
  n_donations_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Shim::end_donation(Activation& a) noexcept {
  if (a.donated.exchange(false, std::memory_order_seq_cst)) pin_home(a);
}

void Shim::pin_home(Activation& a) noexcept {
  // From another thread, `a` may move to another processor meanwhile (it
  // unlocks, blocks, is held and handed processor j, and pins itself to j's
  // CPU): a pin computed from the processor it had would then undo that.
  // So look again after the pin, and pin again if it moved.
  for (int vp = a.vproc.load(std::memory_order_seq_cst);;) {
    const int cpu = vp < 0 ? -1 : cpu_of(vp);
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ::sched_setaffinity(a.tid(), sizeof set, &set);
    a.forget_pin();  // a pin() of its own may have raced with ours
    const int now = a.vproc.load(std::memory_order_seq_cst);
    if (now == vp) return;
    vp = now;
  }
}

Activation* Shim::take_held(int vp) noexcept {
  // A held activation pinned elsewhere costs its taker a sched_setaffinity
  // and a switch to the migration thread: with 64 fibers faulting on 2
  // CPUs, about 9% of the CPU time when the longest-held always went first.
  constexpr int kLookahead = 4;
  constexpr int kMaxPassOver = 2;
  if (!has_held()) return nullptr;
  std::lock_guard g(held_lock_);
  Activation* head = held_front();
  if (!head) return nullptr;
  const int cpu = cpu_of(vp);
  if (cpu >= 0 && head->pinned_cpu() != cpu && head->held_passed_over < kMaxPassOver) {
    Activation* prev = head;
    for (int i = 1; i < kLookahead && prev->next_held; ++i, prev = prev->next_held) {
      Activation* a = prev->next_held;
      if (a->pinned_cpu() != cpu) continue;
      prev->next_held = a->next_held;
      a->next_held = nullptr;
      a->held_passed_over = 0;
      ++head->held_passed_over;
      n_waiting_held_.fetch_sub(1, std::memory_order_seq_cst);
      return a;
    }
  }
  pop_held();
  head->held_passed_over = 0;
  return head;
}

Activation* Shim::held_front() noexcept {
  if (!held_head_) {
    // Every pushed activation is newer than the FIFO's, which is empty:
    // the stack, reversed (it is newest first), is the FIFO. acquire: the
    // pushers' links.
    Activation* fifo = nullptr;
    for (Activation* a = held_incoming_.exchange(nullptr, std::memory_order_acquire); a;) {
      Activation* next = a->next_held;
      a->next_held = fifo;
      fifo = a;
      a = next;
    }
    held_head_ = fifo;
  }
  return held_head_;
}

void Shim::pop_held() noexcept {
  Activation* a = held_head_;
  held_head_ = a->next_held;
  a->next_held = nullptr;
  n_waiting_held_.fetch_sub(1, std::memory_order_seq_cst);
}

int Shim::wait_for_processor(Activation& a) noexcept {
  for (;;) {
    // acquire: see what the handing activation did to the processor.
    uint32_t job = a.job.exchange(kNone, std::memory_order_acquire);
    if (kind_of(job) == kExit) return -1;
    if (kind_of(job) == kResume) {
      // acquire: pairs with handoff's release after processor_taken. The
      // handing thread may be a runner preempted on our own old CPU, which
      // sched_yield() would not give it (SCHED_IDLE): sleep after a while.
      for (int looks = 0; !a.taken_recorded.load(std::memory_order_acquire); ++looks) {
        if (looks < 64) {
          ::sched_yield();
        } else {
          const timespec pause{0, 20'000};
          ::nanosleep(&pause, nullptr);
        }
      }
      const int vp = vp_of(job);
      a.set_stream(stream_live_for(vp));  // (Held: never must_hold() here)
      a.vproc.store(vp, std::memory_order_relaxed);
      a.new_epoch(ActivationState::Held, ActivationState::Held);  // owns `vp` from here
      a.pin(cpu_of(vp));
      return vp;
    }
    a.set_stream(false);
    futex_wait(a.job, kNone);
  }
}

void Shim::give_processor(Activation& a, int vp) noexcept {
  // The caller, if it is the activation running `vp`, stops owning it before
  // `a` starts (I1). (The monitor is no activation.)
  if (Activation* self = Activation::current()) self->set_state(ActivationState::Running, ActivationState::Leaving);
  // release: the processor's state, set up for `a`, before the job.
  a.job.store(make_job(kResume, vp), std::memory_order_release);
  // Still asleep in its resolved fault: the signal wakes it into hold(),
  // which finds the job. Otherwise it is Held: parked, or about to.
  if (a.try_state(ActivationState::Resumable, ActivationState::Resuming))
    ::syscall(SYS_tgkill, ::getpid(), a.tid(), kHoldSignal());
  else
    futex_wake(a.job, 1);
}

bool Shim::enter_call() noexcept {
  if (!options_.activations) return false;
  Activation* a = Activation::current();
  if (!a) return false;
  n_calls_.fetch_add(1, std::memory_order_relaxed);
  a->call_started_ns.store(now_ns(), std::memory_order_relaxed);
  a->exhausted_counted.store(false, std::memory_order_relaxed);
  check_stream(*a);
  a->set_state(ActivationState::Running, ActivationState::InCall);
  if (monitor_ && !monitor_->perf()) monitor_->call_started();
  return true;
}

void Shim::exit_call() noexcept {
  Activation* a = Activation::current();
  if (a->try_state(ActivationState::InCall, ActivationState::Running)) return;  // fast path
  // Protocol step 5: our processor went to a spare while we were blocked.
  a->set_state(ActivationState::Blocked, ActivationState::Leaving);
  n_unblocked_.fetch_add(1, std::memory_order_relaxed);
  handler_.activation_unblocked(*a);
}

void Shim::this_processor_is_idle(int vp, const std::atomic<uint32_t>& word, uint32_t idle_value,
                                  Clock::time_point deadline, IdleWait* alt) noexcept {
  Activation* self = Activation::current();
  // A stream a runner's watch keeps paused stays so (no ioctl either way);
  // in plain mode there is no stream.
  const bool streams = self && options_.activations;
  if (self) self->set_state(ActivationState::Running, ActivationState::Idle);
  if (streams) self->set_stream(false);
  if (!alt) {
    futex_wait(word, idle_value, deadline);
  } else if (word.load(std::memory_order_seq_cst) == idle_value) {
    // A wake_processor() after this check reaches alt->wake(), which makes
    // the wait return at once.
    alt->wait(deadline);
  }
  if (streams) self->set_stream(stream_live_for(vp));
  if (self) {
    self->set_state(ActivationState::Idle, ActivationState::Running);
    arm_runner(vp);
  }
  if (monitor_) monitor_->activity();
}

void Shim::wake_processor(int vp, const std::atomic<uint32_t>& word, IdleWait* alt) noexcept {
  (void)vp;
  if (alt) alt->wake();
  else futex_wake(word, 1);
}

ShimStats Shim::stats() const {
  ShimStats s;
  s.activations = options_.activations;
  s.perf = monitor_ && monitor_->perf();
  s.processor_added = n_added_.load(std::memory_order_relaxed);
  s.activation_blocked = n_blocked_.load(std::memory_order_relaxed);
  s.activation_unblocked = n_unblocked_.load(std::memory_order_relaxed);
  s.calls = n_calls_.load(std::memory_order_relaxed);
  s.pool_exhausted = n_exhausted_.load(std::memory_order_relaxed);
  s.held = n_held_.load(std::memory_order_relaxed);
  s.held_asleep = n_held_asleep_.load(std::memory_order_relaxed);
  s.resume_rewakes = n_resume_rewakes_.load(std::memory_order_relaxed);
  s.handoffs_by_monitor = n_handoffs_by_[static_cast<int>(HandoffBy::monitor)].load(std::memory_order_relaxed);
  s.handoffs_by_sysmon = n_handoffs_by_[static_cast<int>(HandoffBy::sysmon)].load(std::memory_order_relaxed);
  s.handoffs_by_fault_server =
      n_handoffs_by_[static_cast<int>(HandoffBy::fault_server)].load(std::memory_order_relaxed);
  s.handoffs_by_runner = n_handoffs_by_[static_cast<int>(HandoffBy::runner)].load(std::memory_order_relaxed);
  for (int i = 0; i < LatencyHistogram::kBuckets; ++i)
    s.held_window_us.buckets[i] = held_buckets_[i].load(std::memory_order_relaxed);
  s.activations_high_water = high_water_.load(std::memory_order_relaxed);
  for (int i = 0; i < LatencyHistogram::kBuckets; ++i) {
    s.handoff_us.buckets[i] = handoff_buckets_[i].load(std::memory_order_relaxed);
    s.handoff_call_us.buckets[i] = call_buckets_[i].load(std::memory_order_relaxed);
    s.handoff_detected_us.buckets[i] = detected_buckets_[i].load(std::memory_order_relaxed);
  }
  s.preempted = n_preempted_.load(std::memory_order_relaxed);
  s.donations = n_donations_.load(std::memory_order_relaxed);
  s.contended_spells = n_contended_.load(std::memory_order_relaxed);
  for (const auto& r : runners_) s.runner_boosts += r->boosts.load(std::memory_order_relaxed);
  s.records_swept = monitor_ ? monitor_->swept() : 0;
  s.monitor_lifts = monitor_ ? monitor_->lifts() : 0;
  PoolLock g(lock_);
  s.activations_started = static_cast<int>(all_.size());
  for (const auto& a : all_) {
    const ActivationState st = a->state();
    s.running += st == ActivationState::Running || st == ActivationState::User || st == ActivationState::InCall;
  }
  return s;
}

}  // namespace sa::shim
