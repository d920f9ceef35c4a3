// The C++ echo servers of bench_echo: see echo_servers.hpp.

#include "echo_servers.hpp"

#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sa/sa.hpp>
#include <string>
#include <thread>
#include <vector>

namespace sa::bench::echo {

namespace {

constexpr std::size_t kBuf = 16 * 1024;  // per connection, as samples/echo_server
constexpr int kBacklog = 4096;

[[noreturn]] void die(const char* what, int err) {
  std::fprintf(stderr, "bench echo: server: %s: %s\n", what, std::strerror(err));
  std::_Exit(1);
}

// tell_port() writes "port N\n" to out_fd and closes it.
void tell_port(int out_fd, uint16_t port) {
  char line[32];
  const int n = std::snprintf(line, sizeof line, "port %u\n", static_cast<unsigned>(port));
  if (::write(out_fd, line, static_cast<std::size_t>(n)) != n) die("writing the port", errno);
  ::close(out_fd);
}

void set_nodelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// listen_on() is a listening socket on 127.0.0.1:port (0: the kernel picks),
// with SO_REUSEPORT when `reuseport` (several loops share the port).
int listen_on(uint16_t port, bool reuseport, bool nonblock) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) die("socket", errno);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) die("SO_REUSEPORT", errno);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) die("bind", errno);
  if (::listen(fd, kBacklog) < 0) die("listen", errno);
  return fd;
}

uint16_t port_of(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) < 0) die("getsockname", errno);
  return ntohs(a.sin_port);
}

// reuseport_listeners() is `n` SO_REUSEPORT listeners on one kernel-chosen
// port; the kernel spreads new connections over them by their addresses.
std::vector<int> reuseport_listeners(int n, bool nonblock) {
  std::vector<int> fds{listen_on(0, true, nonblock)};
  const uint16_t port = port_of(fds[0]);
  for (int i = 1; i < n; ++i) fds.push_back(listen_on(port, true, nonblock));
  return fds;
}

// run_loops() runs loop(listener) on one thread per listener and never returns.
template <class Loop>
[[noreturn]] void run_loops(const std::vector<int>& listeners, Loop loop) {
  std::vector<std::thread> threads;
  for (int fd : listeners) threads.emplace_back([fd, &loop] { loop(fd); });
  for (auto& t : threads) t.join();  // the loops never end
  std::_Exit(1);
}

// --- sa ------------------------------------------------------------------

void sa_connection(sa::net::TcpStream conn) {
  char buf[kBuf];
  try {
    while (std::size_t n = conn.read(buf, sizeof buf)) conn.write_all(buf, n);
  } catch (const std::system_error& e) {
    if (e.code().value() != ECONNRESET && e.code().value() != EPIPE)
      std::fprintf(stderr, "bench echo: sa server: %s\n", e.what());
  }
}

// --- liburing ------------------------------------------------------------

// user_data: a UConn pointer (8-aligned) or'ed with what its CQE answers.
constexpr uint64_t kAcceptData = 0;  // the multishot accept (no connection)
constexpr uint64_t kRecv = 1;
constexpr uint64_t kSend = 2;
constexpr uint64_t kTagMask = 7;

struct alignas(8) UConn {
  int fd;
  uint32_t len = 0;  // bytes received, being sent back
  uint32_t off = 0;  // bytes of them sent
  char buf[kBuf];
};

class UringLoop {
 public:
  explicit UringLoop(int listener) : listener_(listener) {
    io_uring_params p{};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    p.flags |= IORING_SETUP_CQSIZE;
    p.cq_entries = 16384;
    int r = io_uring_queue_init_params(4096, &ring_, &p);
    if (r == -EINVAL) {  // a kernel before 6.1
      p = io_uring_params{};
      p.flags = IORING_SETUP_CQSIZE;
      p.cq_entries = 16384;
      r = io_uring_queue_init_params(4096, &ring_, &p);
    }
    if (r < 0) die("io_uring_queue_init", -r);
  }

  [[noreturn]] void run() {
    post_accept();
    for (;;) {
      const int r = io_uring_submit_and_wait(&ring_, 1);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) die("io_uring_submit_and_wait", -r);
      unsigned head, seen = 0;
      io_uring_cqe* cqe;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        complete(cqe->user_data, cqe->res, cqe->flags);
        ++seen;
      }
      io_uring_cq_advance(&ring_, seen);
    }
  }

 private:
  io_uring_sqe* sqe() {
    for (;;) {
      if (io_uring_sqe* s = io_uring_get_sqe(&ring_)) return s;
      io_uring_submit(&ring_);
    }
  }

  void post_accept() {
    io_uring_sqe* s = sqe();
    io_uring_prep_multishot_accept(s, listener_, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, kAcceptData);
  }

  void post_recv(UConn* c) {
    io_uring_sqe* s = sqe();
    io_uring_prep_recv(s, c->fd, c->buf, kBuf, 0);
    io_uring_sqe_set_data64(s, reinterpret_cast<uintptr_t>(c) | kRecv);
  }

  void post_send(UConn* c) {
    io_uring_sqe* s = sqe();
    io_uring_prep_send(s, c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, reinterpret_cast<uintptr_t>(c) | kSend);
  }

  static void drop(UConn* c) {
    ::close(c->fd);
    delete c;
  }

  void complete(uint64_t data, int res, unsigned flags) {
    if (data == kAcceptData) {
      if (res >= 0) {
        set_nodelay(res);
        post_recv(new UConn{res});
      }
      if (!(flags & IORING_CQE_F_MORE)) post_accept();  // the multishot ended (an error)
      return;
    }
    auto* c = reinterpret_cast<UConn*>(data & ~kTagMask);
    if (res <= 0) {  // EOF, or the connection failed
      drop(c);
      return;
    }
    if ((data & kTagMask) == kRecv) {
      c->len = static_cast<uint32_t>(res);
      c->off = 0;
      post_send(c);
    } else {
      c->off += static_cast<uint32_t>(res);
      if (c->off < c->len) post_send(c);
      else post_recv(c);
    }
  }

  int listener_;
  io_uring ring_{};
};

