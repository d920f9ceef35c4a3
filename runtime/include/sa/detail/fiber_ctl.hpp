#pragma once
// FiberCtl: the control block of one fiber, shared by its sa::Fiber handle and
// the scheduler. Allocated once at spawn (it holds the callable); the stack is
// taken from the running VProc's cache only when the fiber first runs, so a
// fiber that is spawned but has not run yet costs no stack and no mapping.
//
// States (FiberState): each says which queue holds the fiber and who owns its
// stack. Changes go through FiberCtl::set_state(), which checks the old state.
//
//   New ----> Ready ----> Running ----> Done
//              ^            |  |
//              |            |  +--> Ready (yield)
//              +-- Parked <-+

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include <boost/context/detail/fcontext.hpp>

#include <sa/detail/spin_lock.hpp>

namespace sa::detail {

class VProc;
struct Waiter;
struct FlsTable;
class RuntimeCore;

enum class FiberState : uint8_t {
  New,      // spawned, in a ready queue, never run; no stack yet
  Ready,    // in a ready queue (run queue, inbox or global); the queue owns it, its stack is idle
  Running,  // executing on a VProc; that VProc's activation owns the stack
  Parked,   // in a wait list or a timer heap; the waker owns it, its stack is idle
  Done,     // returned; its stack is back in a cache; only handles keep the block
};

const char* to_string(FiberState s) noexcept;

// A stack with a guard page at its lowest address: [base, base + page) is
// PROT_NONE, the fiber uses [base + page, base + size).
struct Stack {
  void* base = nullptr;
  std::size_t size = 0;
};

// Intrusive link for the singly linked queues (global queue, VProc inbox).
struct QueueHook {
  std::atomic<QueueHook*> next{nullptr};
};

struct FiberCtl : QueueHook {
  FiberCtl() = default;
  FiberCtl(const FiberCtl&) = delete;
  FiberCtl& operator=(const FiberCtl&) = delete;
  virtual ~FiberCtl() = default;

  // invoke() runs the fiber's function on its own stack; the callable is
  // destroyed before invoke() returns.
  virtual void invoke() = 0;

  // set_state() moves from `from` to `to`; aborts with a message naming the
  // fiber if it was elsewhere (a runtime bug, never a user error).
  void set_state(FiberState from, FiberState to) noexcept {
    FiberState seen = state.load(std::memory_order_relaxed);
    if (seen != from) bad_state(from, to, seen);
    // relaxed: the state is handed between threads together with the fiber
    // itself, through queues and locks that order it.
    state.store(to, std::memory_order_relaxed);
  }
  [[noreturn]] void bad_state(FiberState from, FiberState to, FiberState seen) const noexcept;

  // --- scheduling (owned by whoever owns the fiber per its state) ---
  boost::context::detail::fcontext_t ctx = nullptr;  // saved context; null before the first run
  Stack stack;
  std::atomic<FiberState> state{FiberState::New};
  VProc* home = nullptr;  // set for a bound fiber: it only ever runs there
  RuntimeCore* core = nullptr;
  uint64_t id = 0;

  // --- completion and handles ---
  std::atomic<uint32_t> refs{2};  // the handle and the execution
  SpinLock join_lock;             // guards joiner, detached and done
  Waiter* joiner = nullptr;
  bool detached = false;
  std::atomic<uint32_t> done{0};  // 1 once finished
  std::exception_ptr error;       // what the function threw, for join()

  // --- fiber-local storage, created on first use ---
  FlsTable* fls = nullptr;

  // --- sanitizer bookkeeping ---
  const void* stack_bottom = nullptr;  // the usable stack, for ASan
  std::size_t stack_usable = 0;
  void* asan_fake_stack = nullptr;
  void* tsan_fiber = nullptr;
};

// release_ref() drops one reference; the last one deletes the block.
inline void release_ref(FiberCtl* f) noexcept {
  // acq_rel: the deleting thread sees every write made under other references.
  if (f->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete f;
}

// FiberBox<F>: a FiberCtl that carries a callable of type F.
template <class F>
struct FiberBox final : FiberCtl {
  explicit FiberBox(F&& f) : fn(std::move(f)), has_fn(true) {}
  ~FiberBox() override {
    if (has_fn) fn.~F();
  }
  void invoke() override {
    // Move the callable onto the fiber's stack so its captures die before
    // the fiber reports completion (a joiner may rely on that).
    F local(std::move(fn));
    fn.~F();
    has_fn = false;
    local();
  }
  union {
    F fn;
  };
  bool has_fn;
};

}  // namespace sa::detail
