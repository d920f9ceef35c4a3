#pragma once
// RunStateWord: whether an activation is on a CPU right now, readable by any
// thread with a few loads (the role of the kernel's vcpu_is_preempted() for
// guest spinlocks, issue 5).
//
// The kernel keeps the word for us: each activation opens a second perf
// context-switch event on itself (the same PERF_COUNT_SW_DUMMY,
// context_switch=1 as the BlockMonitor's) and maps its ring buffer read-only,
// which puts it in overwrite mode: the kernel writes a PERF_RECORD_SWITCH at
// every switch of the thread, synchronously inside the context switch, never
// waits for a reader, and advances data_head. Every record of this event has
// the same 16 bytes (header + CLOCK_MONOTONIC time), so the last one starts
// at data_head - 16 and says what the thread did last:
//   - switched in                           -> Running
//   - switched out, SWITCH_OUT_PREEMPT set   -> Preempted (runnable, no CPU)
//   - switched out otherwise                 -> Sleeping (blocked in the kernel)
// A reader loads data_head (acquire; the kernel publishes it after the
// record), copies the record, and loads data_head again: if it moved, a newer
// switch happened and it reads again (a seqlock with the kernel as writer).
//
// Rejected: (a) the monitor thread keeping an atomic word from the records it
// drains: it runs under SCHED_IDLE, so under the very CPU contention that
// preempts activations it hardly runs and the word would be stale for whole
// time slices. (b) Peeking at the BlockMonitor's own ring: it is writable (so
// not in overwrite mode), may hold records of other kinds (PERF_RECORD_LOST),
// and its reader advances its tail.

#include <cstdint>
#include <memory>

namespace sa::shim {

enum class CpuState : uint8_t {
  Unknown,    // no record yet, or perf refused: assume it runs
  Running,    // on a CPU
  Preempted,  // runnable, but the kernel gave its CPU to another thread
  Sleeping,   // blocked in the kernel
};

const char* to_string(CpuState s) noexcept;

class RunStateWord {
 public:
  // open_for_this_thread() starts keeping the calling thread's word; null if
  // perf_event_open or mmap is refused (callers then assume Running).
  static std::unique_ptr<RunStateWord> open_for_this_thread() noexcept;
  RunStateWord(const RunStateWord&) = delete;
  RunStateWord& operator=(const RunStateWord&) = delete;
  ~RunStateWord();  // unmaps the ring and closes the event

  // read() is the watched thread's state at its last switch; any thread,
  // never blocks. `since_ns`, if given, gets that switch's CLOCK_MONOTONIC
  // time (0 if Unknown).
  CpuState read(int64_t* since_ns = nullptr) const noexcept;
  // longest_preemption() is the longest time the thread spent preempted
  // (switched out with SWITCH_OUT_PREEMPT until switched in, or until
  // `now_ns` if still out) among the records written since `cursor`, which
  // it advances; 0 if none. Records the kernel overwrote meanwhile are
  // skipped. One reader per cursor; never blocks.
  int64_t longest_preemption(uint64_t& cursor, int64_t now_ns) const noexcept;

 private:
  RunStateWord(int fd, void* ring, size_t len) noexcept : fd_(fd), ring_(ring), len_(len) {}
  int fd_;
  void* ring_;
  size_t len_;
};

}  // namespace sa::shim
