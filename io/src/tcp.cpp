// sa::net::TcpListener and sa::net::TcpStream over the sa::io calls.

#include <sa/net.hpp>

#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include <sa/this_fiber.hpp>

namespace sa::net {

namespace {

// A pause before reporting that no descriptor or memory was left for an
// accepted connection: the caller's retry loop then does not spin.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(10);

[[noreturn]] void throw_errno(int e, const std::string& what) {
  throw std::system_error(e, std::system_category(), "sa::net: " + what);
}

std::error_code errno_code(int e) noexcept { return {e, std::system_category()}; }

Address sock_name(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const int r = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                     : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (r < 0) throw_errno(errno, peer ? "getpeername" : "getsockname");
  return Address::from(reinterpret_cast<sockaddr*>(&ss), len);
}

}  // namespace

// --- TcpListener -------------------------------------------------------------

TcpListener TcpListener::bind(std::string_view addr, int backlog) { return bind(Address::parse(addr), backlog); }

TcpListener TcpListener::bind(const Address& addr, int backlog) {
  TcpListener l;
  l.fd_.reset(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!l.fd_) throw_errno(errno, "socket");
  const int one = 1;
  ::setsockopt(l.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(l.fd(), addr.sockaddr_ptr(), addr.size()) < 0) throw_errno(errno, "bind " + addr.to_string());
  if (::listen(l.fd(), backlog) < 0) throw_errno(errno, "listen on " + addr.to_string());
  return l;
}

TcpStream TcpListener::accept(std::error_code& ec, Deadline deadline) noexcept {
  ec.clear();
  const int fd = io::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC, deadline);
  if (fd >= 0) return TcpStream(fd);
  const int e = errno;
  if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) this_fiber::sleep_for(kAcceptBackoff);
  ec = errno_code(e);
  return TcpStream();
}

TcpStream TcpListener::accept(Deadline deadline) {
  std::error_code ec;
  TcpStream s = accept(ec, deadline);
  if (ec) throw std::system_error(ec, "sa::net: accept");
  return s;
}

Address TcpListener::local_addr() const { return sock_name(fd_.get(), false); }

// --- TcpStream ---------------------------------------------------------------

TcpStream TcpStream::connect(const Address& addr, std::error_code& ec, Deadline deadline) noexcept {
  ec.clear();
  TcpStream s;
  s.fd_.reset(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.fd_) {
    ec = errno_code(errno);
    return s;
  }
  if (io::connect(s.fd(), addr.sockaddr_ptr(), addr.size(), deadline) < 0) {
    ec = errno_code(errno);
    s.close();
  }
  return s;
}

TcpStream TcpStream::connect(const Address& addr, Deadline deadline) {
  std::error_code ec;
  TcpStream s = connect(addr, ec, deadline);
  if (ec) throw std::system_error(ec, "sa::net: connect to " + addr.to_string());
  return s;
}

TcpStream TcpStream::connect(std::string_view addr, Deadline deadline) {
  std::error_code ec;
  for (const Address& a : Address::resolve(addr)) {
    TcpStream s = connect(a, ec, deadline);
    if (!ec) return s;
    if (ec.value() == ETIMEDOUT || ec.value() == ECANCELED) break;
  }
  throw std::system_error(ec, "sa::net: connect to '" + std::string(addr) + "'");
}

std::size_t TcpStream::read(void* buf, std::size_t n, std::error_code& ec, Deadline deadline) noexcept {
  ec.clear();
  const ssize_t r = io::recv(fd_.get(), buf, n, 0, deadline);
  if (r >= 0) return static_cast<std::size_t>(r);
  ec = errno_code(errno);
  return 0;
}

std::size_t TcpStream::read(void* buf, std::size_t n, Deadline deadline) {
  std::error_code ec;
  const std::size_t r = read(buf, n, ec, deadline);
  if (ec) throw std::system_error(ec, "sa::net: read");
  return r;
}

std::size_t TcpStream::read_exact(void* buf, std::size_t n, Deadline deadline) {
  std::size_t got = 0;
  while (got < n) {
    const std::size_t r = read(static_cast<char*>(buf) + got, n - got, deadline);
    if (r == 0) break;
    got += r;
  }
  return got;
}

std::size_t TcpStream::write(const void* buf, std::size_t n, std::error_code& ec, Deadline deadline) noexcept {
  ec.clear();
  const ssize_t r = io::send(fd_.get(), buf, n, 0, deadline);
  if (r >= 0) return static_cast<std::size_t>(r);
  ec = errno_code(errno);
  return 0;
}

std::size_t TcpStream::write(const void* buf, std::size_t n, Deadline deadline) {
  std::error_code ec;
  const std::size_t r = write(buf, n, ec, deadline);
  if (ec) throw std::system_error(ec, "sa::net: write");
  return r;
}

void TcpStream::write_all(const void* buf, std::size_t n, Deadline deadline) {
  std::size_t done = 0;
  while (done < n) done += write(static_cast<const char*>(buf) + done, n - done, deadline);
}

void TcpStream::shutdown(int how) {
  if (::shutdown(fd_.get(), how) < 0) throw_errno(errno, "shutdown");
}

void TcpStream::set_nodelay(bool on) {
  const int v = on ? 1 : 0;
  if (::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) < 0) throw_errno(errno, "TCP_NODELAY");
}

Address TcpStream::peer_addr() const { return sock_name(fd_.get(), true); }
Address TcpStream::local_addr() const { return sock_name(fd_.get(), false); }

}  // namespace sa::net
