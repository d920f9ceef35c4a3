#pragma once
// <sa/net.hpp>: blocking-style TCP and UDP sockets for fibers, on the
// per-VProc io_uring reactor of <sa/io.hpp> (read its design comment).
//
// Every socket owns its descriptor (sa::io::Fd): destroying or closing it
// cancels the operations other fibers have in flight on it, which fail with
// ECANCELED. Calls that wait park the calling fiber and never its kernel
// thread; outside the runtime they block the thread (plain system calls).
// Errors are std::system_error with the errno (or a std::error_code in the
// overloads that take one); end of stream is a read of 0 bytes; nothing here
// ever raises SIGPIPE (MSG_NOSIGNAL). Addresses are "host:port" with IPv6
// hosts in brackets ("[::1]:8080"); host names are resolved with
// getaddrinfo, which blocks the kernel thread (numeric hosts do not).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>

#include <sa/io.hpp>

namespace sa::net {

using io::Deadline;
using io::kNoDeadline;

// resolver_category(): errors of getaddrinfo (EAI_*), with gai_strerror text.
const std::error_category& resolver_category() noexcept;

// Address: an IPv4 or IPv6 socket address (a value type).
class Address {
 public:
  Address() noexcept = default;  // empty: family() == AF_UNSPEC

  // parse() reads "host:port" ("127.0.0.1:80", "[::1]:80", "localhost:0",
  // ":80" or "*:80" for any IPv4 address) and returns the first address it
  // resolves to. Throws std::system_error: EINVAL with a message that names
  // the problem ("no port in 'localhost'"), or a resolver_category() error.
  static Address parse(std::string_view host_port);
  // resolve() is every address parse() could return, in getaddrinfo order.
  static std::vector<Address> resolve(std::string_view host_port, int socktype = SOCK_STREAM);
  // from() copies a sockaddr the kernel filled in.
  static Address from(const sockaddr* sa, socklen_t len) noexcept;

  int family() const noexcept { return storage_.ss_family; }
  uint16_t port() const noexcept;
  // to_string() is "a.b.c.d:port" or "[v6]:port".
  std::string to_string() const;
  const sockaddr* sockaddr_ptr() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t size() const noexcept { return len_; }
  bool operator==(const Address& o) const noexcept;

 private:
  sockaddr_storage storage_{};
  socklen_t len_ = 0;
};

class TcpStream;

// TcpListener: a listening TCP socket.
class TcpListener {
 public:
  TcpListener() noexcept = default;

  // bind() creates a socket for `addr` (SO_REUSEADDR), binds and listens
  // with `backlog`. Never parks; throws std::system_error.
  static TcpListener bind(std::string_view addr, int backlog = 1024);
  static TcpListener bind(const Address& addr, int backlog = 1024);

  // accept() waits for a connection and returns it. Parks the fiber; throws
  // std::system_error (ETIMEDOUT, ECANCELED, ...). On EMFILE, ENFILE, ENOBUFS
  // or ENOMEM it first parks the fiber for a short pause (10 ms), so a
  // loop that reports the error and retries does not spin.
  TcpStream accept(Deadline deadline = kNoDeadline);
  TcpStream accept(std::error_code& ec, Deadline deadline = kNoDeadline) noexcept;

  // local_addr() is the bound address (with the port the kernel chose).
  Address local_addr() const;
  int fd() const noexcept { return fd_.get(); }
  bool is_open() const noexcept { return static_cast<bool>(fd_); }
  // close() stops listening; accepts in flight fail with ECANCELED. May park.
  void close() noexcept { fd_.reset(); }

 private:
  io::Fd fd_;
};

// TcpStream: a connected TCP socket.
class TcpStream {
 public:
  TcpStream() noexcept = default;
  // Adopts a connected socket descriptor.
  explicit TcpStream(int fd) noexcept : fd_(fd) {}

