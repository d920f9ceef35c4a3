#pragma once
// BlockMonitor: tells the shim when an activation that announced a call
// (InCall) has been blocked by the kernel.
//
// Primary: one perf_event_open(PERF_COUNT_SW_DUMMY, context_switch=1,
// exclude_kernel=1) per activation, opened on the activation's own thread,
// with watermark=1 / wakeup_watermark=1 so every record wakes the monitor
// thread's epoll_wait (DESIGN.md: the settings tried here); one epoll set
// holds every activation's fd, so a wake-up costs the fds that have records.
// A PERF_RECORD_SWITCH switch-out without PERF_RECORD_MISC_SWITCH_OUT_PREEMPT
// is a block when its activation is InCall or User (fiber code); those of
// the others (idle futex waits, spares, runtime code) are ignored. A
// switch-in of a Lost or Resumable activation makes it hold (shim.hpp,
// step 6).
// Records carry CLOCK_MONOTONIC times (use_clockid), so the shim can measure
// the handoff latency from the block itself. The monitor thread runs under
// SCHED_IDLE: it takes a CPU only when one is free, which is exactly when an
// activation has blocked, and it never preempts a running one (at nice 0
// its own preemptions of activations wrote records that woke it again, a
// loop that cost about 30% of the compute throughput).
//
// Sysmon: a second thread, SCHED_OTHER, woken by a timer only (never per
// record, so it cannot feed that loop) while some activation runs or may
// soon run fiber code: every 1 ms, or every 100 µs while its sweeps find
// work the monitor left. It sweeps every ring (reads of mapped memory),
// drains those whose records stayed unread from one sweep to the next and
// hands off what they show (counted in ShimStats::records_swept), and the
// blocks the monitor read but did not hand off. It covers two holes: with a
// CPU hog on every CPU the SCHED_IDLE monitor waits milliseconds for a CPU
// (handoff p50 11-20 ms on the 2-CPU VM; 0.2-0.5 ms with the sysmon), and
// now and then a record's wake-up never comes, which with every VProc's
// activation asleep would leave nothing to wake the monitor. With nothing
// exposed it sleeps without a timeout; activity() (an activation leaving
// Idle or the pool) re-arms it.
// With idle runners (shim.hpp, design (i)) the owners' streams are paused
// while their CPU is quiet, so the sweep also reads each activation's
// run-state word: preemption notices for paused streams, blocks a runner
// left for 50 µs, and the long preemptions that mark a CPU contended
// (its streams then go live for the monitor, and its runner stands down).
// SA_MONITOR_SWEEP_ONLY=1 in the environment of a runtime's construction
// leaves the fds out of the epoll set, so that the sweep alone sees the
// records (and starts no idle runner): for the test of the sweep, never
// for production.
//
// Fallback, when perf_event_open is refused (EACCES, ENOSYS, paranoid 3) or
// disabled: while some activation is InCall, running fiber code (User) or
// Lost, the monitor wakes every 50 µs and reads /proc/self/task/<tid>/stat;
// 'S' or 'D' for 50 µs or more (two looks) means blocked, and a Lost one seen
// running again is signalled. It warns once. It costs a few % of a CPU while
// fibers run, and reacts in 50-100 µs instead of ~20.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <sa/shim/activation.hpp>
#include <sa/shim/idle_holder_lock.hpp>

namespace sa::shim {

class Shim;

class BlockMonitor {
 public:
  // Starts the monitor thread. `use_perf` false forces the fallback.
  BlockMonitor(Shim& shim, bool use_perf);
  BlockMonitor(const BlockMonitor&) = delete;
  BlockMonitor& operator=(const BlockMonitor&) = delete;
  ~BlockMonitor();  // stops and joins the monitor thread, closes every fd

  // attach() starts watching the calling activation `a` (from its thread).
  void attach(Activation& a) noexcept;
  // detach() stops watching `a` (from its thread, before it exits).
  void detach(Activation& a) noexcept;
  // call_started() tells the fallback that an activation entered a call.
  void call_started() noexcept;
  // activity() says that an activation started to run (left Idle or the
  // pool): the fallback looks again; with perf records, a sysmon asleep
  // without its timer (nothing could run fiber code) re-arms it.
  void activity() noexcept;

