#pragma once
// Poller: an event source that a VProc polls in its scheduler loop and
// sleeps in when idle: how io/ plugs its per-VProc io_uring reactor into the
// scheduler without the scheduler knowing about I/O.
//
// Contract:
//   - install_poller() is called by a fiber running on that VProc, at most
//     once per VProc; the VProc owns the poller until the runtime ends.
//   - poll() is called only by the owner VProc, never while a fiber that
//     waits on it is still running: on the far side of every switch away
//     from a parking fiber, in yield(), and in every round of the loop. It submits what fibers
//     queued and reaps completions without blocking, waking the fibers they
//     belong to with try_wake(). It must be cheap when there is nothing to do.
//   - wait() / wake() (shim::IdleWait) replace the futex when the VProc is
//     idle: the idle protocol calls wake() after claiming the VProc, so
//     wait() must return for a completion, a wake() or the deadline.

#include <memory>

#include <sa/shim/shim.hpp>

namespace sa::detail {

class VProc;

class Poller : public shim::IdleWait {
 public:
  // poll() submits and reaps without blocking; true if it woke a fiber.
  virtual bool poll() noexcept = 0;
};

// install_poller() gives `poller` to the calling fiber's VProc and returns
// it; throws std::logic_error outside a fiber or if one is installed already.
Poller& install_poller(std::unique_ptr<Poller> poller);

// poller_of_current() is the calling fiber's VProc's poller, or null (also
// outside the runtime).
Poller* poller_of_current() noexcept;

}  // namespace sa::detail
