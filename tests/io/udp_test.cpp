// sa::net::UdpSocket: datagrams on 127.0.0.1 and ::1, timeouts, close.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <atomic>
#include <string>

#include "test_support.hpp"

using namespace std::chrono_literals;

TEST_CASE("udp: datagrams go both ways with their sender's address") {
  const char* host = GENERATE("127.0.0.1:0", "[::1]:0");
  sa_test::Watchdog wd{20s, "udp round trip"};
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([host] {
    sa::net::UdpSocket a, b;
    try {
      a = sa::net::UdpSocket::bind(host);
      b = sa::net::UdpSocket::bind(host);
    } catch (const std::system_error& e) {
      WARN("cannot bind " << host << ": " << e.what());
      return;
    }
    constexpr int kCount = 200;
    sa::Fiber echo = sa::spawn([&] {
      char buf[2048];
      for (int i = 0; i < kCount; ++i) {
        sa::net::Address from;
        const std::size_t n = b.recv_from(buf, sizeof buf, from);
        SA_FIBER_CHECK(from == a.local_addr());
        b.send_to(buf, n, from);
      }
    });
    for (int i = 0; i < kCount; ++i) {
      const std::string msg = "datagram " + std::to_string(i) + std::string(static_cast<std::size_t>(i), '.');
      CHECK(a.send_to(msg.data(), msg.size(), b.local_addr()) == msg.size());
      char buf[2048];
      sa::net::Address from;
      const std::size_t n = a.recv_from(buf, sizeof buf, from, sa::io::deadline_after(5s));
      CHECK(std::string(buf, n) == msg);
      CHECK(from == b.local_addr());
    }
    echo.join();
  });
  CHECK(sa_test::fiber_failures() == 0);
}

TEST_CASE("udp: recv_from times out, and close cancels a receive in flight") {
  sa_test::Watchdog wd{20s, "udp timeout"};
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    auto s = sa::net::UdpSocket::bind("127.0.0.1:0");
    char buf[16];
    sa::net::Address from;
    int e = 0;
    try {
      s.recv_from(buf, sizeof buf, from, sa::io::deadline_after(40ms));
    } catch (const std::system_error& ex) {
      e = ex.code().value();
    }
    CHECK(e == ETIMEDOUT);
    std::atomic<int> err{0};
    sa::Fiber r = sa::spawn([&] {
      try {
        char b[16];
        sa::net::Address f;
        s.recv_from(b, sizeof b, f);
      } catch (const std::system_error& ex) {
        err = ex.code().value();
      }
    });
    sa::this_fiber::sleep_for(30ms);
    s.close();
    r.join();
    CHECK(err == ECANCELED);
  });
}
