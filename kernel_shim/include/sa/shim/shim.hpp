#pragma once
// The kernel shim: the kernel half of scheduler activations, in user space.
//
// Concepts (DESIGN.md, "Vocabulary"):
//   - A *processor* is a CPU granted to the process; the runtime runs one
//     VProc on each. The shim knows processors by index, never fibers.
//   - An *Activation* is a kernel thread executing on behalf of a processor.
//   - The shim tells the scheduler what happens to its processors through
//     *upcalls* (UpcallHandler) and takes requests through *downcalls*
//     (this_processor_is_idle, wake_processor).
//
// What exists today (ShimMode::off, plain M:N): one activation per processor,
// pinned to its CPU, started with the processor_added upcall and running the
// scheduler until it returns. An idle processor parks its activation on a
// futex through this_processor_is_idle; wake_processor hands it back. The
// blocked / unblocked / preempted upcalls, spare activations and the perf and
// userfaultfd detectors come with the kernel_shim and preemption issues and
// plug in here: the runtime already reaches the kernel only through this
// header.
//
// Invariant I1 (no oversubscription) holds trivially in this mode: exactly one
// activation per processor ever executes user code.
//
// Rejected: letting the runtime create its own threads and call futex
// directly. Every later mechanism (spare activations taking over a processor,
// holding a woken activation until a processor is free) needs the one place
// that knows which kernel thread carries which processor, so that place is
// here from the start.

#include <atomic>
#include <cstdint>
#include <memory>
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

// The scheduler's side of the upcalls.
class UpcallHandler {
 public:
  virtual ~UpcallHandler() = default;
  // processor_added(vp) runs processor `vp` on the calling activation; the
  // activation exits when it returns. Called once per processor at start-up.
  virtual void processor_added(int vp) noexcept = 0;
};

struct ShimOptions {
  int processors = 0;           // processors to run; > 0
  bool pin = true;              // pin processor i to CPU cpus()[i % cpus().size()]
  std::vector<int> cpus;        // OS CPU indices (from Topology)
};

class Shim {
 public:
  Shim(ShimOptions options, UpcallHandler& handler);
  Shim(const Shim&) = delete;
  Shim& operator=(const Shim&) = delete;
  ~Shim();  // joins the activations (start() callers must make them return first)

  // start() starts one activation per processor, each upcalling
  // processor_added(vp). Throws std::system_error if a thread cannot start
  // (the ones started are joined first). Never blocks.
  void start();

  // join() waits for every activation to exit; blocks the calling kernel thread.
  void join() noexcept;

  int processors() const noexcept { return options_.processors; }
  // cpu_of(vp) is the CPU processor `vp` is pinned to, or -1 when unpinned.
  int cpu_of(int vp) const noexcept;

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

 private:
  ShimOptions options_;
  UpcallHandler& handler_;
  std::vector<std::unique_ptr<Activation>> activations_;
};

}  // namespace sa::shim
