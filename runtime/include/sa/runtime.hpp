#pragma once
// sa::Runtime: the handle that owns the VProcs, their activations and every
// fiber's resources. There is no hidden global runtime: fibers reach theirs
// through the VProc that runs them; other threads use this handle.
//
// Life cycle: the constructor starts one VProc per CPU (each pinned, on an
// activation from the kernel shim); they sleep until there is work. run(main)
// runs a main fiber and returns when it ends. The destructor stops the VProcs
// and joins their activations. Fibers still alive then (parked forever, or
// never joined and still running) are a programming error: the destructor
// waits briefly for fibers that are finishing, then prints how many are alive
// and aborts, rather than hang or free stacks that are in use.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <sa/fiber.hpp>

namespace sa {

namespace detail {
class RuntimeCore;
}

enum class ShimMode {
  off,  // plain M:N: one kernel thread per VProc, no upcalls (the baseline)
  on,   // scheduler activations: blocked fibers do not cost their processor
};

struct Options {
  // Number of VProcs; 0 = one per CPU in the process's affinity mask (cpuset).
  // More than that is allowed (they share CPUs round-robin; useful in tests).
  int vprocs = 0;
  ShimMode shim = ShimMode::off;
  // Pin each VProc's activation to one CPU. false lets the kernel place
  // them: better when other busy processes share the CPUs, since a pinned
  // VProc cannot leave a CPU that one of them holds (bench/run echo, whose
  // client shares the server's CPUs: bench/README.md, "Echo: pinning").
  bool pin = true;
  // Usable bytes per fiber stack (a guard page is added below).
  std::size_t stack_size = 128 * 1024;
  // ShimMode::on: the most activations (kernel threads) ever started, spares
  // included; 0 = 4 * vprocs + 8. Past it a blocked call keeps its VProc.
  int max_activations = 0;
  // ShimMode::on: see blocking through perf switch records; false forces
  // the /proc fallback monitor (also used when perf_event_open is refused).
  bool use_perf = true;
  // Cooperative time slices; 0 = off. A fiber that has run this long
  // without a switch while other fibers wait for its VProc is asked to
  // yield, and does at its next sa::this_fiber::maybe_yield() (Seastar's
  // model: its task quota is 0.5 ms; Go preempts after 10 ms). Only there:
  // a loop that never calls it keeps its VProc, since C++ code cannot be
  // stopped at an arbitrary instruction safely (it may hold a libc lock,
  // or a runtime-internal one around a call into user code). Waits, yields
  // and sa::io calls with other fibers ready switch anyway. Costs a thread
  // that wakes once per slice while the runtime lives, busy or idle.
  std::chrono::microseconds time_slice{0};
};

// Counters of one VProc since the runtime started.
struct VProcStats {
  int cpu = -1;               // CPU it is pinned to, -1 if not pinned
  uint64_t switches = 0;      // context switches into a fiber or the loop
  uint64_t spawns = 0;        // fibers spawned by fibers running here
  uint64_t steals = 0;        // fibers taken from other VProcs' run queues
  uint64_t fibers_run = 0;    // fibers taken from a queue and run
  uint64_t fiber_parks = 0;   // fibers that waited (sync, sleep, join)
  uint64_t fiber_wakes = 0;   // fibers readied onto this VProc
  uint64_t spin_wakeups = 0;  // waits of bound fibers (Channel, Mutex, CondVar, ...) woken while they spun before parking: no switch
  uint64_t idle_sleeps = 0;   // times the VProc slept in the kernel
  uint64_t idle_wakeups = 0;  // times it was woken for new work
  uint64_t preemptions = 0;   // ShimMode::on: kernel preemptions of its activation seen
  uint64_t spin_recoveries = 0;  // sa::Spinlock waiters that stopped spinning: holder not on a CPU
  uint64_t spin_donations = 0;   // ... and gave the holder their CPU
  uint64_t slice_marks = 0;      // time slices that ran out while other fibers waited (Options::time_slice)
  uint64_t slice_yields = 0;     // yields at a safe point (maybe_yield) because a time slice ran out
  bool revoked_and_stood_down = false;  // revoke_processor(): it runs no fibers now
};

// What the kernel shim did (ShimMode::on; zeros but processor_added otherwise).
struct ShimStats {
  bool perf = false;               // blocking seen through perf records (else /proc)
  uint64_t processor_added = 0;    // upcalls, by kind
  uint64_t activation_blocked = 0;
  uint64_t activation_unblocked = 0;
  uint64_t blocking_calls = 0;     // sa::blocking calls announced to the shim
  uint64_t pool_exhausted = 0;     // blocked calls that kept their VProc: no spare left
  int activations_started = 0;     // kernel threads started (processors + spares)
  int activations_high_water = 0;
  int activations_running = 0;     // running user code now (I1: <= vprocs)
  uint64_t handoffs = 0;           // measured handoffs (= activation_blocked)
  double handoff_p50_us = 0;       // block -> spare running the VProc, bucket upper bounds
  double handoff_p99_us = 0;
  double handoff_call_p50_us = 0;      // ... for blocks in sa::blocking calls
  double handoff_call_p99_us = 0;
  double handoff_detected_p50_us = 0;  // ... for unannounced blocks
  double handoff_detected_p99_us = 0;
  uint64_t processor_preempted = 0;    // notices of kernel preemption
  uint64_t donations = 0;              // CPUs donated to preempted spinlock holders
  uint64_t held = 0;               // activations held after an unannounced block
  uint64_t held_asleep = 0;        // ... of which held still asleep in a resolved page fault
  uint64_t resume_rewakes = 0;     // ... that the hold signal could not wake (their fiber blocked it)
  double held_window_p50_us = 0;   // woke -> held: user code beside the spare (I1 window)
  double held_window_p99_us = 0;
  uint64_t records_swept = 0;      // perf rings whose records the monitor left unread for the sysmon's 1 ms sweep
                                   // (their wake-up never came, or the monitor had no CPU)
  uint64_t handoffs_by_monitor = 0;       // handoffs by who saw the block: the block monitor (a perf record),
  uint64_t handoffs_by_sysmon = 0;        // the sysmon's sweep (the monitor had no CPU, or no wake-up),
  uint64_t handoffs_by_fault_server = 0;  // a PagedRegion's fault server (a uffd message),
  uint64_t handoffs_by_runner = 0;        // the idle runner of the CPU the block vacated
  uint64_t contended_spells = 0;  // times a CPU turned contended: its runner stood down for the monitor
  uint64_t runner_boosts = 0;     // idle runners the sysmon lifted to normal class: starved inside a handoff
  uint64_t monitor_lifts = 0;     // times the monitor (idle class) lifted itself to normal class to hand off
};

struct Stats {
  std::vector<VProcStats> vprocs;
  ShimStats shim;
  uint64_t fibers_spawned = 0;
  int64_t fibers_live = 0;  // spawned and not finished
  // total() sums the counters over the VProcs.
  VProcStats total() const noexcept;
};

class Runtime {
 public:
  // Starts the VProcs (and, with ShimMode::on, spare activations and the
  // block monitor). Throws std::invalid_argument for bad options and
  // std::system_error when a thread, a mapping or hwloc fails.
  explicit Runtime(Options options = {});
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;
  ~Runtime();

