#pragma once
// <sa/io.hpp>: blocking-style I/O for fibers on a per-VProc io_uring reactor.
//
// Problem. A fiber that calls read(2) on a socket with nothing to read blocks
// the kernel thread that carries its VProc, and the processor is lost to every
// other ready fiber. sa::io gives the same calls (same signatures, same errno
// conventions) but parks only the fiber: the operation goes to io_uring and
// the VProc runs other fibers until the completion arrives.
//
// Concepts.
//   - Reactor (io/src/reactor.hpp): one io_uring ring per VProc, created on
//     the first I/O call a fiber makes on that VProc and installed as the
//     VProc's Poller (runtime/include/sa/detail/poller.hpp). Only the owner
//     VProc touches its ring: fibers queue SQEs on the ring of the VProc they
//     run on; the VProc submits them in a batch and reaps completions in
//     poll(), on the far side of every switch and in every scheduler round,
//     or the last ready fiber does it before it parks (step 2).
//   - Op: per-operation state on the calling fiber's stack (a Waiter, the
//     result, the count of CQEs still due, the linked timeout's timespec).
//     Its address is the SQE's user_data. The fiber is woken only when every
//     CQE that names the Op was reaped, so the kernel never writes into a
//     buffer, or an Op, of a fiber that has returned.
//   - Deadline: a steady_clock time point. An operation with a deadline is
//     submitted with an IORING_OP_LINK_TIMEOUT (absolute, CLOCK_MONOTONIC)
//     linked to it; when the timeout wins, the operation ends with ECANCELED
//     and the call reports ETIMEDOUT.
//   - Cancellation: sa::io::cancel(fd) and sa::io::close(fd) ask every
//     reactor of the runtime that has operations in flight to cancel those on
//     `fd` (IORING_ASYNC_CANCEL_FD | ALL) and wait for their answers; the
//     cancelled calls fail with ECANCELED. close() closes the fd only then,
//     so no operation is left pending on a file nobody can reach. Each
//     reactor counts its operations in flight per fd (only its VProc writes
//     the counts), so closing an idle fd is a plain close(2) with no round
//     trip, and a busy one asks only the reactors that have operations on it.
//
// Protocol of one operation (a fiber F on VProc V):
//   1. F takes V's reactor (creating it on first use), gets one SQE, or two
//      with a deadline, prepares it with user_data = &op and counts the CQEs
//      it expects (1, or 2 with the linked timeout).
//   2. If other fibers are ready on V, F parks on op.w with no lock (Op
//      InKernel). This is safe because only code running on V reaps V's
//      ring (V's loop, the far side of a switch, or a fiber's own call on V,
//      as below), and F keeps V until its context is saved: no completion
//      of F's can be reaped, and no try_wake can reach F, before that. If
//      none is ready, V's loop would submit at once and often run F again
//      straight away (a socket with data waiting, or room to send): F
//      submits and reaps itself (Op Inline), and returns without parking if
//      its CQEs came; CQEs of other fibers reaped meanwhile wake them as
//      step 3 does (those fibers are parked: only F runs on V). Otherwise
//      F's Op becomes InKernel before F parks as above. At most one Op per
//      ring is Inline: the running fiber's.
//   3. V's poll() enters the kernel (to submit the queued SQEs and run the
//      task work that makes CQEs) at once if nothing else is ready here,
//      else only when enough SQEs are queued or after a few dozen polls: one
//      io_uring_enter serves a round of fibers. Then it reaps: each CQE
//      decrements op.pending; the last one try_wake()s F (an Inline Op is
//      only marked Done: F is running and reaps it itself).
//   4. F resumes (perhaps on another VProc), maps the result: a negative res
//      is -errno; ECANCELED after the linked timeout fired becomes ETIMEDOUT.
//
// Idle VProcs. When V runs out of work it sleeps in io_uring_enter (the
// Poller's wait()) instead of a futex, so it wakes for a completion, for its
// deadline, or for wake(): another thread that gives V work writes an eventfd
// whose poll is kept armed in the ring (re-armed before each sleep; a write
// that came earlier completes the poll at once). No busy polling when idle.
//
// Rejected designs.
//   - One ring for the whole runtime, or a reactor thread: every submission
//     would need a lock or a hand-off to another kernel thread, and every
//     completion a cross-CPU wake-up. Per-VProc rings need neither.
//   - epoll plus non-blocking syscalls: two syscalls per operation (the
//     failed try and the call after readiness) and no file I/O.
//   - A park deadline (the runtime's timer) instead of a linked timeout: on
//     expiry the fiber would still have to cancel the operation and wait for
//     its CQE before returning; the linked timeout does both in the kernel.
//   - IORING_SETUP_SINGLE_ISSUER / DEFER_TASKRUN: an activation other than
//     the one that created the ring may run the VProc later (scheduler
//     activations hand processors between kernel threads).
//
// Outside the runtime (a thread that is not a fiber) every call falls back to
// the plain system call and blocks the thread; deadlines use poll(2) there.
//
// Errors. The POSIX-signature functions return -1 and set errno, like the
// calls they replace (EOF is 0). sa::net and sa::io::File throw
// std::system_error carrying the errno, or fill a std::error_code in their
// overloads that take one. sa::io::send/sendto and all of sa::net pass
// MSG_NOSIGNAL: they never raise SIGPIPE (sa::io::write on a socket follows
// write(2) and may).

