// sa::io POSIX-signature calls: pipes, vectors, positions, poll, sleeps,
// non-blocking fds, raw sockets, and the plain-thread fallback.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

struct Pipe {
  int r = -1, w = -1;
  explicit Pipe(int flags = 0) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC | flags) == 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
};

}  // namespace

TEST_CASE("posix: read, write, readv, writev on a pipe park only the fiber") {
  const int vprocs = GENERATE(1, 2);
  sa_test::Watchdog wd{20s, "posix pipe"};
  sa::Runtime rt{{.vprocs = vprocs}};
  rt.run([] {
    Pipe p;
    sa::Fiber reader = sa::spawn([&] {
      char buf[16] = {};
      SA_FIBER_CHECK(sa::io::read(p.r, buf, 5) == 5);
      SA_FIBER_CHECK(std::string(buf, 5) == "hello");
      char a[3], b[4];
      iovec iov[2] = {{a, 3}, {b, 4}};
      SA_FIBER_CHECK(sa::io::readv(p.r, iov, 2) == 7);
      SA_FIBER_CHECK(std::string(a, 3) + std::string(b, 4) == "abcdefg");
      SA_FIBER_CHECK(sa::io::read(p.r, buf, sizeof buf) == 0);  // EOF
    });
    sa::this_fiber::sleep_for(10ms);  // the reader is parked by now
    CHECK(sa::io::write(p.w, "hello", 5) == 5);
    iovec iov[2] = {{const_cast<char*>("abc"), 3}, {const_cast<char*>("defg"), 4}};
    CHECK(sa::io::writev(p.w, iov, 2) == 7);
    CHECK(sa::io::close(p.w) == 0);
    p.w = -1;
    reader.join();
    CHECK(sa_test::fiber_failures() == 0);
  });
}

TEST_CASE("posix: pread and pwrite at offsets") {
  sa_test::Watchdog wd{20s, "posix pread"};
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    char path[] = "/tmp/sa_io_posix_XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::unlink(path);
    CHECK(sa::io::pwrite(fd, "0123456789", 10, 100) == 10);
    char buf[4];
    CHECK(sa::io::pread(fd, buf, 4, 103) == 4);
    CHECK(std::string(buf, 4) == "3456");
    CHECK(sa::io::pread(fd, buf, 4, 110) == 0);
    CHECK(sa::io::close(fd) == 0);
  });
}

TEST_CASE("posix: deadlines give ETIMEDOUT, in a fiber and in a plain thread") {
  sa_test::Watchdog wd{20s, "posix deadline"};
  Pipe p;
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([&] {
    char b;
    errno = 0;
    CHECK(sa::io::read(p.r, &b, 1, sa::io::deadline_after(30ms)) == -1);
    CHECK(errno == ETIMEDOUT);
  });
  std::thread t([&] {
    char b;
    errno = 0;
    CHECK(sa::io::read(p.r, &b, 1, sa::io::deadline_after(30ms)) == -1);
    CHECK(errno == ETIMEDOUT);
    CHECK(sa::io::write(p.w, "z", 1) == 1);
    CHECK(sa::io::read(p.r, &b, 1) == 1);  // the plain read(2)
    CHECK(b == 'z');
  });
  t.join();
}

TEST_CASE("posix: poll waits on one or several fds and times out") {
  sa_test::Watchdog wd{20s, "posix poll"};
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    Pipe a, b;
    pollfd one{a.r, POLLIN, 0};
    CHECK(sa::io::poll(&one, 1, 30) == 0);
    pollfd two[2] = {{a.r, POLLIN, 0}, {b.r, POLLIN, 0}};
    CHECK(sa::io::poll(two, 2, 30) == 0);

    sa::Fiber w = sa::spawn([&] {
      sa::this_fiber::sleep_for(20ms);
      SA_FIBER_CHECK(::write(b.w, "x", 1) == 1);
    });
    two[0].revents = two[1].revents = 0;
    CHECK(sa::io::poll(two, 2, -1) == 1);
    CHECK(two[0].revents == 0);
    CHECK((two[1].revents & POLLIN));
    w.join();

    sa::Fiber w2 = sa::spawn([&] {
      sa::this_fiber::sleep_for(20ms);
      SA_FIBER_CHECK(::write(a.w, "y", 1) == 1);
    });
    one.revents = 0;
    CHECK(sa::io::poll(&one, 1, 10'000) == 1);
    CHECK((one.revents & POLLIN));
    w2.join();
    CHECK(sa::io::poll(nullptr, 0, 10) == 0);
  });
  CHECK(sa_test::fiber_failures() == 0);
}

