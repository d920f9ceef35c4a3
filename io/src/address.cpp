// sa::net::Address: "host:port" parsing, resolution and formatting.

#include <sa/net.hpp>

#include <arpa/inet.h>
#include <netdb.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>

namespace sa::net {

namespace {

class ResolverCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "getaddrinfo"; }
  std::string message(int ev) const override { return ::gai_strerror(ev); }
};

[[noreturn]] void bad_address(const std::string& why) {
  throw std::system_error(std::make_error_code(std::errc::invalid_argument), "sa::net: " + why);
}

struct HostPort {
  std::string host;  // without brackets; empty: any address
  std::string port;
  bool bracketed = false;
};

HostPort split(std::string_view s) {
  // Appended, not "'" + std::string(s): g++ 12 warns (-Wrestrict, a false
  // positive, GCC bug 105329) on a literal + string temporary.
  std::string quoted = "'";
  quoted.append(s).append("'");
  HostPort hp;
  std::string_view rest;
  if (!s.empty() && s.front() == '[') {
    const auto close = s.find(']');
    if (close == std::string_view::npos) bad_address("missing ']' in " + quoted);
    hp.host = std::string(s.substr(1, close - 1));
    hp.bracketed = true;
    rest = s.substr(close + 1);
    if (rest.empty()) bad_address("no port in " + quoted);
    if (rest.front() != ':') bad_address("unexpected text after ']' in " + quoted);
    rest.remove_prefix(1);
  } else {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos) bad_address("no port in " + quoted);
    if (s.find(':') != colon) bad_address("IPv6 address without brackets in " + quoted + " (write [addr]:port)");
    hp.host = std::string(s.substr(0, colon));
    rest = s.substr(colon + 1);
  }
  if (rest.empty()) bad_address("no port in " + quoted);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), port);
  if (ec == std::errc::result_out_of_range || (ec == std::errc{} && end == rest.data() + rest.size() && port > 65535))
    bad_address("port out of range in " + quoted);
  if (ec != std::errc{} || end != rest.data() + rest.size()) bad_address("bad port in " + quoted);
  hp.port = std::string(rest);
  if (hp.host == "*") hp.host.clear();
  return hp;
}

}  // namespace

const std::error_category& resolver_category() noexcept {
  static const ResolverCategory category;
  return category;
}

std::vector<Address> Address::resolve(std::string_view host_port, int socktype) {
  const HostPort hp = split(host_port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  hints.ai_flags = AI_NUMERICSERV;
  const char* host = hp.host.empty() ? nullptr : hp.host.c_str();
  if (!host) {
    hints.ai_flags |= AI_PASSIVE;
    hints.ai_family = AF_INET;
  }
  if (hp.bracketed) hints.ai_flags |= AI_NUMERICHOST;
  addrinfo* res = nullptr;
  // A numeric host first: it never touches the resolver.
  int rc = ::getaddrinfo(host, hp.port.c_str(), &hints, &res);
  if (rc == EAI_NONAME && hp.bracketed) bad_address("bad IPv6 address in '" + std::string(host_port) + "'");
  if (rc != 0) {
    if (rc == EAI_SYSTEM) throw std::system_error(errno, std::system_category(), "sa::net: resolving '" + std::string(host_port) + "'");
    throw std::system_error(rc, resolver_category(), "sa::net: resolving '" + std::string(host_port) + "'");
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, &::freeaddrinfo);
  std::vector<Address> out;
  for (addrinfo* ai = res; ai; ai = ai->ai_next)
    if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) {
      Address a = from(ai->ai_addr, ai->ai_addrlen);
      bool dup = false;
      for (const Address& b : out) dup |= (a == b);
      if (!dup) out.push_back(a);
    }
  if (out.empty())
    throw std::system_error(EAI_NONAME, resolver_category(), "sa::net: no IPv4 or IPv6 address for '" + std::string(host_port) + "'");
  return out;
}

Address Address::parse(std::string_view host_port) { return resolve(host_port).front(); }

Address Address::from(const sockaddr* sa, socklen_t len) noexcept {
  Address a;
  if (len > sizeof a.storage_) len = sizeof a.storage_;
  std::memcpy(&a.storage_, sa, len);
  a.len_ = len;
  return a;
}

uint16_t Address::port() const noexcept {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

std::string Address::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port());
  }
  if (family() == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf, sizeof buf);
    std::string text = "[";  // (not "[" + std::string(buf): see split())
    text.append(buf).append("]:").append(std::to_string(port()));
    return text;
  }
  return "(no address)";
}

bool Address::operator==(const Address& o) const noexcept {
  return len_ == o.len_ && std::memcmp(&storage_, &o.storage_, len_) == 0;
}

}  // namespace sa::net
