#pragma once
// Activation: a kernel thread executing on behalf of a processor.
//
// States (each says where the activation is and who may change it):
//   - Starting: created, not yet given work; in no queue.
//   - Spare:    parked in the shim's pool (futex on job_), no processor.
//   - Running:  executing the runtime for its processor (the scheduler loop,
//               or a fiber inside a runtime call); it owns the processor.
//   - User:     executing a fiber's own code (activations mode only); it
//               owns the processor. Only here may an unannounced block hand
//               the processor away: the runtime's own state is consistent.
//   - InCall:   inside a blocking call announced through the shim
//               (enter_call). If the kernel blocks it there, the monitor
//               moves it to Blocked and a spare takes the processor.
//   - Blocked:  its call blocked and its processor was given to a spare; the
//               activation finds this out when the call returns (exit_call)
//               and gives its fiber back to the scheduler, then turns Spare.
//   - Lost:     blocked in the kernel from User (a raw syscall, a page fault,
//               a foreign lock) and its processor given to a spare. When it
//               wakes it must not run beside the spare (I1): the monitor
//               signals it, and it holds itself at its next runtime call or
//               in the signal handler, whichever comes first.
//   - Held:     woke after Lost; parked until a processor hands itself over
//               (UMS-style), then User or Running again on that processor.
//   - Resumable: Lost and still asleep in a page fault that its pager has
//               resolved (Shim::resume_faulted): queued for a processor like
//               a Held one, but left asleep, so it never runs until one is
//               handed to it (no wake-up to hold, no park).
//   - Resuming: Resumable and handed a processor; the hold signal wakes it
//               and its handler takes the processor (Held, then User).
//               Either of the two that finds itself awake first (a stray
//               wake-up) turns Held and waits like any held activation.
//   - Leaving:  runtime code with no processor, on the way to the pool (after
//               a Blocked call returned, or after handing its processor to a
//               Held activation).
// Running, User and InCall own a processor; I1 counts those.
//   - Idle:     parked on a futex in this_processor_is_idle; the processor
//               is free for other processes.
//   - Exited:   the thread is finishing or joined.
//
//   Starting -> Spare <-> Running <-> Idle
//                 ^       |  ^  ^
//                 |       |  |  +--> User --(block seen: CAS)--> Lost -----> Held
//                 |       |  |                         (fault     |           ^ |
//                 |       |  |                         resolved)  v           | |
//                 |       |  |                            Resumable -> Resuming |
//                 |       v  |                                                  |
//                 |     InCall  <------(processor handed over)------------------+
//                 |       |      (Held goes back to User or Running)
//                 |       | monitor saw it block (CAS)
//                 +---- Blocked -> Leaving (also Running -> Leaving when
//                                   handing the processor to a Held one)
//
// Transitions go through set_state() / try_state(), which check the old
// state; the two that race (InCall -> Running by the activation, InCall ->
// Blocked by the monitor) are one CAS each, so exactly one wins.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include <sa/shim/futex.hpp>
#include <sa/shim/run_state.hpp>

namespace sa::shim {

enum class ActivationState : uint8_t {
  Starting, Spare, Running, User, InCall, Blocked, Lost, Resumable, Resuming, Held, Leaving, Idle, Exited
};

// must_hold() is true in the states whose activation, when it finds itself
// running, must hold before it runs user code: Lost, Resumable, Resuming.
inline bool must_hold(ActivationState s) noexcept {
  return s >= ActivationState::Lost && s <= ActivationState::Resuming;
}

const char* to_string(ActivationState s) noexcept;

class Activation {
 public:
  // Timer slack of every activation thread (PR_SET_TIMERSLACK), in ns.
  static constexpr unsigned long kTimerSlackNs = 1000;

  // Starts a kernel thread that installs an alternate signal stack (stack
  // overflow reports run on it) and calls body(). Throws std::system_error
  // when the thread cannot be created.
  Activation(int id, std::function<void(Activation&)> body);
  Activation(const Activation&) = delete;
  Activation& operator=(const Activation&) = delete;
  ~Activation();  // joins the thread

  int id() const noexcept { return id_; }
  // tid() is the kernel thread id, once the thread has started (else 0).
  int tid() const noexcept { return tid_.load(std::memory_order_acquire); }
  ActivationState state() const noexcept { return state_of(state_.load(std::memory_order_acquire)); }
  // state_word() is the state with its ownership epoch above it, which
  // grows each time the activation starts to own a processor (run's job,
  // wait_for_processor's resume): a CAS on the word (try_word) fails if
  // the activation owned another processor since the word was read, even
  // in the same state (Shim::handoff reads its processor after the word).
  uint32_t state_word() const noexcept { return state_.load(std::memory_order_acquire); }
  static ActivationState state_of(uint32_t word) noexcept { return static_cast<ActivationState>(word & 0xffu); }
  // try_word() moves from exactly `seen` (state and epoch) to `to`; one CAS.
  bool try_word(uint32_t seen, ActivationState to) noexcept {
    return state_.compare_exchange_strong(seen, (seen & ~0xffu) | static_cast<uint32_t>(to), std::memory_order_acq_rel);
  }