#include <chrono>
#include <cstddef>
#include <cstdint>

#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

namespace sa::io {

using Clock = std::chrono::steady_clock;
// A Deadline is an instant on the steady clock; kNoDeadline waits forever.
using Deadline = Clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();

// deadline_after() is now + d, saturating at kNoDeadline.
template <class Rep, class Period>
Deadline deadline_after(std::chrono::duration<Rep, Period> d) noexcept {
  const auto now = Clock::now();
  if (std::chrono::duration<double>(d) >= std::chrono::duration<double>(kNoDeadline - now)) return kNoDeadline;
  return now + std::chrono::duration_cast<Clock::duration>(d);
}

// --- POSIX-signature calls -------------------------------------------------
// Each does what the system call of the same name does and returns what it
// returns (-1 with errno on failure). In a fiber they park the fiber, never
// the kernel thread; outside the runtime they are the plain call and block
// the thread. The overloads with a Deadline fail with ETIMEDOUT when it
// passes first; every call fails with ECANCELED when cancel(fd) or close(fd)
// interrupts it.

ssize_t read(int fd, void* buf, std::size_t n, Deadline deadline = kNoDeadline) noexcept;
ssize_t write(int fd, const void* buf, std::size_t n, Deadline deadline = kNoDeadline) noexcept;
ssize_t readv(int fd, const iovec* iov, int iovcnt, Deadline deadline = kNoDeadline) noexcept;
ssize_t writev(int fd, const iovec* iov, int iovcnt, Deadline deadline = kNoDeadline) noexcept;
ssize_t pread(int fd, void* buf, std::size_t n, off_t offset, Deadline deadline = kNoDeadline) noexcept;
ssize_t pwrite(int fd, const void* buf, std::size_t n, off_t offset, Deadline deadline = kNoDeadline) noexcept;

// accept() and accept4() return the new fd.
int accept(int fd, sockaddr* addr, socklen_t* addrlen, Deadline deadline = kNoDeadline) noexcept;
int accept4(int fd, sockaddr* addr, socklen_t* addrlen, int flags, Deadline deadline = kNoDeadline) noexcept;
int connect(int fd, const sockaddr* addr, socklen_t addrlen, Deadline deadline = kNoDeadline) noexcept;

// recv/recvfrom: EOF is 0. send/sendto always add MSG_NOSIGNAL.
ssize_t recv(int fd, void* buf, std::size_t n, int flags, Deadline deadline = kNoDeadline) noexcept;
ssize_t send(int fd, const void* buf, std::size_t n, int flags, Deadline deadline = kNoDeadline) noexcept;
ssize_t recvfrom(int fd, void* buf, std::size_t n, int flags, sockaddr* from, socklen_t* fromlen,
                 Deadline deadline = kNoDeadline) noexcept;
ssize_t sendto(int fd, const void* buf, std::size_t n, int flags, const sockaddr* to, socklen_t tolen,
               Deadline deadline = kNoDeadline) noexcept;

// poll() waits like poll(2) (timeout_ms < 0: forever) and parks the fiber.
int poll(pollfd* fds, nfds_t nfds, int timeout_ms) noexcept;

// close() cancels the operations in flight on `fd` on every VProc of the
// calling fiber's runtime (they fail with ECANCELED), waits for that, then
// closes it. Parks the fiber while it waits; outside the runtime it is
// close(2).
int close(int fd) noexcept;

// cancel() makes the operations in flight on `fd` fail with ECANCELED and
// returns how many it cancelled (-1 with errno on failure). Parks the fiber
// until every reactor answered; outside the runtime it returns 0.
int cancel(int fd) noexcept;

// sleep(), usleep() and nanosleep() park the fiber (the runtime's timer); a
// sleeping fiber is never interrupted, so they return 0 (rem is zeroed).
unsigned sleep(unsigned seconds) noexcept;
int usleep(useconds_t usec) noexcept;
int nanosleep(const timespec* req, timespec* rem) noexcept;

}  // namespace sa::io

#include <sa/io/fd.hpp>
#include <sa/io/file.hpp>
