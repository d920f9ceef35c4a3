#pragma once
// The C++ echo servers that bench_echo (bench/echo.cpp) drives with one
// client. Each reads what a connection sends and writes it back, until EOF,
// with TCP_NODELAY on every accepted socket and a 16 KiB buffer per
// connection:
//
//   serve_sa        sa::Runtime on all allowed CPUs (ShimMode::off, the
//                   default; VProcs unpinned, as every server's threads
//                   are), a main fiber accepting on an sa::net
//                   TcpListener and one fiber per connection doing
//                   TcpStream::read / write_all (the loop of
//                   samples/echo_server.cpp).
//   serve_liburing  event_loops() threads, each with its own io_uring
//                   (SINGLE_ISSUER | DEFER_TASKRUN when the kernel has them)
//                   and its own SO_REUSEPORT listener: a multishot accept,
//                   then per connection recv -> send (resent until whole)
//                   -> recv, one operation in flight per connection.
//   serve_epoll     event_loops() threads, each with its own epoll
//                   (level-triggered) and SO_REUSEPORT listener,
//                   non-blocking sockets: read, write, and EPOLLOUT only
//                   while a write is short.
//   serve_threads   the main thread accepts; one std::thread per connection
//                   with blocking read / write.
//
// Each is meant to run in a forked child of the benchmark: it listens on
// 127.0.0.1 with a port the kernel picks, writes "port N\n" to `out_fd`,
// closes it, and serves until the process is killed. It never returns; a
// set-up failure ends the process with status 1 and a message on stderr.

namespace sa::bench::echo {

// event_loops() is the number of allowed CPUs: the liburing and epoll
// servers run one loop per CPU, as sa runs one VProc per CPU.
int event_loops();

[[noreturn]] void serve_sa(int out_fd);
[[noreturn]] void serve_liburing(int out_fd);
[[noreturn]] void serve_epoll(int out_fd);
[[noreturn]] void serve_threads(int out_fd);

}  // namespace sa::bench::echo
