#pragma once
// The kernel shim: the kernel half of scheduler activations, in user space.
//
// Concepts (DESIGN.md, "Vocabulary"):
//   - A *processor* is a CPU granted to the process; the runtime runs one
//     VProc on each. The shim knows processors by index, never fibers.
//   - An *Activation* is a kernel thread executing on behalf of a processor
//     (activation.hpp has its states).
//   - The shim tells the scheduler what happens to its processors through
//     *upcalls* (UpcallHandler) and takes requests through *downcalls*.
//
// Two modes:
//   - plain (ShimMode::off): one activation per processor, started with the
//     processor_added upcall; a blocked activation keeps its processor.
//   - activations (ShimMode::on): also a pool of spare activations and a
//     BlockMonitor. A blocking call is announced with enter_call() /
//     exit_call() (Go's entersyscall / exitsyscall): one CAS each way when
//     the call does not block. When the kernel blocks the activation inside
//     the call, the monitor sees it (a PERF_RECORD_SWITCH switch-out record,
//     or, without perf, the fallback's /proc task state) and hands the
//     processor to a spare, which upcalls activation_blocked and runs the
//     scheduler there. When the call returns, exit_call() finds its
//     processor gone and upcalls activation_unblocked on the returning
//     activation; the scheduler gives its fiber back to a ready queue and the
//     activation returns to the pool. So at most one activation runs user
//     code per processor (I1) and a blocked call holds no processor (I3).
//
// Handoff protocol (one processor `vp`, activation `a` running it). "The
// monitor" below is whoever saw the block: with pinned processors mostly
// the idle runner of a's CPU (design (i) below), else the BlockMonitor.
//   1. a: enter_call(): state Running -> InCall (CAS); call starts.
//   2. kernel blocks a; monitor reads the switch-out record.
//   3. monitor: takes a spare s from the pool (if it is empty, starts one, up
//      to max_activations, and retries when it has joined the pool; past the
//      limit, counts pool_exhausted and leaves vp blocked), then CAS a
//      InCall -> Blocked. If that fails, a already returned: s goes back to
//      the pool.
//   4. monitor: s.job = TakeOver(vp); futex-wake s; s upcalls
//      activation_blocked(vp, a) and runs vp's scheduler.
//   5. a's call returns; exit_call(): CAS InCall -> Running. Success: nothing
//      happened (fast path). Failure: a is Blocked, so vp is s's now; a moves
//      to Running and upcalls activation_unblocked(a): the scheduler requeues
//      the calling fiber and makes a's upcall that ran vp return; a -> Spare.
//
// Unannounced blocking (a raw syscall, a page fault, a foreign futex) is
// caught the same way when the activation was running a fiber's own code
// (state User; runtime code runs in Running, where no handoff happens, the
// paper's "continue it temporarily"): step 3 moves it User -> Lost. It cannot
// give its fiber back when it wakes (the fiber is at an arbitrary
// instruction), so it is held, UMS-style:
//   6. monitor: a's switch-in record shows it woke; it tgkill()s a with
//      kHoldSignal (the measured I1 window runs from that record).
//   7. a, in the signal handler or at its next enter_runtime(), whichever
//      is first: CAS Lost -> Held; a joins the held queue, and the runtime
//      is told (held_queued: a VProc with local ready fibers alternates
//      between them and held activations: held ones may hold locks, ready
//      ones may be the pager a faulter waits for); upcall
//      activation_held(a): a parks in wait_for_processor().
//   8. a VProc's loop (on activation h) finds a queued: it hands itself over
//      (give_processor), h leaves its loop and turns Spare, a resumes its
//      fiber on that processor. When the pool is exhausted, the monitor also
//      gives a held activation the processor of an activation blocked in an
//      announced call (it would otherwise wait for a processor that no
//      running activation can give).
// A page fault whose pager resolved it while a slept (resume_faulted) skips
// the wake-up of step 6 and the park of step 7: a, still asleep, goes
// Lost -> Resumable into the held queue; in step 8 the VProc's activation
// makes it Resuming and signals it, and the handler takes the processor
// (Held, then User) before the faulting access is retried. So a fault costs
// one wake-up of a, not two wake-ups and a park (with 64 fibers faulting on
// 2 CPUs the context switches were about 5 per fault, at 10-25 µs each on
// the VM). If a wakes by itself first, the monitor signals it as in step 6
// and it holds as in step 7 (it is queued already).
//
// Rejected: (a) a Go-style sysmon that polls every activation every 20 µs:
// it burns a CPU whenever a call is in flight and cannot see page faults;
// it remains as the fallback when perf_event_open is refused. (b) Handing off
// on entry to every announced call: a thread switch for calls that mostly
// return at once. (c) Migrating the fiber of a Lost activation to another
// kernel thread from the signal handler: the fiber may be inside malloc or
// other code with per-thread state (tcache, errno), so its thread keeps it.
// (d) Leader/followers (tried in 89d4a33): one spare at a time watches the
// records and takes a blocked processor itself, waking a spare as the next
// watcher; one wake-up instead of two. But the watcher must run SCHED_IDLE
// and unpinned, so taking over costs sched_setscheduler and a re-pin on the
// critical path (1.6 and 1.9 µs per call on the 2-CPU VM, where a bare
// syscall costs 0.7 µs), plus the successor's wake-up: annotated handoff p50
// went from 12.6 to 15.3 µs (medians of 6 interleaved runs), so it went.
// (e) A standby per processor (tried in f762cc7): a spare pinned to the
// processor's CPU, SCHED_OTHER, polling a PERF_COUNT_SW_CONTEXT_SWITCHES
// sample event of the running activation (it counts switch-outs only, so
// the standby is never woken while its activation runs), takes a blocked
// processor over itself; the monitor's futex wake of a spare (5.5 µs median
// from the wake to the spare running, measured in place) leaves the critical
// path. Quiet: annotated p50 9.5-13 µs against 13-18 for this design. But
// with one CPU hog on the processor's CPU the standby, woken just after the
// kernel picked the hog, waits for the hog's slice: annotated p50 160-190
// µs and detected 3.7-11.6 ms, against 24-40 µs here; without the monitor
// leaving it the first try, detected still reached 3.7 ms in 1 run of 3.
// Multiprogramming is the case sa exists for, so it went. (SCHED_BATCH and
// SCHED_IDLE standbys are worse: a waking SCHED_BATCH thread waited for the
// next tick, 4 ms, even on an idle CPU, and SCHED_IDLE needs a
// sched_setscheduler on the critical path.)
// (f) The monitor at normal priority (nice 0 or 10, tried in this design):
// with a CPU hog on every CPU, handoff p50 34 µs instead of about 20 ms
// under SCHED_IDLE, but each of its wake-ups preempted a running
// activation, whose two switch records woke it again: blocking_mix lost
// about 30% of its compute, even with nothing blocked. So the monitor stays
// SCHED_IDLE and a timer-driven sysmon at normal priority hands off what the
// monitor has not reached (block_monitor.hpp): p50 0.2-0.5 ms under the
// hogs, for about 1-2% of the compute while fibers run.
// (g) A monitor per CPU (tried after eba4b38): one pinned to each VProc's
// CPU, SCHED_IDLE, its epoll set holding the fds of the activations pinned
// there (a fd moving with its activation's pin), so that the monitor wakes
// on the CPU the block vacated. In place, in one noisy hour: switch-out
// record -> monitor awake 4.5-5 µs at p50 with the monitor pinned to the
// blocked CPU, 32-34 µs pinned to the other CPU, 15-25 µs unpinned. Medians
// of 10 alternating runs of bench_handoff: detected p50 21.9 -> 15.3 µs and
// p99 203 -> 32 µs, announced p50 20.4 -> 19.0 µs. But with a CPU hog on
// the blocked CPU only, its monitor cannot run there and the sysmon does
// every handoff: announced p50 22 -> 525 µs, p99 to 30 ms, where one
// unpinned monitor finds the idle CPU. With each fd also in an unpinned
// monitor's set (two wake-ups per record), the hog case recovered in some
// runs only (p50 22-266 µs, p99 5-6.6 ms) and the quiet case lost
// (announced p50 13.9 against 10.7-12.3 µs). Left: the futex wake of the
// spare, 9-10 µs from the wake to the spare running on one CPU that hour (a
// probe's bare same-CPU futex wake-up, no perf events: 6-8 µs).
// Where a handoff's time goes on the 2-CPU VM (medians, measured in place):
// switch-out record -> monitor awake 3-4.5 µs, the monitor's handoff 1 µs,
// its futex wake -> the spare running 5.5 µs, the spare -> the next fiber
// about 2 µs. Much of each wake-up is perf's own: a same-CPU futex wake
// costs 3-4 µs when the woken thread has no perf event and 4.4-8 µs with
// one; a second and a third event add little. So fewer events per
// activation would not help; none would (CPU-wide events: privileged).
// Nor did switching a pooled spare's events off (PERF_EVENT_IOC_DISABLE on
// its way into the pool, ENABLE on its way out, tried after 512c473):
// annotated p50 19.3 against 18.0 µs, medians of 6 alternating pairs on a
// loaded host.
// On the AMD host (from 2026-11-23) the picture changed: a record that
// wakes its reader costs far more than the record. perf queues that
// wake-up as irq_work, a self-IPI, which exits to the hypervisor: a
// same-CPU futex wake-up (probe: two pinned threads, 2000 samples) took
// 4.5 µs p50 without events, 6 µs with a switch event on each thread, 20
// µs with one that wakes per record. Every switch of an activation paid
// it, in and out, though only a blocked activation's switch-out and a
// Lost one's switch-in need a reader. So an activation now pauses its
// stream's output (PERF_EVENT_IOC_PAUSE_OUTPUT, Activation::quiet) while
// it waits where no record matters: in the spare pool, idle
// (this_processor_is_idle), and held (wait_for_processor). The spare
// that takes a blocked processor no longer writes a waking switch-in on
// the handoff's path. 8 alternating pairs of bench_handoff --quick:
// detected p50 37.7 -> 26.9 µs, p99 82 -> 51; announced p50 35.3 -> 34.9
// (p99 81 -> 54); blocking_mix unchanged (bench/results/
// handoff-quiet-streams.md). What remains on that host (perf sched
// trace): the blocked activation's own record -> the monitor running,
// 14 µs, most of it that irq_work.
// (h) An idle runner per pinned CPU (tried after a60e21a, kept on the
// branch experiment/idle-runner): a SCHED_IDLE thread pinned to each
// processor's CPU, runnable while its processor runs, so the kernel runs
// it the moment the activation blocks, with no wake-up; it reads the
// activation's RunStateWord (blocked, not preempted) and hands off
// itself; dormant while its processor is idle (armed on leaving Idle).
// Beside the monitor's waking streams it gained little here, since the
// block's irq_work still delays it: 6 pairs against a60e21a, announced
// p50 34.0 -> 31.3 µs, detected 31.2 -> 28.2, blocking_mix 1.02 -> 0.97.
// With non-waking streams (no irq_work): announced 10-15 µs, detected
// 13-14 µs quiet, but with a CPU hog on the blocked CPU only 337 / 219 µs
// against 60-67: the runner cannot run there and the sysmon's sweep does
// the handoff, as in (g). A hybrid (streams that wake only for a CPU whose
// runner starves) was the open idea; (i) is that hybrid, and is in.
//
// (i) Idle runners with a contended fallback (idle_runner.cpp; the design
// in use with pinned processors and perf; SA_IDLE_RUNNERS=0 turns it off):
//   - A runner per CPU that a processor is pinned to: a plain thread (no
//     activation, never runs user code, so not counted by I1), SCHED_IDLE,
//     pinned there, runnable (sched_yield in a loop) while an activation
//     owns one of its processors, asleep on a futex otherwise (arm_runner()
//     wakes it when one starts to own one). An owner asleep in the kernel
//     where the runner leaves it (runtime code: an sa::Spinlock's holder,
//     a runtime lock's waiter; or a block the pool had no spare for) for
//     200 µs makes it nap instead, 200 µs doubling to 1 ms between looks:
//     its sched_yield loop was the only thing on that CPU, and burnt it
//     (and the process's CPU time: 0.3 s of a 0.3 s sleep under a
//     Spinlock). The kernel switches to it the
//     moment that activation blocks, with no wake-up. It reads the
//     activation's run-state word: Sleeping while InCall or User is a block,
//     and it calls handoff() itself, which wakes a spare on that CPU (one
//     wake-up, no irq_work).
//   - The owners' monitor streams stay paused meanwhile (stream_live_for),
//     so no switch of theirs costs an irq_work. A Lost activation's stream
//     goes live in handoff() (sync_stream), since its wake-up must reach
//     the monitor (step 6); it pauses again once held.
//   - A CPU with another process's thread on it starves its runner, which
//     then gets the CPU in scraps. The sysmon reads every activation's
//     run-state records at each sweep; a preemption of 300 µs or more (a
//     time slice of a CPU-bound thread; our own threads preempt one
//     another for less) or a block the runner left for 50 µs marks the CPU
//     contended for 500 ms. There the owners' streams are live (the sysmon
//     syncs the running ones; the others at their next return to fiber
//     code, announced call or wake-up) and the runner stands down: the
//     monitor, on another CPU's idle time, does the handoffs as before (g),
//     and the runner never takes the pool lock in a scrap of CPU that may
//     end before it lets go (a SCHED_IDLE holder beside a hog: tens of ms).
//   - bench_handoff --quick, 5 pairs alternating with SA_IDLE_RUNNERS=0 on
//     2026-12-07 (AMD EPYC, 2 vCPUs; bench/results/handoff-idle-runners.md):
//     quiet, annotated p50 8.4 µs against 22.2, detected 9.1 against 23.5;
//     a hog on the blocked CPU, annotated p50 45 µs against 54 (the
//     monitor, either way); a hog on each CPU, 192-197 µs either way (the
//     sysmon). blocking_mix: K = 0 compute 5% faster (no irq_work per
//     owner switch), kept 0.97 of it against 1.00.
//   - A CPU is marked contended at a second sign within 100 ms, in another
//     sweep: a kernel worker's single blip would cost 500 ms of monitor
//     handoffs. Records from before a stream's last resume are ignored by
//     the monitor (Activation::stream_since_ns): a stale switch-in left in
//     the ring would make a Lost activation hold before its fault's fill.
//   - The runner holds no lock in its handoff, since a wake-up on its CPU
//     may preempt it anywhere and a SCHED_IDLE holder then keeps the lock
//     until that CPU next idles (beside a CPU-bound thread: up to the 0.3%
//     share SCHED_IDLE gets, tens to hundreds of ms), stalling every other
//     user. It pops its CPU's reserve spare (Runner::reserve, one exchange;
//     the sysmon's restock() and spares going back to the pool refill it),
//     and the spare it wakes makes a Lost activation's stream live (its
//     lock, an ioctl) at normal class before it runs the processor
//     (lost_handed_off). Only with the reserve empty (two blocks on one CPU
//     within a sweep) does it take the pool lock or the held-queue lock, or
//     grow the pool, lifted to SCHED_OTHER (NormalClassWhileRunner). What
//     it still holds is the activation's handoff (in_handoff, about 200 ns
//     from its look to the spare's wake-up), which keeps the monitor and
//     the sysmon out: the sysmon, finding a block left for kRunnerGraceNs
//     whose handoff a runner holds, lifts that runner (boost_runner), and
//     it drops back at its next pass. The monitor, also SCHED_IDLE, reads
//     its records under its own lock, which a normal thread kept waiting
//     lifts it out of (IdleHolderLock), and lifts itself before it hands
//     off or takes any other lock (block_monitor.cpp); lifting at each of
//     its wake-ups instead put it at normal class beside the spare at
//     every hold (each kicks it): annotated p50 8.95 -> 9.86 µs. TSan
//     builds leave the runners off unless SA_IDLE_RUNNERS=1: a runner
//     preempted inside TSan's own locks starved normal threads.
//   - Rejected inside it: the sysmon sweeping every 200 µs instead of going
//     live (a wake-up of a normal thread 5000 times a second, and the
//     handoff beside a hog went from 70 µs to 950); runners on every CPU
//     watching every processor (one spins on each idle CPU).
//   - Tried and not landed: a standby, a spare activation that watches in
//     the runner's place (SCHED_IDLE, pinned) and takes the blocked
//     processor itself, saving the spare's wake-up (about 5 µs of the 9).
//     It must return to SCHED_OTHER first (sched_setscheduler: 1.7-2.0 µs
//     here), and either the runner thread sleeps while it watches (then
//     its wake-up is on the path) or stays runnable beside it (then the
//     kernel often runs the runner first, which yields: a 6 µs detour in
//     the traces). Re-appointing a standby woke a spare on the path too.
//     Quick runs: annotated p50 10-20 µs against 9-13, so it went.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <sa/shim/activation.hpp>
#include <sa/shim/futex.hpp>
#include <sa/shim/topology.hpp>