  // set_state() moves from `from` to `to`; aborts with a message if the
  // activation was not in `from` (a shim bug, never a user error).
  void set_state(ActivationState from, ActivationState to) noexcept;
  // try_state() moves from `from` to `to` if it is in `from`; one CAS
  // (again only if the epoch moved meanwhile).
  bool try_state(ActivationState from, ActivationState to) noexcept;
  // new_epoch() is set_state() that also starts a new ownership epoch.
  void new_epoch(ActivationState from, ActivationState to) noexcept;

  // pin() binds the calling activation (must be this one) to `cpu` (-1: no-op).
  // A no-op too when its own last pin() was to `cpu` and nothing moved it
  // since: a spare taking over the processor it last ran saves the
  // sched_setaffinity (about 2 µs here) on the handoff's critical path.
  void pin(int cpu) noexcept;
  // pinned_cpu() is the CPU of the last pin(), or -1 if unknown.
  int pinned_cpu() const noexcept { return pinned_cpu_.load(std::memory_order_relaxed); }
  // forget_pin() says another thread changed the affinity (Shim::donate):
  // the next pin() makes the system call.
  void forget_pin() noexcept { pinned_cpu_.store(-1, std::memory_order_relaxed); }

  // join() waits for the thread to exit; blocks the kernel thread.
  void join() noexcept;

  // current() is the activation the calling kernel thread is, or nullptr.
  // Inline: one thread-local load (the spinlock records it per acquisition).
  static Activation* current() noexcept { return tl_current_; }

  // cpu_state() is whether this activation is on a CPU now, as the kernel
  // last recorded it (run_state.hpp); Unknown outside activations mode or
  // without perf. Any thread; a few loads; never blocks.
  CpuState cpu_state(int64_t* since_ns = nullptr) const noexcept {
    const RunStateWord* w = run_state_.load(std::memory_order_acquire);
    return w ? w->read(since_ns) : CpuState::Unknown;
  }
  // longest_preemption() reads the run-state word's recent records
  // (RunStateWord::longest_preemption); 0 without one.
  int64_t longest_preemption(uint64_t& cursor, int64_t now_ns) const noexcept {
    const RunStateWord* w = run_state_.load(std::memory_order_acquire);
    return w ? w->longest_preemption(cursor, now_ns) : 0;
  }
  // watch_run_state() starts keeping cpu_state() (called by the activation
  // itself, in activations mode, before it runs user code).
  void watch_run_state() noexcept;