  // connect() connects to `addr` (trying each resolved address in turn)
  // before `deadline`. Parks the fiber; throws std::system_error
  // (ECONNREFUSED, ETIMEDOUT, ...).
  static TcpStream connect(std::string_view addr, Deadline deadline = kNoDeadline);
  static TcpStream connect(const Address& addr, Deadline deadline = kNoDeadline);
  static TcpStream connect(const Address& addr, std::error_code& ec, Deadline deadline = kNoDeadline) noexcept;
  // connect() with a timeout is connect() with deadline now + timeout.
  template <class Rep, class Period>
  static TcpStream connect(std::string_view addr, std::chrono::duration<Rep, Period> timeout) {
    return connect(addr, io::deadline_after(timeout));
  }

  // read() reads up to n bytes; 0 means the peer closed its side. Parks the
  // fiber until some data, EOF, the deadline or an error; throws
  // std::system_error (ECONNRESET, ETIMEDOUT, ECANCELED, ...).
  std::size_t read(void* buf, std::size_t n, Deadline deadline = kNoDeadline);
  std::size_t read(void* buf, std::size_t n, std::error_code& ec, Deadline deadline = kNoDeadline) noexcept;
  // read_exact() reads until n bytes or EOF and returns the count (< n only
  // at EOF). Parks the fiber; throws like read().
  std::size_t read_exact(void* buf, std::size_t n, Deadline deadline = kNoDeadline);
  // write() writes up to n bytes and returns the count (> 0). Parks the
  // fiber; throws std::system_error (EPIPE, ECONNRESET, ETIMEDOUT, ...).
  std::size_t write(const void* buf, std::size_t n, Deadline deadline = kNoDeadline);
  std::size_t write(const void* buf, std::size_t n, std::error_code& ec, Deadline deadline = kNoDeadline) noexcept;
  // write_all() writes all n bytes (looping over short writes) before the
  // deadline. Parks the fiber; throws like write().
  void write_all(const void* buf, std::size_t n, Deadline deadline = kNoDeadline);
  void write_all(std::string_view s, Deadline deadline = kNoDeadline) { write_all(s.data(), s.size(), deadline); }

  // shutdown() shuts down one or both directions (SHUT_RD, SHUT_WR,
  // SHUT_RDWR). Never parks; throws std::system_error.
  void shutdown(int how = SHUT_WR);
  // close() closes the socket; operations in flight on it fail with
  // ECANCELED. May park the fiber while they are cancelled.
  void close() noexcept { fd_.reset(); }
  // set_nodelay() sets TCP_NODELAY. Never parks; throws std::system_error.
  void set_nodelay(bool on = true);

  Address peer_addr() const;
  Address local_addr() const;
  int fd() const noexcept { return fd_.get(); }
  bool is_open() const noexcept { return static_cast<bool>(fd_); }

 private:
  io::Fd fd_;
};

// UdpSocket: a datagram socket.
class UdpSocket {
 public:
  UdpSocket() noexcept = default;

  // bind() creates a UDP socket bound to `addr` ("127.0.0.1:0", "[::1]:0").
  // Never parks; throws std::system_error.
  static UdpSocket bind(std::string_view addr);
  static UdpSocket bind(const Address& addr);

  // send_to() sends one datagram to `to` and returns its size. Parks the
  // fiber; throws std::system_error.
  std::size_t send_to(const void* buf, std::size_t n, const Address& to, Deadline deadline = kNoDeadline);
  // recv_from() receives one datagram (truncated to n bytes), stores the
  // sender in `from` and returns its size. Parks the fiber; throws
  // std::system_error (ETIMEDOUT, ECANCELED, ...).
  std::size_t recv_from(void* buf, std::size_t n, Address& from, Deadline deadline = kNoDeadline);

  Address local_addr() const;
  int fd() const noexcept { return fd_.get(); }
  // close() closes the socket; receives in flight fail with ECANCELED.
  void close() noexcept { fd_.reset(); }

 private:
  io::Fd fd_;
};

}  // namespace sa::net