namespace sa::shim {

// IdleWait: another way for an idle processor's activation to wait, for a
// runtime that must also wake for events of its own (the io_uring reactor
// sleeps in io_uring_enter so completions wake it as well).
class IdleWait {
 public:
  virtual ~IdleWait() = default;
  // wait() blocks the activation until wake(), an event of its own, or
  // `deadline`; it may return early. A wake() that came first makes it
  // return at once.
  virtual void wait(Clock::time_point deadline) noexcept = 0;
  // wake() makes a wait() in progress, or the next one, return; any thread,
  // never blocks.
  virtual void wake() noexcept = 0;
};

// The scheduler's side of the upcalls. Each runs on an activation.
class UpcallHandler {
 public:
  virtual ~UpcallHandler() = default;
  // processor_added(vp) runs processor `vp` on the calling activation until
  // the runtime stops or the processor moves to another activation.
  virtual void processor_added(int vp) noexcept = 0;
  // activation_blocked(vp, a) runs on a spare: `a` blocked in a call while
  // running `vp`; run `vp` here (as processor_added does).
  virtual void activation_blocked(int vp, Activation& blocked) noexcept = 0;
  // activation_unblocked(a) runs on `a` itself when its call returned after
  // its processor was given away: give the calling fiber back to the
  // scheduler. Returns when that fiber is resumed (on some activation).
  virtual void activation_unblocked(Activation& a) noexcept = 0;
  // processor_preempted(vp, a): the kernel preempted `a` while it ran `vp`
  // (a PERF_RECORD_SWITCH flagged SWITCH_OUT_PREEMPT). A notice on the
  // monitor thread, like processor_taken; the preemption issue builds the
  // spinlock recovery on it. Never blocks.
  virtual void processor_preempted(int vp, Activation& a) noexcept = 0;
  // processor_taken(vp, a) is not an upcall but a notice, on the monitor
  // thread, just before `vp` is handed away from blocked activation `a`
  // (neither runs `vp` at that moment): record in `a` (user_fiber,
  // loop_context) what is needed to give `a` a processor again.
  virtual void processor_taken(int vp, Activation& a) noexcept = 0;
  // held_queued() is a notice: an activation joined the held queue (it
  // woke after an unannounced block lost its processor, or its resolved
  // fault left it Resumable). Make the VProcs take it, no later than every
  // other scheduling turn of each, and wake an idle one. Any thread, maybe
  // in a signal handler: lock-free; never blocks.
  virtual void held_queued() noexcept = 0;
  // activation_held(a) runs on `a` itself (Held, already queued): wait with
  // wait_for_processor() and make the processor it gets current. Returns
  // once `a` may run user code again.
  virtual void activation_held(Activation& a) noexcept = 0;
};

struct ShimOptions {
  int processors = 0;            // processors to run; > 0
  bool pin = true;               // pin processor i to CPU cpus[i % cpus.size()]
  std::vector<int> cpus;         // OS CPU indices (from Topology)
  bool activations = false;      // ShimMode::on: replace blocked activations
  int spares = 2;                // spare activations started up front (activations mode)
  int max_activations = 0;       // 0: 4 * processors + 8
  bool use_perf = true;          // false: the fallback monitor even if perf works
  // Activations mode with pinned processors and perf: an idle runner per
  // CPU does the handoffs (design (i) above). SA_IDLE_RUNNERS=0 in the
  // environment of start() turns it off (A/B runs), =1 on where it is off
  // by default (TSan builds, shim.cpp).
  bool idle_runners = true;
};

// A histogram of latencies in power-of-two microsecond buckets:
// bucket i counts values in [2^(i-1), 2^i) µs (bucket 0: < 1 µs).
struct LatencyHistogram {
  static constexpr int kBuckets = 24;
  uint64_t buckets[kBuckets] = {};
  uint64_t count() const noexcept;
  // percentile() is the upper bound (µs) of the bucket holding the p-th
  // percentile (0 < p <= 100); 0 if empty.
  double percentile(double p) const noexcept;
};

struct ShimStats {
  bool activations = false;       // activations mode on
  bool perf = false;              // blocking seen through perf records (else the fallback)
  uint64_t processor_added = 0;   // upcalls
  uint64_t activation_blocked = 0;
  uint64_t activation_unblocked = 0;
  uint64_t calls = 0;             // enter_call()s
  uint64_t pool_exhausted = 0;    // blocked calls left holding their processor
  uint64_t held = 0;              // activations held after an unannounced block
  uint64_t held_asleep = 0;       // ... of which held still asleep in a resolved fault (Resumable)
  uint64_t resume_rewakes = 0;    // Resuming ones the hold signal did not wake (wake_resuming)
  LatencyHistogram held_window_us;  // woke (kernel record) -> held: user code beside the spare
  int activations_started = 0;    // kernel threads started so far
  int activations_high_water = 0;
  int running = 0;                // activations owning a processor now (I1: <= processors)
  LatencyHistogram handoff_us;    // block (kernel record) -> spare running the scheduler
  LatencyHistogram handoff_call_us;      // ... for blocks in announced calls (sa::blocking)
  LatencyHistogram handoff_detected_us;  // ... for unannounced blocks
  uint64_t preempted = 0;         // processor_preempted notices
  uint64_t donations = 0;         // processors donated to preempted spinlock holders
  uint64_t records_swept = 0;     // perf rings left unread for a sysmon sweep (block_monitor.hpp)
  // Handoffs (blocked or lost processors given away) by who saw the block:
  // the monitor (woken by a record), the sysmon (its sweep, when the
  // monitor had no CPU or no wake-up), a region's fault server (a uffd
  // message naming the faulter), the blocked CPU's idle runner.
  uint64_t handoffs_by_monitor = 0;
  uint64_t handoffs_by_sysmon = 0;
  uint64_t handoffs_by_fault_server = 0;
  uint64_t handoffs_by_runner = 0;  // the idle runner of the blocked CPU (design (i))
  uint64_t contended_spells = 0;    // times a runner's CPU turned contended (its streams went live)
  uint64_t runner_boosts = 0;       // runners lifted by the sysmon: starved inside a handoff
  uint64_t monitor_lifts = 0;       // the monitor's lifts of itself to normal class, to hand off
};

class BlockMonitor;

class Shim {
 public:
  Shim(ShimOptions options, UpcallHandler& handler);
  Shim(const Shim&) = delete;
  Shim& operator=(const Shim&) = delete;
  ~Shim();  // stops and joins everything (the runtime's loops must have returned)

