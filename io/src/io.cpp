// sa::io: the POSIX-signature calls. In a fiber each one is an io_uring
// operation on the fiber's VProc's reactor; outside the runtime it is the
// plain system call (with poll(2) in front of it for a deadline).

#include <sa/io.hpp>

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include <sa/detail/runtime_core.hpp>
#include <sa/this_fiber.hpp>

#include "reactor.hpp"

namespace sa::io {

using detail::Reactor;
using sa::detail::TimerHeap;

namespace {

// fail() sets errno from a negative result and returns -1.
inline ssize_t fail(int neg) noexcept {
  errno = -neg;
  return -1;
}
inline ssize_t ret(int res) noexcept { return res < 0 ? fail(res) : res; }

// wait_thread() is the outside-the-runtime deadline: poll(2) for `events`
// until `deadline`; 0 when ready, -1 with errno (ETIMEDOUT) otherwise.
int wait_thread(int fd, short events, Deadline deadline) noexcept {
  if (deadline == kNoDeadline) return 0;
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, left < 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30)));
    if (n > 0) return 0;
    if (n == 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    if (errno != EINTR) return -1;
  }
}

// With a user's O_NONBLOCK fd io_uring may report EAGAIN; then the fiber
// waits for readiness (a poll operation) and tries again.
template <class Prep>
ssize_t retrying(int fd, short events, Deadline deadline, Prep&& prep) noexcept {
  const int64_t dl = detail::deadline_ns(deadline);
  for (;;) {
    const int res = detail::call(dl, fd, prep);
    if (res != -EAGAIN) return ret(res);
    const int p = detail::call(dl, fd, [&](io_uring_sqe* s) { io_uring_prep_poll_add(s, fd, events); });
    if (p < 0) return fail(p);
  }
}

inline bool in_fiber() noexcept { return sa::detail::current_fiber() != nullptr; }

// The calls all follow one shape: in a fiber the io_uring operation (which
// finds the reactor, or reports why there is none), else the plain call
// after an optional wait for readiness.
#define SA_IO_CALL(fd, events, deadline, prep, plain)         \
  do {                                                        \
    if (in_fiber()) return retrying(fd, events, deadline, prep); \
    if (wait_thread(fd, events, deadline) < 0) return -1;     \
    return plain;                                             \
  } while (0)

}  // namespace

ssize_t read(int fd, void* buf, std::size_t n, Deadline deadline) noexcept {
  SA_IO_CALL(fd, POLLIN, deadline, [&](io_uring_sqe* s) { io_uring_prep_read(s, fd, buf, static_cast<unsigned>(n), -1); },
             ::read(fd, buf, n));
}

ssize_t write(int fd, const void* buf, std::size_t n, Deadline deadline) noexcept {
  SA_IO_CALL(fd, POLLOUT, deadline,
             [&](io_uring_sqe* s) { io_uring_prep_write(s, fd, buf, static_cast<unsigned>(n), -1); },
             ::write(fd, buf, n));
}

ssize_t readv(int fd, const iovec* iov, int iovcnt, Deadline deadline) noexcept {
  SA_IO_CALL(fd, POLLIN, deadline,
             [&](io_uring_sqe* s) { io_uring_prep_readv(s, fd, iov, static_cast<unsigned>(iovcnt), -1); },
             ::readv(fd, iov, iovcnt));
}

ssize_t writev(int fd, const iovec* iov, int iovcnt, Deadline deadline) noexcept {
  SA_IO_CALL(fd, POLLOUT, deadline,
             [&](io_uring_sqe* s) { io_uring_prep_writev(s, fd, iov, static_cast<unsigned>(iovcnt), -1); },
             ::writev(fd, iov, iovcnt));
}

ssize_t pread(int fd, void* buf, std::size_t n, off_t offset, Deadline deadline) noexcept {
  SA_IO_CALL(fd, POLLIN, deadline,
             [&](io_uring_sqe* s) {
               io_uring_prep_read(s, fd, buf, static_cast<unsigned>(n), static_cast<uint64_t>(offset));
             },
             ::pread(fd, buf, n, offset));
}

ssize_t pwrite(int fd, const void* buf, std::size_t n, off_t offset, Deadline deadline) noexcept {
  SA_IO_CALL(fd, POLLOUT, deadline,
             [&](io_uring_sqe* s) {
               io_uring_prep_write(s, fd, buf, static_cast<unsigned>(n), static_cast<uint64_t>(offset));
             },
             ::pwrite(fd, buf, n, offset));
}

int accept(int fd, sockaddr* addr, socklen_t* addrlen, Deadline deadline) noexcept {
  return accept4(fd, addr, addrlen, 0, deadline);
}

