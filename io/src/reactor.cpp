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
// Queued SQEs are submitted at once when nothing else is ready on this
// VProc; otherwise once kBatch are queued or after kMaxDeferredPolls polls.
constexpr unsigned kBatch = 32;
constexpr unsigned kMaxDeferredPolls = 8;

__kernel_timespec to_timespec(int64_t ns) noexcept {
  __kernel_timespec ts{};
  ts.tv_sec = ns / 1'000'000'000;
  ts.tv_nsec = ns % 1'000'000'000;
  return ts;
}

std::atomic<uint32_t> g_fd_ops[kFdTableSize];

void fd_count(int fd, int delta) noexcept {
  // relaxed: a hint for close(); the cancel protocol orders the rest.
  if (fd >= 0 && fd < kFdTableSize) g_fd_ops[fd].fetch_add(static_cast<uint32_t>(delta), std::memory_order_relaxed);
}

}  // namespace

bool fd_busy(int fd) noexcept {
  return fd < 0 || fd >= kFdTableSize || g_fd_ops[fd].load(std::memory_order_relaxed) != 0;
}

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
  // Look up and install on one VProc: under ShimMode::on, without the
  // section a block in the ring's set-up could move us to another VProc.
  sa::detail::RuntimeSection section;
  if (!sa::detail::current_fiber()) return nullptr;
  sa::detail::Poller* p = sa::detail::poller_of_current();
  if (!p) p = &sa::detail::install_poller(std::make_unique<Reactor>());
  auto* r = dynamic_cast<Reactor*>(p);
  if (!r) throw std::logic_error("sa::io: this VProc's poller is not an sa::io reactor");
  return r;
}

Reactor* current_reactor(int& err) noexcept {
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
      reap();
    }
  }
}

int Reactor::run(Op& op, io_uring_sqe* s, int64_t deadline, int fd) noexcept {
  fd_count(fd, 1);
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
  op.set_state(OpState::Prepared, OpState::InKernel);
  // relaxed: only this VProc writes it; others read it as a hint.
  in_flight_.store(in_flight_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  sa::detail::park(op.w, nullptr, sa::detail::TimerHeap::kNever);
  // Resumed, perhaps on another VProc: `this` may belong to another thread
  // now; read only `op`, which the reactor handed back with try_wake.
  fd_count(fd, -1);
  int res = op.res;
  if (op.timed_out && (res == -ECANCELED || res == -EINTR)) res = -ETIMEDOUT;
  return res;
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
  const unsigned flags = IO_URING_READ_ONCE(*ring_.sq.kflags);
  if (flags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) io_uring_get_events(&ring_);
}

bool Reactor::others_ready() const noexcept {
  sa::detail::VProc* vp = sa::detail::current_vproc();
  return vp && (!vp->runq.empty() || !vp->inbox.empty());
}

bool Reactor::poll() noexcept {
  if (has_cancels_.load(std::memory_order_acquire)) drain_cancels();
  if (const unsigned queued = io_uring_sq_ready(&ring_)) {
    if (queued >= kBatch || ++deferred_polls_ >= kMaxDeferredPolls || !others_ready()) submit();
  } else {
    flush_kernel();
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
    uint64_t v;
    while (::read(wake_fd_, &v, sizeof v) > 0) {
    }
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
  op->set_state(OpState::InKernel, OpState::Done);
  in_flight_.store(in_flight_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
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
  if (has_cancels_.load(std::memory_order_acquire)) drain_cancels();
  // A wake() before this point left the eventfd readable: the poll armed
  // here completes at once.
  arm_wake();
  if (io_uring_cq_ready(&ring_)) {
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