  // The processor this activation runs (or last ran); written by the shim.
  std::atomic<int> vproc{-1};
  // Job word for a Spare: the shim stores a job and futex-wakes it.
  std::atomic<uint32_t> job{0};
  // When the current call started (steady_clock ns), for the monitor.
  std::atomic<int64_t> call_started_ns{0};
  // Intrusive link in the shim's spare pool (guarded by the pool lock).
  Activation* next_spare = nullptr;
  // Intrusive link in the shim's held queue: its lock-free incoming stack
  // (written by hold(), in a signal handler) or its FIFO (held-queue lock).
  Activation* next_held = nullptr;
  // Times take_held() passed it over at the FIFO's head for one already on
  // the taker's CPU (held-queue lock).
  int held_passed_over = 0;
  // For a TakeOver job: whose processor this spare takes, and since when it
  // was blocked (steady_clock ns); written before the job (release).
  Activation* takes_over = nullptr;
  int64_t blocked_at_ns = 0;
  bool takes_over_call = false;  // the block was in an announced call (else detected)
  // A runner's handoff that made `takes_over` Lost leaves its stream and
  // signal to the taker (Shim::lost_handed_off): the Lost state word it
  // CASed in, or 0, and whether it had been signalled before.
  uint32_t takes_over_lost_word = 0;
  bool takes_over_signalled = false;
  // Lost: when the monitor saw it wake (steady_clock ns), and whether it
  // was signalled already.
  std::atomic<int64_t> woke_at_ns{0};
  std::atomic<bool> signalled{false};
  // Set (release) once the shim has recorded user_fiber / loop_context for
  // a handoff that made this activation Lost or Blocked; a held one waits
  // for it before reading them (wait_for_processor), since the handing
  // thread may be preempted between its CAS and that record.
  std::atomic<bool> taken_recorded{true};
  // Resumable / Resuming: the resolved fault's page it sleeps on (its
  // userfaultfd and range), written by resume_faulted before it is queued.
  // The sysmon wakes it there if the hold signal does not (Shim::
  // wake_resuming: a fiber blocked the signal). Atomic: the sysmon may read
  // an older fault's while the next one is written (a spurious wake-up).
  std::atomic<int> fault_uffd{-1};
  std::atomic<void*> fault_addr{nullptr};
  std::atomic<size_t> fault_len{0};
  // Set while one Shim::handoff works on this activation (the monitor and
  // Shim::fault_seen may both try): handoffs of one activation never
  // overlap. 0 when free, else 1 + the Shim::HandoffBy of the one in it.
  std::atomic<uint8_t> in_handoff{0};
  // Opaque to the shim: the runtime's fiber and scheduler context of this
  // activation, recorded when its processor is taken (for handing it back).
  void* user_fiber = nullptr;
  void* loop_context = nullptr;
  // The shim that owns this activation.
  class Shim* shim = nullptr;
  // Set while a spinlock waiter has moved this activation (preempted while
  // holding the lock) onto the waiter's CPU; whoever clears it re-pins it
  // (Shim::donate / Shim::end_donation).
  std::atomic<bool> donated{false};
  // Set by the safe-point signal's handler on this thread (Shim::
  // request_safe_point); the runtime clears it at its next safe point.
  std::atomic<bool> safepoint_requested{false};
  // Monitor thread only: this block was counted as pool_exhausted; and, for
  // the /proc fallback, since when a User activation has been seen asleep.
  std::atomic<bool> exhausted_counted{false};  // also written by Shim::fault_seen's callers
  int64_t fallback_asleep_since_ns = 0;
  // watch() sets the fd of the monitor's switch-record stream of this
  // thread (-1: none; BlockMonitor::attach and detach, on this thread),
  // under the stream's lock: a set_stream() from another thread never
  // reaches a closed fd.
  void watch(int fd) noexcept {
    stream_locked([&] { watch_fd_ = fd; });
  }
  // set_stream(live) resumes (true) or pauses (false) that stream's output:
  // paused, records are dropped, so none wakes the monitor (shim.hpp: each
  // waking record costs an irq_work). Paused while the activation waits
  // where its switches need no reader (the spare pool, idle, held) and
  // while an idle runner watches its processor's CPU instead (Shim::
  // stream_live_for). Any thread: a flag and the ioctl change together
  // under a lock (stream_locked), so the flag always says what the kernel
  // does. Never called by the activation itself in a state that hold()
  // handles (must_hold()), so the hold signal's handler, which may call
  // it, never interrupts a holder of the lock on its own thread. One load
  // and no system call when the stream is already so.
  void set_stream(bool live) noexcept;
  bool stream_live() const noexcept { return stream_live_.load(std::memory_order_relaxed); }
  // stream_since_ns() is when the stream last went live (CLOCK_MONOTONIC
  // ns): records older than that were written before a pause, and may be
  // left unread in the ring from long ago; the monitor ignores them.
  int64_t stream_since_ns() const noexcept { return stream_since_ns_.load(std::memory_order_acquire); }
  // stream_locked() runs f() with the stream's lock held (Shim::
  // sync_stream: a state read and the change it implies, together). A
  // futex lock, not a spin flag: its holder may be an idle-class thread (a
  // runner) that a waiter on the same CPU would otherwise spin against,
  // keeping the CPU from ever idling to let it finish. A waiter sleeps.
  template <class F>
  void stream_locked(F f) noexcept {
    // 0 free, 1 held, 2 held with waiters (a futex mutex).
    uint32_t c = 0;
    if (!stream_lock_.compare_exchange_strong(c, 1, std::memory_order_acquire)) {
      if (c != 2) c = stream_lock_.exchange(2, std::memory_order_acquire);
      while (c != 0) {
        futex_wait(stream_lock_, 2);
        c = stream_lock_.exchange(2, std::memory_order_acquire);
      }
    }
    f();
    if (stream_lock_.exchange(0, std::memory_order_release) == 2) futex_wake(stream_lock_, 1);
  }
  // apply_stream() is set_stream's body, for a holder of the lock.
  void apply_stream(bool live) noexcept;

 private:
  void main();

  const int id_;
  std::function<void(Activation&)> body_;
  std::atomic<uint32_t> state_{static_cast<uint32_t>(ActivationState::Starting)};  // state | epoch << 8
  std::atomic<int> tid_{0};
  std::atomic<int> pinned_cpu_{-1};
  std::atomic<bool> stream_live_{true};  // a new stream writes (perf_event_open without disabled)
  std::atomic<int64_t> stream_since_ns_{0};
  std::atomic<uint32_t> stream_lock_{0};
  int watch_fd_ = -1;  // guarded by stream_lock_
  std::unique_ptr<RunStateWord> run_state_owner_;
  std::atomic<const RunStateWord*> run_state_{nullptr};
  std::thread thread_;
  static constinit thread_local Activation* tl_current_;
};

}  // namespace sa::shim