  // start() starts one activation per processor (upcalling processor_added)
  // and, in activations mode, the spares and the monitor. Throws
  // std::system_error if a thread cannot start. Never blocks.
  void start();

  // stop() makes spares and activations returning to the pool exit, then
  // joins them all; blocks the calling kernel thread. Call after every
  // processor_added / activation_blocked upcall was made to return.
  void stop() noexcept;

  int processors() const noexcept { return options_.processors; }
  bool activations_mode() const noexcept { return options_.activations; }
  // cpu_of(vp) is the CPU processor `vp` is pinned to, or -1 when unpinned.
  int cpu_of(int vp) const noexcept;

  // Downcall: the calling activation starts a call that may block. Returns
  // false (and does nothing) outside activations mode or off an activation.
  // Never blocks.
  bool enter_call() noexcept;
  // Downcall: the call announced by enter_call() returned. If its processor
  // was given away meanwhile, upcalls activation_unblocked first (the
  // calling fiber then resumes later, maybe elsewhere).
  void exit_call() noexcept;

  // Downcall: processor `vp` has nothing to do. Parks the calling activation
  // (which must run `vp`) while `word` holds `idle_value`, until
  // wake_processor(vp), `deadline`, or (with `alt`) an event of alt's own.
  // May return early; callers re-check. Blocks the kernel thread: that is
  // its purpose.
  void this_processor_is_idle(int vp, const std::atomic<uint32_t>& word, uint32_t idle_value,
                              Clock::time_point deadline, IdleWait* alt = nullptr) noexcept;

