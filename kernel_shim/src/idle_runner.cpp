// Idle runners: the handoff from the CPU the block vacated (shim.hpp, design (i)).

#include <sa/shim/block_monitor.hpp>
#include <sa/shim/shim.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

namespace sa::shim {

void Shim::start_runners() {
  runner_of_vp_.assign(static_cast<size_t>(options_.processors), nullptr);
  for (int vp = 0; vp < options_.processors; ++vp) {
    const int cpu = cpu_of(vp);
    Runner* r = nullptr;
    for (auto& have : runners_)
      if (have->cpu == cpu) r = have.get();
    if (!r) {
      runners_.push_back(std::make_unique<Runner>());
      r = runners_.back().get();
      r->cpu = cpu;
    }
    runner_of_vp_[static_cast<size_t>(vp)] = r;
  }
  // Started after the table is complete: a runner reads it unlocked.
  for (auto& r : runners_) r->thread = std::thread([this, p = r.get()] { run_runner(*p); });
}

Shim::NormalClassWhileRunner::NormalClassWhileRunner(HandoffBy by) noexcept {
  if (by != HandoffBy::runner) return;
  sched_param normal{};
  lifted_ = ::sched_setscheduler(0, SCHED_OTHER, &normal) == 0;
}

Shim::NormalClassWhileRunner::~NormalClassWhileRunner() {
  if (!lifted_) return;
  sched_param idle{};
  ::sched_setscheduler(0, SCHED_IDLE, &idle);
}

void Shim::boost_runner(int vp) noexcept {
  if (vp < 0 || vp >= static_cast<int>(runner_of_vp_.size())) return;
  Runner* r = runner_of_vp_[static_cast<size_t>(vp)];
  const int tid = r ? r->tid.load(std::memory_order_acquire) : 0;
  sched_param normal{};
  if (tid == 0 || ::sched_setscheduler(tid, SCHED_OTHER, &normal) != 0) return;
  // After the lift: a runner that sees the count move goes back to
  // SCHED_IDLE after it, never before. One that looked just before the
  // count moved and went to sleep is woken for another look (as
  // arm_runner() does).
  r->boosts.fetch_add(1, std::memory_order_seq_cst);
  if (r->armed.exchange(1) == 0) futex_wake(r->armed, 1);
}

void Shim::stop_runners() noexcept {
  for (auto& r : runners_) {
    r->armed.store(1, std::memory_order_seq_cst);
    futex_wake(r->armed, 1);
  }
  for (auto& r : runners_)
    if (r->thread.joinable()) r->thread.join();
}

Shim::RunnerLook Shim::runner_pass(Runner& r, std::vector<Tried>& tried) noexcept {
  bool busy = false, asleep = false;
  int64_t now = 0;  // read once, and only if an owner sleeps where we leave it
  const auto long_asleep = [&](int64_t since) {
    if (now == 0) now = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
    return now - since >= kRunnerNapAfterNs;
  };
  const int n = n_slots_.load(std::memory_order_acquire);
  if (tried.size() < static_cast<size_t>(n)) tried.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    Activation& a = *slots_[static_cast<size_t>(i)].load(std::memory_order_acquire);
    const ActivationState st = a.state();
    if (st != ActivationState::Running && st != ActivationState::User && st != ActivationState::InCall) continue;
    const int vp = a.vproc.load(std::memory_order_relaxed);
    if (vp < 0 || vp >= options_.processors || runner_of_vp_[static_cast<size_t>(vp)] != &r ||
        stream_live_for(vp))
      continue;
    // The kernel's own record of its last switch (run_state.hpp).
    int64_t since = 0;
    const CpuState cs = a.cpu_state(&since);
    if (st == ActivationState::Running) {  // runtime code: never handed off
      (cs == CpuState::Sleeping && long_asleep(since) ? asleep : busy) = true;
      continue;
    }
    // Asleep, not preempted: a block. Each is tried until a handoff() takes
    // it, or kMaxTries times while the pool has no spare (a new one is
    // starting, or the limit is reached): then the sysmon's sweep retries it.
    Tried& t = tried[static_cast<size_t>(i)];
    if (cs != CpuState::Sleeping) {
      busy = true;
      continue;
    }
    if (since == t.since && t.done) {
      (long_asleep(since) ? asleep : busy) = true;
      continue;
    }
    busy = true;
    if (st == ActivationState::InCall && since < a.call_started_ns.load(std::memory_order_relaxed)) continue;
    if (since != t.since) t = Tried{since, 0, false};
    t.done = handoff(a, since, HandoffBy::runner) || ++t.tries >= kMaxTries;
  }
  return busy ? RunnerLook::busy : asleep ? RunnerLook::asleep : RunnerLook::idle;
}