  // run() runs `main` as a fiber and returns when it ends, rethrowing what
  // it threw. Blocks the calling kernel thread, which must not be a fiber
  // (std::logic_error).
  template <class F>
  void run(F&& main) {
    check_outside("sa::Runtime::run");
    Fiber f = spawn(std::forward<F>(main));
    f.join();
  }

  // spawn() starts a fiber from any thread, inside the runtime or not.
  // Never blocks.
  template <class F, class... A>
  Fiber spawn(F&& f, A&&... args) {
    return spawn(SpawnOptions{}, std::forward<F>(f), std::forward<A>(args)...);
  }
  template <class F, class... A>
  Fiber spawn(SpawnOptions options, F&& f, A&&... args) {
    return detail::wrap(
        detail::launch(*core_, options, detail::make_fiber(std::forward<F>(f), std::forward<A>(args)...)));
  }

  // vprocs() is the number of VProcs.
  int vprocs() const noexcept;
  // revoke_processor() takes VProc `vp` away, as the kernel takes a processor
  // from a process under multiprogramming: the fiber running there goes on
  // until its next safe point (a call into the runtime, or the end of its
  // outermost sa::Spinlock critical section; a signal sets the flag it
  // checks, so code in malloc or in a critical section is never
  // interrupted), then the VProc runs no fibers: its queued fibers, expired
  // timers and I/O completions go to the other VProcs (fibers bound to it
  // wait for restore_processor()). Returns true once it stood down, false if
  // `timeout` passed first (it still stands down at its safe point). Call it
  // from outside the runtime (std::logic_error otherwise); blocks the
  // calling thread up to `timeout`. std::out_of_range for a bad `vp`.
  bool revoke_processor(int vp, std::chrono::milliseconds timeout = std::chrono::seconds(1));
  // restore_processor() gives VProc `vp` back; any thread, never blocks.
  void restore_processor(int vp);
  // stats() reads every VProc's counters (each one is exact, the set is not
  // one instant). Never blocks.
  Stats stats() const;

 private:
  static void check_outside(const char* what);
  std::unique_ptr<detail::RuntimeCore> core_;
};

}  // namespace sa
