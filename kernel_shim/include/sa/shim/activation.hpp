#pragma once
// Activation: a kernel thread executing on behalf of a processor.
//
// States (each says where the activation is and what owns its stack):
//   Starting -> Running <-> Idle -> Running ... -> Exited
//   - Starting: created, not yet inside processor_added; in no queue.
//   - Running:  executing user code for its processor (fibers and the
//               scheduler loop); it owns the processor.
//   - Idle:     parked on a futex in this_processor_is_idle; the processor is
//               free for other processes.
//   - Exited:   processor_added returned; the thread is finishing or joined.
// Transitions go through set_state(), which checks the old state.

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>

namespace sa::shim {

enum class ActivationState : uint8_t { Starting, Running, Idle, Exited };

const char* to_string(ActivationState s) noexcept;

class Activation {
 public:
  // Starts a kernel thread that pins itself to `cpu` (unless -1), installs an
  // alternate signal stack (stack overflow reports run on it) and calls
  // body(). Throws std::system_error when the thread cannot be created.
  Activation(int vp, int cpu, std::function<void()> body);
  Activation(const Activation&) = delete;
  Activation& operator=(const Activation&) = delete;
  ~Activation();  // joins the thread

  int vproc() const noexcept { return vp_; }
  int cpu() const noexcept { return cpu_; }
  ActivationState state() const noexcept { return state_.load(std::memory_order_acquire); }

  // set_state() moves from `from` to `to`; aborts with a message if the
  // activation was not in `from` (a shim bug, never a user error).
  void set_state(ActivationState from, ActivationState to) noexcept;

  // join() waits for the thread to exit; blocks the kernel thread.
  void join() noexcept;

  // current() is the activation the calling kernel thread is, or nullptr.
  static Activation* current() noexcept;

 private:
  void main();

  int vp_;
  int cpu_;
  std::function<void()> body_;
  std::atomic<ActivationState> state_{ActivationState::Starting};
  std::thread thread_;
};

}  // namespace sa::shim
