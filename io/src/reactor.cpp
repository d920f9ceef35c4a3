// Reactor: ring set-up, submission batching, completion reaping, the idle
// wait and the cross-VProc cancel requests (see <sa/io.hpp>).

#include "reactor.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <system_error>

#include <sa/detail/runtime_core.hpp>

namespace sa::io::detail {

namespace {

// user_data tags in the low bits (Op and CancelBatch are 8-aligned).
constexpr uint64_t kTagMask = 7;
constexpr uint64_t kTagOp = 0;
constexpr uint64_t kTagTimeout = 1;
constexpr uint64_t kTagCancel = 2;
constexpr uint64_t kWakeData = 3;  // the armed poll on the wake eventfd

constexpr unsigned kSqEntries = 256;
constexpr unsigned kCqEntries = 8192;
// poll() enters the kernel (to submit queued SQEs, or to run the task work
// that turns readiness into CQEs) at once when nothing else is ready on this
// VProc; while fibers are ready, only once kBatch SQEs are queued or after
// kMaxDeferredPolls polls. Each poll follows a fiber's run of a few
// microseconds, so this bounds the delay and lets one io_uring_enter carry
// the operations of a whole round of fibers.
constexpr unsigned kBatch = 64;
constexpr unsigned kMaxDeferredPolls = 32;
// A fiber whose operations keep completing inline (wait_for) never switches;
// after this many in a row it parks once anyway, so that the loop fires this
// VProc's timers and hands the VProc to a held activation or stands it down
// if revoked. The global queue is seen less often than when every operation
// parks: pick_local() looks at it on every kGlobalEvery-th pick only.
constexpr unsigned kMaxInlineStreak = 16;

__kernel_timespec to_timespec(int64_t ns) noexcept {
  __kernel_timespec ts{};
  ts.tv_sec = ns / 1'000'000'000;
  ts.tv_nsec = ns % 1'000'000'000;
  return ts;
}

}  // namespace

void Op::set_state(OpState from, OpState to) noexcept {
  if (state != from) {
    std::fprintf(stderr, "sa::io: Op state %d, expected %d (moving to %d)\n", static_cast<int>(state),
                 static_cast<int>(from), static_cast<int>(to));
    std::abort();
  }
  state = to;
}

int64_t deadline_ns(std::chrono::steady_clock::time_point d) noexcept { return sa::detail::to_ns(d); }

Reactor::Reactor() {
  io_uring_params p{};
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL;
  p.cq_entries = kCqEntries;
  int r = io_uring_queue_init_params(kSqEntries, &ring_, &p);
  if (r == -EINVAL) {  // an older kernel: no cooperative task running
    p = io_uring_params{};
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = kCqEntries;
    r = io_uring_queue_init_params(kSqEntries, &ring_, &p);
  }
  if (r < 0) throw std::system_error(-r, std::system_category(), "sa::io: io_uring_queue_init");
  fd_ops_.reset(static_cast<uint32_t*>(std::calloc(kFdTableSize, sizeof(uint32_t))));
  if (!fd_ops_) {
    io_uring_queue_exit(&ring_);
    throw std::bad_alloc();
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    const int e = errno;
    io_uring_queue_exit(&ring_);
    throw std::system_error(e, std::system_category(), "sa::io: eventfd");
  }
}

Reactor::~Reactor() {
  // No fiber is alive when a VProc drops its poller, so no Op is in flight;
  // the armed poll on the eventfd writes into no buffer.
  io_uring_queue_exit(&ring_);
  ::close(wake_fd_);
}

Reactor* Reactor::current() {
  if (!sa::detail::current_fiber()) return nullptr;
  sa::detail::Poller* p = sa::detail::poller_of_current();
  if (!p) p = &sa::detail::install_poller(std::make_unique<Reactor>());
  Reactor* r = of(p);
  if (!r) throw std::logic_error("sa::io: this VProc's poller is not an sa::io reactor");
  return r;
}

Reactor* install_reactor(int& err) noexcept {
  err = 0;
  try {
    return Reactor::current();
  } catch (const std::system_error& e) {
    err = e.code().value();
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
  } catch (const std::exception&) {
    err = EINVAL;  // a misuse (another poller on this VProc)
  }
  return nullptr;
}

io_uring_sqe* Reactor::sqe(unsigned need) noexcept {
  for (;;) {
    if (io_uring_sq_space_left(&ring_) >= need) {
      io_uring_sqe* s = io_uring_get_sqe(&ring_);
      if (s) return s;
    }
    submit();
    if (io_uring_sq_space_left(&ring_) < need) {
      // The kernel refused (-EBUSY: completions must be reaped first).
      flush_kernel();
      if (reap()) woke_in_sqe_ = true;
    }
  }
}

void Reactor::fd_count(int fd, uint32_t delta) noexcept {
  if (fd < 0 || fd >= kFdTableSize) return;
  // relaxed: this VProc is the only writer; readers take it as a hint.
  std::atomic_ref<uint32_t> n(fd_ops_[fd]);
  n.store(n.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
}

bool Reactor::busy(int fd) const noexcept {
  if (in_flight() == 0) return false;
  if (fd < 0 || fd >= kFdTableSize) return true;
  return std::atomic_ref<uint32_t>(fd_ops_[fd]).load(std::memory_order_relaxed) != 0;
}

int Reactor::run(Op& op, io_uring_sqe* s, int64_t deadline) noexcept {
  fd_count(op.fd, 1);
  io_uring_sqe_set_data(s, &op);
  op.pending = 1;
  if (deadline != sa::detail::TimerHeap::kNever) {
    s->flags |= IOSQE_IO_LINK;
    op.ts = to_timespec(deadline);
    io_uring_sqe* t = io_uring_get_sqe(&ring_);  // sqe(2) left room for it
    io_uring_prep_link_timeout(t, &op.ts, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data64(t, reinterpret_cast<uintptr_t>(&op) | kTagTimeout);
    op.pending = 2;
  }
  // relaxed: only this VProc writes it; others read it as a hint.
  in_flight_.store(in_flight_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  wait_for(op);
  // Perhaps resumed on another VProc: `this` may belong to another thread
  // now; read only `op`, which the reactor handed back.
  int res = op.res;
  if (op.timed_out && (res == -ECANCELED || res == -EINTR)) res = -ETIMEDOUT;
  return res;
}

void Reactor::wait_for(Op& op) noexcept {
  if (others_ready() || ++inline_streak_ > kMaxInlineStreak) {
    // The loop submits with the SQEs of the fibers that run next (or,
    // after a streak, fires its timers first).
    op.set_state(OpState::Prepared, OpState::InKernel);
  } else {
    // The loop would submit as soon as we park and come straight back to
    // us if the operation completed inline (a socket with data waiting, or
    // room to send): submit and reap here and skip both switches. Other
    // fibers' CQEs reaped meanwhile wake them as poll() would; ours only
    // moves the Op to Done, since we are running.
    op.set_state(OpState::Prepared, OpState::Inline);
    submit();
    reap();
    if (op.state == OpState::Done) return;
    op.set_state(OpState::Inline, OpState::InKernel);
  }
  sa::detail::park(op.w, nullptr, sa::detail::TimerHeap::kNever);
}

void Reactor::post_cancel(CancelBatch* batch) noexcept {
  cancel_lock_.lock();
  try {
    cancels_.push_back(batch);
  } catch (...) {
    cancel_lock_.unlock();
    std::fprintf(stderr, "sa::io: out of memory posting a cancel request\n");
    std::abort();
  }
  cancel_lock_.unlock();
  // release: the reactor that sees the flag sees the request.
  has_cancels_.store(true, std::memory_order_release);
  wake();
}

void Reactor::drain_cancels() noexcept {
  std::vector<CancelBatch*> batch;
  cancel_lock_.lock();
  batch.swap(cancels_);
  has_cancels_.store(false, std::memory_order_relaxed);
  cancel_lock_.unlock();
  for (CancelBatch* b : batch) {
    io_uring_sqe* s = sqe(1);
    io_uring_prep_cancel_fd(s, b->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(s, reinterpret_cast<uintptr_t>(b) | kTagCancel);
  }
  if (!batch.empty()) submit();
}

void Reactor::submit() noexcept {
  deferred_polls_ = 0;
  int r;
  do {
    r = io_uring_submit(&ring_);
  } while (r == -EINTR);
}

void Reactor::flush_kernel() noexcept {
  // Completions wait in task work (COOP_TASKRUN) or in the overflow list
  // until this thread enters the kernel.
  deferred_polls_ = 0;
  const unsigned flags = IO_URING_READ_ONCE(*ring_.sq.kflags);
  if (flags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) io_uring_get_events(&ring_);
}

bool Reactor::others_ready() const noexcept {
  sa::detail::VProc* vp = sa::detail::current_vproc();
  return vp && (!vp->runq.empty() || !vp->inbox.empty());
}

bool Reactor::poll() noexcept {
  inline_streak_ = 0;  // a switch or a loop round came
  if (has_cancels_.load(std::memory_order_acquire)) drain_cancels();
  const unsigned queued = io_uring_sq_ready(&ring_);
  if (queued >= kBatch || !others_ready() || ++deferred_polls_ >= kMaxDeferredPolls) {
    // Submitting runs the pending task work too.
    if (queued) submit();
    else flush_kernel();
  }
  return reap();
}

bool Reactor::reap() noexcept {
  bool woke = false;
  unsigned head;
  unsigned n = 0;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    woke |= complete(cqe->user_data, cqe->res);
    ++n;
  }
  if (n) io_uring_cq_advance(&ring_, n);
  return woke;
}

bool Reactor::complete(uint64_t data, int32_t res) noexcept {
  if (data == kWakeData) {
    wake_armed_ = false;
    // One read resets the counter (not EFD_SEMAPHORE), however many wake()s
    // came. A read armed in the ring instead would save this call but write
    // into the reactor after the VProc's thread is gone if a wake() raced
    // with the ring's exit.
    uint64_t v;
    [[maybe_unused]] const ssize_t n = ::read(wake_fd_, &v, sizeof v);
    return false;
  }
  const uint64_t tag = data & kTagMask;
  if (tag == kTagCancel) {
    auto* b = reinterpret_cast<CancelBatch*>(data & ~kTagMask);
    if (res > 0) b->cancelled.fetch_add(res, std::memory_order_relaxed);
    // acq_rel: the last reactor to answer sees the others' counts.
    if (b->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return false;
    // The requester holds b->lock until it is parked: taking it proves the
    // fiber is saved. try_wake is the last touch of `b`.
    b->lock.lock();
    b->lock.unlock();
    return sa::detail::try_wake(&b->w);
  }
  auto* op = reinterpret_cast<Op*>(data & ~kTagMask);
  if (tag == kTagOp) op->res = res;
  else if (res == -ETIME) op->timed_out = true;  // kTagTimeout
  if (--op->pending != 0) return false;
  // The kernel is done with the operation: close() need not cancel it.
  fd_count(op->fd, static_cast<uint32_t>(-1));
  in_flight_.store(in_flight_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  if (op->state == OpState::Inline) {  // its fiber is running and reaps it (wait_for)
    op->set_state(OpState::Inline, OpState::Done);
    return false;
  }
  op->set_state(OpState::InKernel, OpState::Done);
  return sa::detail::try_wake(&op->w);  // last touch of `op`
}

void Reactor::arm_wake() noexcept {
  if (wake_armed_) return;
  io_uring_sqe* s = sqe(1);
  io_uring_prep_poll_add(s, wake_fd_, POLLIN);
  io_uring_sqe_set_data64(s, kWakeData);
  wake_armed_ = true;
}

void Reactor::wait(std::chrono::steady_clock::time_point deadline) noexcept {
  woke_in_sqe_ = false;
  if (has_cancels_.load(std::memory_order_acquire)) drain_cancels();
  // A wake() before this point left the eventfd readable: the poll armed
  // here completes at once.
  arm_wake();
  // Both calls above take an SQE, and with the SQ full sqe() reaps: a
  // fiber it woke is on this VProc's queues now, after the idle protocol's
  // final check (W2), and no one else will wake this VProc for it. Return
  // instead of blocking, as for completions already in the CQ: the loop
  // polls and runs them.
  if (woke_in_sqe_ || io_uring_cq_ready(&ring_)) {
    submit();
    return;
  }
  __kernel_timespec ts{};
  __kernel_timespec* tsp = nullptr;
  if (deadline != std::chrono::steady_clock::time_point::max()) {
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      submit();
      return;
    }
    ts = to_timespec(left.count());
    tsp = &ts;
  }
  io_uring_cqe* cqe = nullptr;
  deferred_polls_ = 0;
  io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, tsp, nullptr);
}

void Reactor::wake() noexcept {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(wake_fd_, &one, sizeof one);
}

}  // namespace sa::io::detail
