#pragma once
// Reactor: one io_uring ring per VProc, installed as its Poller. See the
// design comment in <sa/io.hpp> for the protocol; this header is private to
// io/ so that liburing stays out of the public headers.

#include <liburing.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <typeinfo>
#include <vector>

#include <sa/detail/poller.hpp>
#include <sa/detail/runtime_core.hpp>
#include <sa/detail/spin_lock.hpp>
#include <sa/detail/timer_heap.hpp>
#include <sa/detail/waiter.hpp>

namespace sa::io::detail {

using sa::detail::Waiter;

// Where an Op is; each value says who may touch its fields.
enum class OpState : uint8_t {
  Prepared,  // on the fiber's stack, SQEs being filled; the fiber owns it
  Inline,    // submitted by its fiber, which reaps before it parks and is
             // not woken: the reactor only records the CQEs
  InKernel,  // SQEs queued or submitted, CQEs due, the fiber parked or
             // parking; the reactor owns it and wakes the fiber
  Done,      // every CQE reaped; the fiber owns it again
};

// Op: one operation, on the calling fiber's stack until its CQEs are reaped.
struct alignas(8) Op {
  Waiter w;                     // binds the calling fiber
  int32_t res = 0;              // the operation's CQE result
  int fd = -1;                  // counted in the reactor's fd table while in flight
  uint8_t pending = 0;          // CQEs still due: 1, or 2 with a linked timeout
  bool timed_out = false;       // the linked timeout fired (its CQE was -ETIME)
  OpState state = OpState::Prepared;
  __kernel_timespec ts{};       // the linked timeout's absolute deadline

  void set_state(OpState from, OpState to) noexcept;
};

// CancelBatch: one cancel(fd) request sent to every reactor with operations
// in flight; lives on the requesting fiber's stack until all answered.
struct CancelBatch {
  sa::detail::SpinLock lock;      // held by the requester until it is parked
  Waiter w;                       // the requester
  int fd = -1;
  std::atomic<int> remaining{0};  // reactors that have not answered yet
  std::atomic<int> cancelled{0};  // operations cancelled, summed over them
};

class Reactor final : public sa::detail::Poller {
 public:
  // Creates the ring and the wake eventfd; throws std::system_error.
  Reactor();
  ~Reactor() override;
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  // current() is the calling fiber's VProc's reactor, created and installed
  // on first use; null outside a fiber. Throws std::system_error if the ring
  // cannot be created. The caller holds a RuntimeSection: under
  // ShimMode::on a block in the ring's set-up could otherwise move it to
  // another VProc.
  static Reactor* current();

  // of() is `p` if it is a Reactor, else null. A type check rather than a
  // dynamic_cast: this runs on every operation.
  static Reactor* of(sa::detail::Poller* p) noexcept {
    return p && typeid(*p) == typeid(Reactor) ? static_cast<Reactor*>(p) : nullptr;
  }

  // sqe() returns `need` consecutive free SQEs' first (submitting queued ones
  // first if the ring is full). Owner VProc only; never parks.
  io_uring_sqe* sqe(unsigned need = 1) noexcept;

  // run() links a timeout to `s` if `deadline_ns` is not kNever, waits
  // until every CQE of `op` was reaped and returns the result (-errno;
  // -ETIMEDOUT when the deadline won). `s` must come from sqe(2) when there
  // is a deadline; op.fd (or -1) is the descriptor it works on, counted in
  // the fd table while in flight. When nothing else is ready on this VProc
  // it submits at once and returns without parking if the operation
  // completed inline. May park the fiber, never the thread.
  int run(Op& op, io_uring_sqe* s, int64_t deadline_ns) noexcept;

  // post_cancel() asks this reactor to cancel every operation on batch->fd
  // and to answer through `batch`. Any thread; never blocks.
  void post_cancel(CancelBatch* batch) noexcept;

  // in_flight() counts Ops whose CQEs are due; read by any thread (a hint).
  int64_t in_flight() const noexcept { return in_flight_.load(std::memory_order_relaxed); }