  // Downcall: processor `vp` has work again; wakes its activation if it is
  // parked on `word` (the caller changed `word` first) or in `alt`. Never
  // blocks.
  void wake_processor(int vp, const std::atomic<uint32_t>& word, IdleWait* alt = nullptr) noexcept;

  // stats() reads the counters; never blocks the fibers (takes a short lock).
  ShimStats stats() const;

  // Downcalls bracketing runtime code run by a fiber (activations mode):
  // enter_runtime() moves the calling activation User -> Running so that a
  // block inside the runtime never hands its processor away; if the
  // activation is Lost it first holds until it has a processor again.
  // Returns true if the caller must call leave_runtime() (Running -> User).
  // Cheap: one load, and one CAS in activations mode. Never blocks unless
  // Lost. Inline (below): in plain mode (always Running) and in nested
  // runtime code it is a thread-local load, a load and a branch.
  static bool enter_runtime() noexcept;
  // leave_runtime() is called only when enter_runtime() returned true
  // (activations mode). Out of line on purpose: the caller may have
  // switched fibers and moved to another kernel thread since it entered,
  // and a call re-reads the thread's own activation.
  static void leave_runtime() noexcept;
  // to_user() marks the start of a fiber's own code (Running -> User) in
  // activations mode; no-op otherwise. Inline: the mode check.
  static void to_user() noexcept;