TEST_CASE("posix: a caller's O_NONBLOCK fd still parks until data arrives") {
  sa_test::Watchdog wd{20s, "posix nonblock"};
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    Pipe p(O_NONBLOCK);
    sa::Fiber w = sa::spawn([&] {
      sa::this_fiber::sleep_for(20ms);
      SA_FIBER_CHECK(sa::io::write(p.w, "late", 4) == 4);
    });
    char buf[8];
    CHECK(sa::io::read(p.r, buf, sizeof buf) == 4);
    w.join();
  });
  CHECK(sa_test::fiber_failures() == 0);
}

TEST_CASE("posix: sleep, usleep and nanosleep park the fiber") {
  sa_test::Watchdog wd{20s, "posix sleep"};
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    std::atomic<int> ticks{0};
    sa::Fiber other = sa::spawn([&] {
      for (int i = 0; i < 5; ++i) {
        ++ticks;
        sa::this_fiber::sleep_for(1ms);
      }
    });
    const auto t0 = std::chrono::steady_clock::now();
    timespec ts{0, 30'000'000}, rem{1, 1};
    CHECK(sa::io::nanosleep(&ts, &rem) == 0);
    CHECK(rem.tv_sec == 0);
    CHECK(rem.tv_nsec == 0);
    CHECK(sa::io::usleep(10'000) == 0);
    CHECK(std::chrono::steady_clock::now() - t0 >= 40ms);
    CHECK(ticks == 5);  // the other fiber ran on the only VProc meanwhile
    timespec bad{0, 2'000'000'000};
    CHECK(sa::io::nanosleep(&bad, nullptr) == -1);
    CHECK(errno == EINVAL);
    other.join();
  });
}

TEST_CASE("posix: accept, connect, send, recv, sendto, recvfrom on raw fds") {
  sa_test::Watchdog wd{20s, "posix sockets"};
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(l, 16) == 0);
    socklen_t al = sizeof a;
    ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &al);
    sa::Fiber server = sa::spawn([&] {
      sockaddr_in peer{};
      socklen_t pl = sizeof peer;
      // SA_FIBER_CHECK: this fiber may run beside the test's own on
      // another VProc, and Catch2's assertions are not thread-safe.
      const int s = sa::io::accept(l, reinterpret_cast<sockaddr*>(&peer), &pl);
      SA_FIBER_CHECK(s >= 0);
      if (s < 0) return;
      SA_FIBER_CHECK(pl == sizeof peer);
      SA_FIBER_CHECK(peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
      char buf[8];
      SA_FIBER_CHECK(sa::io::recv(s, buf, sizeof buf, MSG_WAITALL) == 8);
      SA_FIBER_CHECK(sa::io::send(s, buf, 8, 0) == 8);
      SA_FIBER_CHECK(sa::io::close(s) == 0);
    });
    const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(sa::io::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    CHECK(sa::io::send(c, "12345678", 8, 0) == 8);
    char buf[8];
    CHECK(sa::io::recv(c, buf, 8, MSG_WAITALL) == 8);
    CHECK(std::memcmp(buf, "12345678", 8) == 0);
    CHECK(sa::io::recv(c, buf, 8, 0) == 0);
    server.join();
    sa::io::close(c);
    sa::io::close(l);

    const int u1 = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const int u2 = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in ua{};
    ua.sin_family = AF_INET;
    ua.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(u2, reinterpret_cast<sockaddr*>(&ua), sizeof ua) == 0);
    socklen_t ul = sizeof ua;
    ::getsockname(u2, reinterpret_cast<sockaddr*>(&ua), &ul);
    CHECK(sa::io::sendto(u1, "dgram", 5, 0, reinterpret_cast<sockaddr*>(&ua), sizeof ua) == 5);
    sockaddr_in from{};
    socklen_t fl = sizeof from;
    CHECK(sa::io::recvfrom(u2, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl) == 5);
    CHECK(fl == sizeof from);
    CHECK(from.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
    sa::io::close(u1);
    sa::io::close(u2);
  });
  CHECK(sa_test::fiber_failures() == 0);
}