int accept4(int fd, sockaddr* addr, socklen_t* addrlen, int flags, Deadline deadline) noexcept {
  SA_IO_CALL(fd, POLLIN, deadline, [&](io_uring_sqe* s) { io_uring_prep_accept(s, fd, addr, addrlen, flags); },
             ::accept4(fd, addr, addrlen, flags));
}

namespace {

// connect_thread() is connect(2) with a deadline for a plain thread: a
// non-blocking connect, poll(2) for writability, then SO_ERROR.
int connect_thread(int fd, const sockaddr* addr, socklen_t len, Deadline deadline) noexcept {
  if (deadline == kNoDeadline) return ::connect(fd, addr, len);
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return -1;
  if (!(fl & O_NONBLOCK)) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  int r = ::connect(fd, addr, len);
  if (r < 0 && errno == EINPROGRESS && !(fl & O_NONBLOCK)) {
    if (wait_thread(fd, POLLOUT, deadline) == 0) {
      int soerr = 0;
      socklen_t sl = sizeof soerr;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
      errno = soerr;
      r = soerr ? -1 : 0;
    }
  }
  const int e = errno;
  if (!(fl & O_NONBLOCK)) ::fcntl(fd, F_SETFL, fl);
  errno = e;
  return r;
}

}  // namespace

int connect(int fd, const sockaddr* addr, socklen_t addrlen, Deadline deadline) noexcept {
  if (!in_fiber()) return connect_thread(fd, addr, addrlen, deadline);
  const int res = detail::call(detail::deadline_ns(deadline), fd,
                               [&](io_uring_sqe* s) { io_uring_prep_connect(s, fd, addr, addrlen); });
  if (res == -EINPROGRESS || res == -EALREADY) {
    // A non-blocking socket of the caller's: wait for the outcome.
    const int p = detail::call(detail::deadline_ns(deadline), fd,
                               [&](io_uring_sqe* s) { io_uring_prep_poll_add(s, fd, POLLOUT); });
    if (p < 0) return static_cast<int>(fail(p));
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    return soerr ? static_cast<int>(fail(-soerr)) : 0;
  }
  return static_cast<int>(ret(res));
}

ssize_t recv(int fd, void* buf, std::size_t n, int flags, Deadline deadline) noexcept {
  SA_IO_CALL(fd, POLLIN, deadline, [&](io_uring_sqe* s) { io_uring_prep_recv(s, fd, buf, n, flags); },
             ::recv(fd, buf, n, flags));
}

ssize_t send(int fd, const void* buf, std::size_t n, int flags, Deadline deadline) noexcept {
  flags |= MSG_NOSIGNAL;
  SA_IO_CALL(fd, POLLOUT, deadline, [&](io_uring_sqe* s) { io_uring_prep_send(s, fd, buf, n, flags); },
             ::send(fd, buf, n, flags));
}

ssize_t recvfrom(int fd, void* buf, std::size_t n, int flags, sockaddr* from, socklen_t* fromlen,
                 Deadline deadline) noexcept {
  iovec iov{buf, n};
  msghdr msg{};
  msg.msg_name = from;
  msg.msg_namelen = from && fromlen ? *fromlen : 0;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ssize_t got;
  if (in_fiber()) {
    got = retrying(fd, POLLIN, deadline,
                   [&](io_uring_sqe* s) { io_uring_prep_recvmsg(s, fd, &msg, static_cast<unsigned>(flags)); });
  } else {
    if (wait_thread(fd, POLLIN, deadline) < 0) return -1;
    got = ::recvmsg(fd, &msg, flags);
  }
  if (got >= 0 && from && fromlen) *fromlen = msg.msg_namelen;
  return got;
}

ssize_t sendto(int fd, const void* buf, std::size_t n, int flags, const sockaddr* to, socklen_t tolen,
               Deadline deadline) noexcept {
  flags |= MSG_NOSIGNAL;
  iovec iov{const_cast<void*>(buf), n};
  msghdr msg{};
  msg.msg_name = const_cast<sockaddr*>(to);
  msg.msg_namelen = to ? tolen : 0;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  SA_IO_CALL(fd, POLLOUT, deadline,
             [&](io_uring_sqe* s) { io_uring_prep_sendmsg(s, fd, &msg, static_cast<unsigned>(flags)); },
             ::sendmsg(fd, &msg, flags));
}