  // perf() is true while blocking is seen through perf records.
  bool perf() const noexcept { return perf_.load(std::memory_order_relaxed); }
  // swept() counts rings found holding records that no wake-up announced.
  uint64_t swept() const noexcept { return n_swept_.load(std::memory_order_relaxed); }
  // lifts() counts the monitor's lifts of itself to normal class (lift()).
  uint64_t lifts() const noexcept { return n_lifts_.load(std::memory_order_relaxed); }

 private:
  struct Watch;
  struct Pending {
    Activation* a;
    int64_t blocked_at_ns;
    int retries = 0;
  };
  void run() noexcept;
  void run_sysmon() noexcept;
  void kick_sysmon() noexcept;
  // drain() reads w's records; true if they end with `a` blocked in its call.
  bool drain(Watch& w, int64_t& blocked_at) noexcept;
  void scan_fallback() noexcept;
  // any_exposed() is true if some watched activation could block unseen
  // (Running, User, InCall, or one held: Lost, Held, Resumable, Resuming),
  // or a noted block waits for its handoff; sweep() (sysmon thread) drains
  // every ring whose records stayed unread since the previous sweep and
  // hands off the blocks it finds.
  bool any_exposed() noexcept;
  // sweep() returns whether it found work the monitor had left. It also
  // wakes, on its page, a Resuming activation found asleep by two sweeps in
  // a row (Shim::wake_resuming), and tells the shim which CPUs turned
  // contended or quiet.
  bool sweep() noexcept;
  // watched_by_runner() is the sweep's look, through its run-state word, at
  // an activation that runs a processor an idle runner watches: a
  // preemption notice if its stream is paused; a block the runner left for
  // kRunnerGraceNs (noted overdue; true); and signs that the runner
  // starves on its CPU (contended()).
  bool watched_by_runner(Watch& w, int64_t now) noexcept;
  // contended() notes a sign that `cpu` is contended; a second one, in
  // another sweep, within kConfirmNs, marks it contended for
  // kContendedHoldNs: its processors' streams go live, for the monitor
  // (Shim::set_cpu_contended).
  void contended(int cpu, int64_t now) noexcept;
  // note_block() records in `w` (under lock_) a block its records showed;
  // hand_off_blocks() tries the handoff of every noted block (overdue_only,
  // the sysmon: those noted a sweep ago; it marks the others) and returns
  // whether any was left noted.
  void note_block(Watch& w, int64_t blocked_at, bool overdue) noexcept;
  bool hand_off_blocks(bool overdue_only) noexcept;
  void kick() noexcept;
  // lift() takes the monitor thread to SCHED_OTHER until its next wait,
  // before it takes any lock but its own (the pool's, the held queue's, a
  // stream's, a handoff's); monitor thread only.
  void lift() noexcept;
  bool lifted_ = false;  // monitor thread only

  Shim& shim_;
  std::atomic<bool> perf_;
  std::atomic<bool> stopping_{false};
  int wake_fd_ = -1;  // eventfd: attach/detach/stop/call_started
  int epoll_fd_ = -1; // wake_fd_ and every watch's perf fd
  // Guards watches_, dirty_. The monitor takes it at the idle class; a
  // normal thread kept waiting lifts it (idle_holder_lock.hpp).
  IdleHolderLock lock_;
  std::vector<std::unique_ptr<Watch>> watches_;
  bool dirty_ = true;
  std::atomic<uint64_t> n_swept_{0};
  std::atomic<uint64_t> n_lifts_{0};
  std::atomic<bool> asleep_unarmed_{false};  // the sysmon sleeps without its timer
  std::atomic<uint32_t> sysmon_word_{0};      // futex: bumped to wake the sysmon
  bool sweep_only_ = false;  // SA_MONITOR_SWEEP_ONLY (fixed before the thread starts)
  std::vector<Pending> pending_;  // fallback: blocked, waiting for a spare (monitor thread only)
  struct Contention {
    int cpu;
    int64_t until_ns = 0;     // contended until then
    bool on = false;          // as the shim was last told
    int64_t sign_ns = 0;      // the last sign of contention...
    uint64_t sign_sweep = 0;  // ... and its sweep (0: none yet)
  };
  std::vector<Contention> contention_;  // sysmon thread only
  uint64_t sweeps_ = 0;                 // sysmon thread only
  std::thread thread_;
  std::thread sysmon_;  // with perf records only
};

}  // namespace sa::shim
