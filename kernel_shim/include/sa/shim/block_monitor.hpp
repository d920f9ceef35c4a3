#pragma once
// BlockMonitor: tells the shim when an activation that announced a call
// (InCall) has been blocked by the kernel.
//
// Primary: one perf_event_open(PERF_COUNT_SW_DUMMY, context_switch=1,
// exclude_kernel=1) per activation, opened on the activation's own thread,
// with watermark=1 / wakeup_watermark=1 so every record wakes the monitor
// thread's poll() (DESIGN.md: the settings tried here). A PERF_RECORD_SWITCH
// switch-out without PERF_RECORD_MISC_SWITCH_OUT_PREEMPT is a block; records
// of activations that are not InCall (idle futex waits, spares) are ignored.
// Records carry CLOCK_MONOTONIC times (use_clockid), so the shim can measure
// the handoff latency from the block itself.
//
// Who watches: not a thread of its own but one spare activation at a time,
// the *watcher* (leader/followers). It polls under SCHED_IDLE, unpinned: it
// takes a CPU only when one is free, which is exactly when an activation has
// blocked (so it usually wakes on the CPU the block vacated), and it never
// preempts a running activation. When it sees a block it runs the blocked
// processor itself: it makes a spare from the pool the next watcher, leaves
// SCHED_IDLE, pins itself and takes the processor over (Shim::handoff). A
// dedicated monitor thread would have to wake a spare instead: a second
// wake-up on the critical path (about 5 µs of the 12 µs annotated handoff
// here). With no spare left to succeed it, or where the process may not
// leave SCHED_IDLE (no CAP_SYS_NICE and RLIMIT_NICE below 20), the watcher
// stays and wakes a spare as the taker, as the monitor thread did.
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
#include <vector>

#include <poll.h>

#include <sa/shim/activation.hpp>

namespace sa::shim {

class Shim;

class BlockMonitor {
 public:
  // `use_perf` false forces the fallback. Nobody watches until an
  // activation calls watch().
  BlockMonitor(Shim& shim, bool use_perf);
  BlockMonitor(const BlockMonitor&) = delete;
  BlockMonitor& operator=(const BlockMonitor&) = delete;
  ~BlockMonitor();  // closes every fd; call stop() and let watch() return first

  // watch() runs the monitor on the calling activation `self` (a spare, the
  // watcher, SCHED_IDLE and unpinned as the pool keeps it) until stop(),
  // returning null, or until `self` took a blocked activation's processor:
  // its job word then holds the TakeOver job, and watch() returns the spare
  // that must watch next (Shim::pass_watch, once `self` left SCHED_IDLE: a
  // watcher woken earlier would preempt it). Blocks the kernel thread.
  Activation* watch(Activation& self) noexcept;
  // stop() makes watch() return; any thread.
  void stop() noexcept;
  // succeed() is for Shim::handoff on the watcher: `self` took a processor
  // and `next` (a spare out of the pool) watches after it.
  void succeed(Activation& next) noexcept { successor_ = &next; }

  // attach() starts watching the calling activation `a` (from its thread).
  void attach(Activation& a) noexcept;
  // detach() stops watching `a` (from its thread, before it exits).
  void detach(Activation& a) noexcept;
  // call_started() tells the fallback that an activation entered a call.
  void call_started() noexcept;
  // activity() tells the fallback that an activation started to run (left
  // Idle or the pool); a no-op with perf records.
  void activity() noexcept;

  // perf() is true while blocking is seen through perf records.
  bool perf() const noexcept { return perf_.load(std::memory_order_relaxed); }

 private:
  struct Watch;
  struct Pending {
    Activation* a;
    int64_t blocked_at_ns;
    int retries = 0;
  };
  // rebuild() makes the poll set from watches_ (under lock_), without the
  // watcher's own perf fd: its own sleeps would wake it.
  void rebuild(const Activation& self);
  // step() polls once and hands off what it saw; may set successor_.
  void step(Activation& self) noexcept;
  // drain() reads w's records; true if they end with `a` blocked in its call.
  bool drain(Watch& w, int64_t& blocked_at) noexcept;
  void scan_fallback() noexcept;
  void kick() noexcept;

  Shim& shim_;
  std::atomic<bool> perf_;
  std::atomic<bool> stopping_{false};
  int wake_fd_ = -1;  // eventfd: attach/detach/stop/call_started
  std::mutex lock_;   // guards watches_, dirty_
  std::vector<std::unique_ptr<Watch>> watches_;
  bool dirty_ = true;
  // The watcher's own state: one watcher at a time, and the job word
  // (release/acquire) orders one watcher's writes before the next one's.
  std::vector<Pending> pending_;  // blocked, waiting for a spare
  std::vector<pollfd> fds_;       // [0] wake_fd_, then the watched activations
  std::vector<Watch*> ws_;        // parallel to fds_ ([0] null)
  Activation* successor_ = nullptr;
};

}  // namespace sa::shim