void Shim::run_runner(Runner& r) noexcept {
  char name[16];
  std::snprintf(name, sizeof name, "sa-run%d", r.cpu);
  ::pthread_setname_np(::pthread_self(), name);
  // SCHED_IDLE on its CPU: it runs when nothing else there can, which is
  // the moment the activation running that CPU's processor blocks. Without
  // either, it would be one more monitor to wake; it stops.
  sched_param idle{};
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(r.cpu, &set);
  if (::sched_setscheduler(0, SCHED_IDLE, &idle) != 0 || ::sched_setaffinity(0, sizeof set, &set) != 0) return;
  r.tid.store(static_cast<int>(::gettid()), std::memory_order_release);
  // Cleared on the way out: boost_runner() never names a thread id that
  // the kernel may give to another thread.
  struct ClearTid {
    std::atomic<int>& tid;
    ~ClearTid() { tid.store(0, std::memory_order_release); }
  } clear_tid{r.tid};
  // Lifted by the sysmon (boost_runner) to finish a handoff: back to the
  // idle class before it looks again or sleeps, or it would compete with
  // the activations for its CPU.
  uint32_t boosts = 0;
  const auto drop_boost = [&] {
    if (const uint32_t b = r.boosts.load(std::memory_order_acquire); b != boosts) {
      boosts = b;
      ::sched_setscheduler(0, SCHED_IDLE, &idle);
    }
  };
  std::vector<Tried> tried;
  int64_t nap_ns = 0;
  while (!stopping_.load(std::memory_order_seq_cst)) {
    drop_boost();
    // perf refused (the first activation found out): no run-state words,
    // nothing to watch. Left armed, arm_runner() never calls in vain.
    if (!monitor_->perf()) return;
    const RunnerLook look = runner_pass(r, tried);
    if (look == RunnerLook::busy) {
      // A processor of ours is busy: stay runnable. The kernel runs us only
      // when its activation leaves the CPU (SCHED_IDLE, beside a nice-0
      // thread, gets about 0.3% of a CPU when that one never sleeps).
      nap_ns = 0;
      ::sched_yield();
      continue;
    }
    if (look == RunnerLook::asleep) {
      // Its owner sleeps where we leave it: nothing else wants this CPU, so
      // a sched_yield loop would spin on it. Nap and look again; a block of
      // fiber code after the owner wakes waits for our next look or the
      // sysmon's sweep (which then marks the CPU contended for a while).
      nap_ns = std::min<int64_t>(nap_ns == 0 ? kRunnerNapAfterNs : 2 * nap_ns, 1'000'000);
      const timespec nap{0, static_cast<long>(nap_ns)};
      ::nanosleep(&nap, nullptr);
      continue;
    }
    nap_ns = 0;
    // None busy (idle, in the pool, blocked and handed off): sleep until an
    // activation takes one of our processors (arm_runner). seq_cst fence:
    // the word's clearing before our second look at the states.
    r.armed.store(0, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (stopping_.load(std::memory_order_seq_cst) || runner_pass(r, tried) != RunnerLook::idle) {
      r.armed.store(1, std::memory_order_relaxed);
      continue;
    }
    drop_boost();
    futex_wait(r.armed, 0);
  }
}

}  // namespace sa::shim