  // wait_for_processor() parks the Held calling activation `a` until
  // give_processor(); returns the processor, or -1 if the shim stops first
  // (the held code can never continue). Blocks the kernel thread.
  int wait_for_processor(Activation& a) noexcept;
  // give_processor() hands processor `vp` to held activation `a` (taken with
  // take_held()): futex-wakes a Held one, signals a Resumable one awake.
  // Called by the activation running `vp`, which becomes Leaving and must
  // leave its loop, or by the monitor for a processor whose activation is
  // blocked. Never blocks.
  void give_processor(Activation& a, int vp) noexcept;
  // hold() holds activation `a` (the caller): a Lost one joins the held
  // queue, a Resumable or Resuming one (queued by resume_faulted) is there
  // already; then it waits for a processor (activation_held). False if it
  // was in none of those states (must_hold()).
  bool hold(Activation& a) noexcept;
  // take_held(vp) removes and returns a held activation for processor `vp`,
  // or null: the longest-held, unless one of the next few was last pinned
  // to vp's CPU (it takes vp without a migration; the longest-held is
  // passed over at most twice). The caller then give_processor()s it.
  // Waits only for the held-queue lock, which no User activation holds.
  Activation* take_held(int vp) noexcept;
  // resume_faulted() resumes activation `tid`, asleep in a page fault that
  // its pager resolved without waking it (UFFDIO_COPY_MODE_DONTWAKE).
  //   - Lost, asleep (its run-state word says so) and `page` given: it
  //     stays asleep, Resumable, in the held queue; the VProc that takes it
  //     wakes it with the hold signal, and its handler takes the processor
  //     before the access is retried. One wake-up per fault instead of a
  //     wake-up to hold, a park and a wake-up to run. Returns `queued`: the
  //     caller must not wake it (UFFDIO_WAKE), or it would run beside the
  //     activation running its old processor until the monitor signals it.
  //     If the signal cannot wake it (its fiber blocked the hold signal),
  //     the sysmon wakes it on `page` a sweep or two later (wake_resuming);
  //     it then holds when it enters the runtime or unblocks the signal.
  //   - Otherwise the hold signal interrupts the fault wait now; a Lost
  //     activation holds in the handler before its next user instruction, a
  //     User one just retries the access. Returns `signalled`; the caller
  //     should still UFFDIO_WAKE the page, for a faulter whose signal mask
  //     blocks the hold signal.
  //   - `not_ours` (nothing done) if `tid` is not one of this shim's
  //     activations in activations mode: wake it with UFFDIO_WAKE.
  // Pass `page` only when no other thread waits on the same page (an
  // UFFDIO_WAKE for them would wake this one too). Never blocks.
  enum class FaultResume : uint8_t { not_ours, signalled, queued };
  struct FaultPage {
    int uffd;
    void* addr;
    size_t len;
  };
  FaultResume resume_faulted(int tid, const FaultPage* page = nullptr) noexcept;
  // wake_resuming() wakes Resuming activation `a` with UFFDIO_WAKE on the
  // page it sleeps on, for the sysmon when the hold signal has not woken it
  // for a sweep or more. A spurious wake-up of another sleeper there costs
  // it a retry of its access. Never blocks.
  void wake_resuming(Activation& a) noexcept;
  // donate() gives the calling activation's CPU to `holder`, which the
  // kernel preempted while its fiber holds a spinlock the caller waits for
  // (issue 5): it marks `holder` donated and pins it to the caller's CPU,
  // where the kernel migrates it at once; the caller should then stop using
  // its CPU (park its fiber, let its processor idle). False (nothing done)
  // outside activations mode, when processors are not pinned, or when the
  // caller is no activation. Never blocks.
  bool donate(Activation& holder) noexcept;
  // end_donation() pins `a` back to its own processor's CPU if a donation
  // moved it; the first caller after a donation does it. Any thread; never
  // blocks.
  void end_donation(Activation& a) noexcept;
  // pin_home() pins `a` to its own processor's CPU from any thread, again
  // if `a` changes processor meanwhile. Never blocks.
  void pin_home(Activation& a) noexcept;
  // request_safe_point() asks the activation running processor `vp` to reach
  // a safe point soon (processor revocation, issue 5): it tgkill()s it with
  // kSafePointSignal(), whose handler only sets the activation's
  // safepoint_requested flag (async-signal-safe; the interrupted code may be
  // in malloc or in a critical section). The runtime acts on the flag at its
  // next safe point. Any thread; never blocks.
  void request_safe_point(int vp) noexcept;
  static int kSafePointSignal() noexcept;
  // fault_seen() is the page-fault upcall's fast path (issue 6): a
  // userfaultfd message says thread `tid` sleeps in a fault since about
  // `at_ns`. If it is an activation running a fiber's own code (User) and
  // the kernel's run-state word says it sleeps, its processor goes to a
  // spare now (protocol steps 3-4), without waiting for the monitor, which
  // runs only on an idle CPU. False if nothing was handed off (the monitor
  // still may). Any thread, in runtime code; never blocks.
  bool fault_seen(int tid, int64_t at_ns) noexcept;
  // has_held() is true while a held activation waits; one load.
  bool has_held() const noexcept { return n_waiting_held_.load(std::memory_order_acquire) > 0; }

