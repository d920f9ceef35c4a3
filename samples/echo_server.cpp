// echo_server: a TCP echo server, one fiber per connection, written in
// blocking style (accept, read, write) on sa::net.
//
//   echo_server [ADDR] [--vprocs N] [--no-pin]   ADDR defaults to 127.0.0.1:7000
//
// --no-pin leaves the VProcs unpinned (Options::pin = false), which can pay
// when another busy process shares the CPUs (bench/README.md, "Echo:
// pinning"; against echo_client on the same 2 CPUs it made no difference).
//
// Runs until killed. Each connection echoes what it reads until EOF.

#include <sa/sa.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

namespace {

void serve(sa::net::TcpStream conn) {
  char buf[16 * 1024];
  try {
    while (std::size_t n = conn.read(buf, sizeof buf)) conn.write_all(buf, n);
  } catch (const std::system_error& e) {
    // A peer that resets or vanishes ends its connection, nothing else.
    if (e.code().value() != ECONNRESET && e.code().value() != EPIPE)
      std::fprintf(stderr, "echo_server: connection: %s\n", e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string addr = "127.0.0.1:7000";
  int vprocs = 0;
  bool pin = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--vprocs") && i + 1 < argc) vprocs = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--no-pin")) pin = false;
    else if (argv[i][0] != '-') addr = argv[i];
    else {
      std::fprintf(stderr, "usage: echo_server [ADDR] [--vprocs N] [--no-pin]\n");
      return 2;
    }
  }
  try {
    sa::Runtime rt{{.vprocs = vprocs, .pin = pin}};
    rt.run([&] {
      auto listener = sa::net::TcpListener::bind(addr, 4096);
      std::printf("echo_server: listening on %s with %d VProcs\n", listener.local_addr().to_string().c_str(),
                  rt.vprocs());
      std::fflush(stdout);
      for (;;) {
        std::error_code ec;
        sa::net::TcpStream conn = listener.accept(ec);
        if (ec) {  // EMFILE and friends: accept() paused already
          std::fprintf(stderr, "echo_server: accept: %s\n", ec.message().c_str());
          continue;
        }
        conn.set_nodelay();
        sa::spawn([c = std::move(conn)]() mutable { serve(std::move(c)); }).detach();
      }
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_server: %s\n", e.what());
    return 1;
  }
}