// --- epoll ---------------------------------------------------------------

struct EConn {
  int fd;
  uint32_t len = 0;  // bytes still to write back, from buf + off
  uint32_t off = 0;
  char buf[kBuf];
};

[[noreturn]] void epoll_loop(int listener) {
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1", errno);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = nullptr;  // the listener
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev) < 0) die("epoll_ctl", errno);
  auto watch = [ep](EConn* c, int op, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = c;
    ::epoll_ctl(ep, op, c->fd, &ev);
  };
  auto drop = [](EConn* c) {
    ::close(c->fd);  // also leaves the epoll set
    delete c;
  };
  epoll_event events[256];
  for (;;) {
    const int n = ::epoll_wait(ep, events, 256, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait", errno);
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<EConn*>(events[i].data.ptr);
      if (!c) {
        for (int fd; (fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
          set_nodelay(fd);
          watch(new EConn{fd}, EPOLL_CTL_ADD, EPOLLIN);
        }
        continue;
      }
      if (c->len == 0) {  // waiting for data
        const ssize_t r = ::read(c->fd, c->buf, kBuf);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (r <= 0) {
          drop(c);
          continue;
        }
        c->len = static_cast<uint32_t>(r);
        c->off = 0;
      }
      const ssize_t w = ::send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
      if (w < 0 && errno != EAGAIN && errno != EINTR) {
        drop(c);
        continue;
      }
      const bool was_short = c->off != 0 || events[i].events & EPOLLOUT;
      c->off += w > 0 ? static_cast<uint32_t>(w) : 0;
      if (c->off == c->len) {
        c->len = c->off = 0;
        if (was_short) watch(c, EPOLL_CTL_MOD, EPOLLIN);
      } else if (!was_short) {
        watch(c, EPOLL_CTL_MOD, EPOLLOUT);  // wait for room, read nothing meanwhile
      }
    }
  }
}

// --- threads -------------------------------------------------------------

void thread_connection(int fd) {
  set_nodelay(fd);
  char buf[kBuf];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    ssize_t done = 0;
    while (done < r) {
      const ssize_t w = ::send(fd, buf + done, static_cast<std::size_t>(r - done), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      done += w;
    }
    if (done < r) break;
  }
  ::close(fd);
}

}  // namespace

int event_loops() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

void serve_sa(int out_fd) {
  try {
    // Unpinned, like the liburing and epoll loops: the client shares the
    // CPUs, and a pinned VProc cannot leave the CPU the client runs on
    // (bench/README.md, "Echo: pinning").
    sa::Runtime rt{{.vprocs = 0, .pin = false}};
    rt.run([&] {
      auto listener = sa::net::TcpListener::bind("127.0.0.1:0", kBacklog);
      tell_port(out_fd, listener.local_addr().port());
      for (;;) {
        std::error_code ec;
        sa::net::TcpStream conn = listener.accept(ec);
        if (ec) continue;  // EMFILE and friends: accept() paused already
        conn.set_nodelay();
        sa::spawn([c = std::move(conn)]() mutable { sa_connection(std::move(c)); }).detach();
      }
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench echo: sa server: %s\n", e.what());
  }
  std::_Exit(1);
}

void serve_liburing(int out_fd) {
  const std::vector<int> listeners = reuseport_listeners(event_loops(), false);
  tell_port(out_fd, port_of(listeners[0]));
  run_loops(listeners, [](int fd) { UringLoop(fd).run(); });
}

void serve_epoll(int out_fd) {
  const std::vector<int> listeners = reuseport_listeners(event_loops(), true);
  tell_port(out_fd, port_of(listeners[0]));
  run_loops(listeners, [](int fd) { epoll_loop(fd); });
}

void serve_threads(int out_fd) {
  const int listener = listen_on(0, false, false);
  tell_port(out_fd, port_of(listener));
  for (;;) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EINTR && errno != ECONNABORTED) ::usleep(10'000);  // EMFILE and friends
      continue;
    }
    try {
      std::thread(thread_connection, fd).detach();
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "bench echo: threads server: %s\n", e.what());
      ::close(fd);
    }
  }
}

}  // namespace sa::bench::echo