  // --- for the BlockMonitor ---
  // handoff() gives the processor of InCall or User activation `a` to a
  // spare (protocol steps 3-4); `blocked_at_ns` is when it blocked; `by`
  // says who saw the block (counted per caller in stats()). Returns false
  // if no spare is free yet but one is starting: call again soon. By the
  // fault server (Shim::fault_seen): only a User activation, only to a
  // spare (the held-taker branch would make the caller Leaving).
  enum class HandoffBy : uint8_t { monitor, sysmon, fault_server, runner };
  bool handoff(Activation& a, int64_t blocked_at_ns, HandoffBy by = HandoffBy::monitor) noexcept;
  // restock() refills the runners' reserves from the pool and starts a
  // spare activation if none is free, none is starting and the limit
  // allows (the sysmon, after a runner's handoffs). Takes the pool lock;
  // never blocks otherwise.
  void restock() noexcept;
  // runners_on() is true when idle runners do the handoffs (fixed by
  // start(), before any activation runs).
  bool runners_on() const noexcept { return runners_on_; }
  // stream_live_for(vp) says whether an activation running processor `vp`
  // keeps its monitor stream live. Not while `vp`'s idle runner watches it
  // (a waking record costs an irq_work); again while the sysmon finds the
  // CPU contended (set_cpu_contended), where the runner starves and the
  // monitor, on another CPU, is the faster eye. One load.
  bool stream_live_for(int vp) const noexcept {
    return !runners_on_ || vp < 0 || vp >= options_.processors ||
           live_by_vp_[static_cast<size_t>(vp)].load(std::memory_order_relaxed);
  }
  // sync_stream() brings `a`'s stream where its state wants it: live if it
  // must hold (its wake-up must reach the monitor, step 6), as
  // stream_live_for() says if it owns a processor, untouched otherwise.
  // The state is read under the stream's flag: a handoff that makes `a`
  // Lost and then syncs cannot be undone by an older look. Any thread.
  void sync_stream(Activation& a) noexcept;
  // check_stream() is the owner's own look (at each return to fiber code
  // and each announced call), in Running: sync_stream() if its stream is
  // not as its processor wants. Two loads when it is.
  void check_stream(Activation& a) noexcept {
    if (runners_on_ && a.stream_live() != stream_live_for(a.vproc.load(std::memory_order_relaxed))) sync_stream(a);
  }
  // set_cpu_contended() (the sysmon) switches the streams of the
  // processors pinned to `cpu` live (true) or back to their runner, and
  // syncs the activations running them now.
  void set_cpu_contended(int cpu, bool contended) noexcept;
  // for_each_activation() visits every started activation, without a lock
  // (the monitor calls it at the idle class, where it must hold none). For
  // the monitor thread, or any caller that stop() cannot race: activations
  // are published in slots_ once started and freed only by stop(), after it
  // has stopped the monitor.
  template <class F>
  void for_each_activation(F f) const {
    const int n = n_slots_.load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i) f(*slots_[static_cast<size_t>(i)].load(std::memory_order_acquire));
  }