namespace {

// poll_many() waits for any of several fds through one epoll fd, which is
// itself pollable: one io_uring poll operation stands for the whole set.
int poll_many(pollfd* fds, nfds_t nfds, int64_t dl) noexcept {
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return -1;
  for (nfds_t i = 0; i < nfds; ++i) {
    if (fds[i].fd < 0) continue;
    uint32_t ev = static_cast<uint16_t>(fds[i].events);
    for (nfds_t j = 0; j < i; ++j)  // the same fd twice: one entry, both masks
      if (fds[j].fd == fds[i].fd) ev |= static_cast<uint16_t>(fds[j].events);
    epoll_event e{};
    e.events = ev;
    e.data.fd = fds[i].fd;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, fds[i].fd, &e) < 0 && errno == EEXIST)
      ::epoll_ctl(ep, EPOLL_CTL_MOD, fds[i].fd, &e);
  }
  int n;
  for (;;) {
    const int res = detail::call(dl, ep, [&](io_uring_sqe* s) { io_uring_prep_poll_add(s, ep, POLLIN); });
    if (res == -ETIMEDOUT) {
      n = 0;
      break;
    }
    if (res < 0) {
      n = static_cast<int>(fail(res));
      break;
    }
    n = ::poll(fds, nfds, 0);
    if (n != 0) break;  // readiness, or an error
  }
  const int e = errno;
  ::close(ep);
  errno = e;
  return n;
}

}  // namespace

int poll(pollfd* fds, nfds_t nfds, int timeout_ms) noexcept {
  if (!in_fiber()) return ::poll(fds, nfds, timeout_ms);
  const Deadline deadline =
      timeout_ms < 0 ? kNoDeadline : Clock::now() + std::chrono::milliseconds(timeout_ms);
  if (nfds == 0) {
    if (timeout_ms < 0) this_fiber::sleep_until(kNoDeadline);
    else this_fiber::sleep_until(deadline);
    return 0;
  }
  // What is ready now costs no operation.
  const int now = ::poll(fds, nfds, 0);
  if (now != 0 || timeout_ms == 0) return now;
  const int64_t dl = detail::deadline_ns(deadline);
  if (nfds > 1) return poll_many(fds, nfds, dl);
  for (;;) {
    const int res = detail::call(dl, fds[0].fd, [&](io_uring_sqe* s) {
      io_uring_prep_poll_add(s, fds[0].fd, static_cast<unsigned>(static_cast<uint16_t>(fds[0].events)));
    });
    if (res == -ETIMEDOUT) return 0;
    if (res < 0) return static_cast<int>(fail(res));
    fds[0].revents = static_cast<short>(res);
    if (res) return 1;
  }
}

namespace {

// cancel_all() runs the cancel protocol for `fd` on every reactor of the
// calling fiber's runtime with operations in flight (see <sa/io.hpp>).
int cancel_all(int fd) noexcept {
  sa::detail::RuntimeSection section;  // no shim handoff while we hold the batch's lock
  if (!in_fiber()) return 0;
  sa::detail::VProc* vp = sa::detail::current_vproc();
  sa::detail::RuntimeCore& core = vp->core;
  detail::CancelBatch b;
  b.fd = fd;
  std::vector<Reactor*> targets;
  try {
    for (int i = 0; i < core.size(); ++i) {
      // acquire: pairs with install_poller's release.
      Reactor* r = Reactor::of(core.vproc(i).poller.load(std::memory_order_acquire));
      if (r && r->busy(fd)) targets.push_back(r);
    }
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
  if (targets.empty()) return 0;
  b.remaining.store(static_cast<int>(targets.size()), std::memory_order_relaxed);
  b.lock.lock();  // held until this fiber is parked (see Reactor::complete)
  for (Reactor* r : targets) r->post_cancel(&b);
  sa::detail::park(b.w, &b.lock, TimerHeap::kNever);
  return b.cancelled.load(std::memory_order_relaxed);
}

}  // namespace

int cancel(int fd) noexcept { return cancel_all(fd); }

int close(int fd) noexcept {
  if (cancel_all(fd) < 0) return -1;
  return ::close(fd);
}

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0) sa::io::close(fd_);
  fd_ = fd;
}

unsigned sleep(unsigned seconds) noexcept {
  this_fiber::sleep_for(std::chrono::seconds(seconds));
  return 0;
}

int usleep(useconds_t usec) noexcept {
  this_fiber::sleep_for(std::chrono::microseconds(usec));
  return 0;
}

int nanosleep(const timespec* req, timespec* rem) noexcept {
  if (!req || req->tv_nsec < 0 || req->tv_nsec >= 1'000'000'000 || req->tv_sec < 0) {
    errno = EINVAL;
    return -1;
  }
  this_fiber::sleep_for(std::chrono::seconds(req->tv_sec) + std::chrono::nanoseconds(req->tv_nsec));
  if (rem) *rem = timespec{};
  return 0;
}

}  // namespace sa::io