  // busy() is true if operations on `fd` may be in flight here; any thread.
  // A hint that close() reads to skip the cancel round trip: it sees every
  // operation that started before the close in happens-before order (the
  // counts are atomic), and a close racing with a call that is starting on
  // the same fd is the caller's race, as with close(2) itself.
  bool busy(int fd) const noexcept;

  // Poller: see poller.hpp.
  bool poll() noexcept override;
  void wait(std::chrono::steady_clock::time_point deadline) noexcept override;
  void wake() noexcept override;

 private:
  void submit() noexcept;
  bool reap() noexcept;
  void wait_for(Op& op) noexcept;
  void flush_kernel() noexcept;
  void arm_wake() noexcept;
  void drain_cancels() noexcept;
  bool complete(uint64_t data, int32_t res) noexcept;
  bool others_ready() const noexcept;
  void fd_count(int fd, uint32_t delta) noexcept;

  io_uring ring_{};
  int wake_fd_ = -1;
  bool wake_armed_ = false;
  bool woke_in_sqe_ = false;     // sqe() reaped and woke a fiber (see wait())
  unsigned deferred_polls_ = 0;  // polls since the last submission or task-work check
  unsigned inline_streak_ = 0;   // inline submissions (wait_for) since the last poll
  std::atomic<int64_t> in_flight_{0};  // written by the owner only
  // Operations in flight per fd below kFdTableSize, written by the owner
  // only (plain increments, no bus lock) and read by close() on any VProc.
  // Per reactor rather than process-wide: a shared table's counters of
  // neighbouring fds shared cache lines between CPUs and took two atomic
  // read-modify-writes per operation. calloc: pages appear as fds are used.
  struct Free {
    void operator()(uint32_t* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<uint32_t[], Free> fd_ops_;

  sa::detail::SpinLock cancel_lock_;
  std::vector<CancelBatch*> cancels_;     // guarded by cancel_lock_
  std::atomic<bool> has_cancels_{false};  // hint: cancels_ is not empty
};

// The fd tables count operations in flight per descriptor below
// kFdTableSize, so that close() of an idle fd is a plain close(2); close()
// of a larger fd always asks the reactors with operations in flight.
inline constexpr int kFdTableSize = 1 << 16;

// deadline_ns() maps a Deadline to the runtime's nanoseconds (kNever for none).
int64_t deadline_ns(std::chrono::steady_clock::time_point d) noexcept;

// install_reactor() is the slow path of current_reactor(): null outside a
// fiber (err = 0); otherwise creates and installs this VProc's reactor, or
// reports why it cannot (err = the errno; EINVAL: another kind of poller).
Reactor* install_reactor(int& err) noexcept;

// current_reactor() is Reactor::current() without exceptions: null outside
// a fiber (err = 0) or when the ring cannot be created (err = the errno).
// The caller holds a RuntimeSection (see Reactor::current()).
inline Reactor* current_reactor(int& err) noexcept {
  if (Reactor* r = Reactor::of(sa::detail::poller_of_current())) {
    err = 0;
    return r;
  }
  return install_reactor(err);
}

// call() runs one operation that prep(sqe) prepares on the calling fiber's
// VProc's reactor and returns its result, -errno on failure. May park the
// fiber. The reactor is looked up here, once per operation: a ring belongs
// to one VProc and the fiber may have moved since its last call. The
// RuntimeSection keeps ShimMode::on from handing the VProc away in the
// middle of a submission.
template <class Prep>
int call(int64_t deadline, int fd, Prep&& prep) noexcept {
  sa::detail::RuntimeSection section;
  int err = 0;
  Reactor* r = current_reactor(err);
  if (!r) return -(err ? err : EINVAL);
  Op op;
  op.fd = fd;
  io_uring_sqe* s = r->sqe(deadline != sa::detail::TimerHeap::kNever ? 2 : 1);
  prep(s);
  return r->run(op, s, deadline);
}

}  // namespace sa::io::detail