 private:
  friend struct ShimTestAccess;  // tests/kernel_shim/held_queue_test.cpp: the held queue alone

  // PoolLock holds lock_ as runtime code (enter_runtime). A fiber's own
  // code (User) that blocked while holding it would be made Lost and then
  // held with it (step 7); the fibers on the other VProcs, waiting for it in
  // the kernel, would keep their processors, and no VProc would be left to
  // hand the held one a processor. Runtime code is never handed off.
  class Section {  // runtime code, like the runtime's RuntimeSection
   public:
    Section() noexcept : entered_(enter_runtime()) {}
    ~Section() {
      if (entered_) leave_runtime();
    }
    Section(const Section&) = delete;
    Section& operator=(const Section&) = delete;

   private:
    bool entered_;
  };
  class PoolLock {
   public:
    explicit PoolLock(std::mutex& m) noexcept : lock_(m) {}

   private:
    Section section_;  // declared first: entered before the lock, left after
    std::lock_guard<std::mutex> lock_;
  };

  enum JobKind : uint32_t { kNone = 0, kAdded = 1, kTakeOver = 2, kExit = 3, kResume = 4 };
  static uint32_t make_job(JobKind k, int vp) noexcept { return static_cast<uint32_t>(k) | static_cast<uint32_t>(vp) << 3; }
  static JobKind kind_of(uint32_t job) noexcept { return static_cast<JobKind>(job & 7); }
  static int vp_of(uint32_t job) noexcept { return static_cast<int>(job >> 3); }

  void run(Activation& a) noexcept;  // an activation's life
  // handoff(), exclusive; sets `taker` to the spare for handoff() to wake.
  bool handoff_locked(Activation& a, int64_t blocked_at_ns, HandoffBy by, Activation*& taker) noexcept;
  Activation* start_activation(uint32_t job);  // under lock_
  // take_spare() pops a spare, preferably one last pinned to `cpu`; a
  // runner's reserve when the list is empty.
  Activation* take_spare(int cpu) noexcept;
  // take_reserve() / put_back_reserve() are a runner's lock-free pop and
  // push of the reserve of `vp`'s runner (put_back: false if it was filled
  // meanwhile). fill_reserves() moves spares from the list into the empty
  // reserves; under lock_.
  Activation* take_reserve(int vp) noexcept;
  bool put_back_reserve(int vp, Activation& s) noexcept;
  void fill_reserves() noexcept;
  // lost_handed_off() makes a just-Lost activation's wake-up reach the
  // monitor (its stream live) and signals it if it runs already or was
  // signalled in vain (`was_signalled`); nothing if its state word is no
  // longer `lost_word` (it held meanwhile). Called by handoff() or, after a
  // runner's handoff, by the taker (see handoff_locked).
  void lost_handed_off(Activation& a, uint32_t lost_word, bool was_signalled) noexcept;
  Activation* held_front() noexcept;  // under held_lock_: the longest-held, not removed
  void pop_held() noexcept;           // under held_lock_: removes held_front()
  void return_spare(Activation& a) noexcept;
  void push_held(Activation& a) noexcept;  // onto held_incoming_; lock-free
  // find() is the activation with kernel thread id `tid`, or null. It stays
  // valid: activations are freed only by stop().
  Activation* find(int tid) const noexcept;
  void record_handoff(int64_t blocked_at_ns, bool call) noexcept;
  static void install_hold_handler();

  // Idle runners (design (i)): one per CPU that a processor is pinned to.
  struct Runner {
    int cpu = -1;
    std::atomic<uint32_t> armed{1};  // futex: 0 while it sleeps (no processor of its CPU busy)
    // A spare set aside for this CPU's handoffs: the runner takes it (and
    // puts it back, unused) with one atomic operation, never the pool lock.
    // Filled under the pool lock (return_spare, restock); take_spare()
    // empties it when the pool's list is dry.
    std::atomic<Activation*> reserve{nullptr};
    std::atomic<int> tid{0};           // its kernel thread, once started
    std::atomic<uint32_t> boosts{0};   // times the sysmon lifted it (boost_runner)
    std::thread thread;
  };
  // boost_runner() lifts `vp`'s runner to SCHED_OTHER: the sysmon found it
  // in a handoff (Activation::in_handoff) of a block it left for
  // kRunnerGraceNs, preempted there and starved of its CPU (a SCHED_IDLE
  // thread beside a CPU-bound one waits up to seconds), while the handoff
  // it holds keeps the sysmon and the monitor out. The runner goes back to
  // SCHED_IDLE at the top of its next pass.
  void boost_runner(int vp) noexcept;
  void start_runners();
  // NormalClassWhileRunner lifts a runner's thread (HandoffBy::runner) to
  // SCHED_OTHER for its lifetime: around the rare handoffs without a free
  // spare, which hold the held-queue lock or the pool lock (across a
  // thread's creation). No-op for other callers.
  class NormalClassWhileRunner {
   public:
    explicit NormalClassWhileRunner(HandoffBy by) noexcept;
    ~NormalClassWhileRunner();
    NormalClassWhileRunner(const NormalClassWhileRunner&) = delete;
    NormalClassWhileRunner& operator=(const NormalClassWhileRunner&) = delete;

