// sa::net::UdpSocket over the sa::io calls.

#include <sa/net.hpp>

#include <cerrno>

namespace sa::net {

namespace {

[[noreturn]] void throw_errno(int e, const std::string& what) {
  throw std::system_error(e, std::system_category(), "sa::net: " + what);
}

}  // namespace

UdpSocket UdpSocket::bind(std::string_view addr) { return bind(Address::resolve(addr, SOCK_DGRAM).front()); }

UdpSocket UdpSocket::bind(const Address& addr) {
  UdpSocket s;
  s.fd_.reset(::socket(addr.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.fd_) throw_errno(errno, "socket");
  if (::bind(s.fd(), addr.sockaddr_ptr(), addr.size()) < 0) throw_errno(errno, "bind " + addr.to_string());
  return s;
}

std::size_t UdpSocket::send_to(const void* buf, std::size_t n, const Address& to, Deadline deadline) {
  const ssize_t r = io::sendto(fd_.get(), buf, n, 0, to.sockaddr_ptr(), to.size(), deadline);
  if (r < 0) throw_errno(errno, "send_to " + to.to_string());
  return static_cast<std::size_t>(r);
}

std::size_t UdpSocket::recv_from(void* buf, std::size_t n, Address& from, Deadline deadline) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const ssize_t r = io::recvfrom(fd_.get(), buf, n, 0, reinterpret_cast<sockaddr*>(&ss), &len, deadline);
  if (r < 0) throw_errno(errno, "recv_from");
  from = Address::from(reinterpret_cast<sockaddr*>(&ss), len);
  return static_cast<std::size_t>(r);
}

Address UdpSocket::local_addr() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len) < 0) throw_errno(errno, "getsockname");
  return Address::from(reinterpret_cast<sockaddr*>(&ss), len);
}

}  // namespace sa::net
