#pragma once
// sa::Fiber: the handle of a user-level thread, and sa::spawn.
//
// A fiber runs its function on its own stack (taken from a pool when it first
// runs, with a guard page) on one of the runtime's VProcs; it may move between
// VProcs when it waits or yields unless it is bound to one (SpawnOptions).
//
// A handle works like std::thread: join() waits for the fiber and rethrows
// what it threw; detach() lets it run on its own. Destroying (or assigning
// over) a handle that is still joinable is a programming error: it prints
// "sa: fiber <id> destroyed while joinable" and calls std::terminate, as
// std::thread and Boost.Fiber do, because silently detaching would lose the
// fiber's exception and silently joining would hide a wait in a destructor.
// A detached fiber that throws prints the exception and its id, then
// std::terminate (a goroutine that panics ends the program too).

#include <concepts>
#include <cstdint>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>

#include <sa/detail/fiber_ctl.hpp>

namespace sa {

class Runtime;
class Fiber;
using FiberId = uint64_t;

namespace detail {
Fiber wrap(FiberCtl* ctl) noexcept;
}

struct SpawnOptions {
  // -1: any VProc; the fiber may be stolen and migrate. i >= 0: bound to VProc
  // i: it always runs there and is never stolen (Seastar-style sharding).
  int vproc = -1;
};

class Fiber {
 public:
  Fiber() noexcept = default;
  Fiber(Fiber&& other) noexcept : ctl_(std::exchange(other.ctl_, nullptr)) {}
  Fiber& operator=(Fiber&& other) noexcept {
    if (ctl_) abandoned();
    ctl_ = std::exchange(other.ctl_, nullptr);
    return *this;
  }
  ~Fiber() {
    if (ctl_) abandoned();
  }

  // joinable() is true until join() or detach().
  bool joinable() const noexcept { return ctl_ != nullptr; }
  // id() is the fiber's id, unique within its runtime; 0 when not joinable.
  FiberId id() const noexcept { return ctl_ ? ctl_->id : 0; }

  // join() waits for the fiber to finish and rethrows its exception. Blocks
  // the calling fiber (or, outside the runtime, the kernel thread). Throws
  // std::system_error: EINVAL if not joinable, EDEADLK on joining itself.
  void join();

  // detach() lets the fiber finish on its own. Never blocks. Throws
  // std::system_error(EINVAL) if not joinable.
  void detach();

 private:
  friend Fiber detail::wrap(detail::FiberCtl* ctl) noexcept;
  explicit Fiber(detail::FiberCtl* ctl) noexcept : ctl_(ctl) {}
  [[noreturn]] void abandoned() const noexcept;

  detail::FiberCtl* ctl_ = nullptr;
};

namespace detail {

class RuntimeCore;

// The runtime of the calling fiber; throws std::logic_error outside one.
RuntimeCore& core_of_current(const char* what);

// launch() starts a fiber in `core` and returns its control block with two
// references (handle and execution). Throws std::system_error /
// std::bad_alloc / std::invalid_argument (bad VProc index).
FiberCtl* launch(RuntimeCore& core, SpawnOptions options, FiberCtl* ctl);

template <class F, class... A>
FiberCtl* make_fiber(F&& f, A&&... args) {
  auto fn = [f = std::forward<F>(f), args = std::make_tuple(std::forward<A>(args)...)]() mutable {
    std::apply(std::move(f), std::move(args));
  };
  return new FiberBox<decltype(fn)>(std::move(fn));
}

}  // namespace detail

// spawn() starts a fiber running f(args...) on the calling fiber's runtime
// (the arguments are copied or moved, as for std::thread) and returns its
// handle. Never blocks. Throws std::logic_error outside a fiber (use
// Runtime::spawn there), std::bad_alloc when out of memory.
template <class F, class... A>
  requires(!std::same_as<std::decay_t<F>, SpawnOptions>)
Fiber spawn(F&& f, A&&... args) {
  detail::RuntimeCore& core = detail::core_of_current("sa::spawn");
  return detail::wrap(detail::launch(core, {}, detail::make_fiber(std::forward<F>(f), std::forward<A>(args)...)));
}

// spawn(options, f, args...) is spawn() with options (e.g. a bound VProc).
template <class F, class... A>
Fiber spawn(SpawnOptions options, F&& f, A&&... args) {
  detail::RuntimeCore& core = detail::core_of_current("sa::spawn");
  return detail::wrap(
      detail::launch(core, options, detail::make_fiber(std::forward<F>(f), std::forward<A>(args)...)));
}

}  // namespace sa