   private:
    bool lifted_ = false;
  };
  void stop_runners() noexcept;
  void run_runner(Runner& r) noexcept;
  // A runner's look at its CPU's activations: hands off the blocked ones,
  // and says what the runner does next (RunnerLook). It stands down on a
  // contended CPU: there it would get a CPU only in scraps, and a scrap may
  // end while it holds the pool lock, which the monitor then waits for (a
  // SCHED_IDLE holder beside a hog: up to tens of ms).
  struct Tried {  // a runner's handoff tries of one activation's last block
    int64_t since = 0;
    int tries = 0;
    bool done = false;
  };
  static constexpr int kMaxTries = 64;
  enum class RunnerLook {
    idle,    // none of its CPU's activations owns a processor it watches: sleep until arm_runner()
    busy,    // one does, on a CPU or preempted (or just blocked): stay runnable
    asleep,  // the only ones that do have slept in the kernel for kRunnerNapAfterNs where the
             // runner leaves them (runtime code, or a block the pool had no spare for): nap
  };
  static constexpr int64_t kRunnerNapAfterNs = 200'000;
  RunnerLook runner_pass(Runner& r, std::vector<Tried>& tried) noexcept;
 public:
  // arm_runner(vp) wakes the runner of `vp`'s CPU if it sleeps; called by an
  // activation that starts to own `vp` (after its state says so). One load
  // when the runner is awake. Never blocks.
  void arm_runner(int vp) noexcept {
    if (!runners_on_ || vp < 0 || vp >= static_cast<int>(runner_of_vp_.size()) || stream_live_for(vp)) return;
    Runner* r = runner_of_vp_[static_cast<size_t>(vp)];
    // seq_cst fence: our new state before the runner's word (Dekker with
    // run_runner, which clears the word before it looks at the states).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (r && r->armed.load(std::memory_order_relaxed) == 0 && r->armed.exchange(1) == 0) futex_wake(r->armed, 1);
  }

 private:

 public:
  // kHoldSignal() is the signal that makes a woken Lost activation hold.
  static int kHoldSignal() noexcept;

 private:

  ShimOptions options_;
  UpcallHandler& handler_;
  std::unique_ptr<BlockMonitor> monitor_;
  bool runners_on_ = false;                   // set by start() before any thread reads it
  // stream_live_for(), by processor. Relaxed: the sysmon stores it, then
  // syncs each owner under that owner's stream lock; an activation that
  // starts to own a processor meanwhile and reads the old value is put
  // right at its next check_stream() (its next return to fiber code), and
  // until then the sysmon's sweep still sees its blocks (run-state word).
  std::unique_ptr<std::atomic<bool>[]> live_by_vp_;
  std::vector<std::unique_ptr<Runner>> runners_;
  std::vector<Runner*> runner_of_vp_;         // by processor (fixed by start())
  // Every started activation, for the runners to read without lock_:
  // slots_[0, n_slots_) (release-published by start_activation).
  std::unique_ptr<std::atomic<Activation*>[]> slots_;
  std::atomic<int> n_slots_{0};

  mutable std::mutex lock_;                   // guards all_, spares_
  std::vector<std::unique_ptr<Activation>> all_;
  Activation* spares_ = nullptr;              // intrusive stack (Activation::next_spare)
  // Held activations waiting for a processor, linked through
  // Activation::next_held. hold() runs in a signal handler that may have
  // interrupted malloc or a holder of lock_, so it allocates nothing and
  // takes no lock: it pushes onto held_incoming_ (a Treiber stack; a push
  // alone has no ABA problem). Takers, always runtime code or the monitor
  // (never a User activation, so never a hold() caller's interrupted code),
  // move the stack, in push order, to the FIFO under held_lock_ when it is
  // empty, and take from its head.
  std::atomic<Activation*> held_incoming_{nullptr};
  std::mutex held_lock_;
  Activation* held_head_ = nullptr;           // the FIFO, guarded by held_lock_
  std::atomic<int> n_waiting_held_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<int> starting_{0};             // started, not yet in the pool
  std::atomic<bool> warned_exhausted_{false};

  std::atomic<uint64_t> n_added_{0}, n_blocked_{0}, n_unblocked_{0}, n_calls_{0}, n_exhausted_{0}, n_held_{0},
      n_held_asleep_{0}, n_resume_rewakes_{0};
  std::atomic<uint64_t> n_handoffs_by_[4] = {};  // by HandoffBy
  std::atomic<uint64_t> held_buckets_[LatencyHistogram::kBuckets] = {};
  std::atomic<int> high_water_{0};
  std::atomic<uint64_t> handoff_buckets_[LatencyHistogram::kBuckets] = {};
  std::atomic<uint64_t> call_buckets_[LatencyHistogram::kBuckets] = {};
  std::atomic<uint64_t> detected_buckets_[LatencyHistogram::kBuckets] = {};
  std::atomic<uint64_t> n_preempted_{0};
  std::atomic<uint64_t> n_contended_{0};
  std::atomic<uint64_t> n_donations_{0};

 public:
  // preempted() is called by the monitor for each preemption record of an
  // activation that owns processor `vp`; it notifies the handler.
  void preempted(Activation& a) noexcept;

 private:
};

inline bool Shim::enter_runtime() noexcept {
  Activation* a = Activation::current();
  if (!a) return false;
  for (;;) {
    const ActivationState s = a->state();
    if (s == ActivationState::User) {
      // The monitor may move us to Lost meanwhile: then loop and hold.
      if (a->try_state(ActivationState::User, ActivationState::Running)) return true;
      continue;
    }
    if (!must_hold(s)) return false;  // already in the runtime (or plain mode)
    if (a->shim->hold(*a)) {
      a->set_state(ActivationState::Held, ActivationState::Running);
      a->shim->arm_runner(a->vproc.load(std::memory_order_relaxed));
      return true;
    }
  }
}

inline void Shim::to_user() noexcept {
  Activation* a = Activation::current();
  if (a && a->shim && a->shim->options_.activations) {
    a->shim->check_stream(*a);  // in Running: never handed off meanwhile
    a->set_state(ActivationState::Running, ActivationState::User);
  }
}

}  // namespace sa::shim
