// Userfaultfd: the RAII userfaultfd wrapper (uffd.hpp).

#include <sa/shim/uffd.hpp>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <system_error>
#include <utility>

namespace sa::shim {

namespace {

// UFFDIO_POISON (Linux 6.6), absent from older <linux/userfaultfd.h>.
struct uffdio_poison_v1 {
  uffdio_range range;
  uint64_t mode;
  int64_t updated;
};
constexpr uint64_t kPoisonModeDontWake = 1;
constexpr unsigned long kUffdioPoison = _IOWR(UFFDIO, Userfaultfd::kIoctlPoison, uffdio_poison_v1);

[[noreturn]] void fail(int err, const char* what, const void* addr = nullptr, std::size_t len = 0) {
  std::string msg = "userfaultfd: ";
  msg += what;
  if (len) {
    char buf[96];
    std::snprintf(buf, sizeof buf, " of %zu bytes at %p", len, addr);
    msg += buf;
  }
  throw std::system_error(err, std::generic_category(), msg);
}

int open_uffd() {
  const long fd = ::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  if (fd < 0) fail(errno, "userfaultfd(UFFD_USER_MODE_ONLY) refused");
  return static_cast<int>(fd);
}

uffdio_range range_of(void* addr, std::size_t len) noexcept {
  return uffdio_range{reinterpret_cast<uint64_t>(addr), len};
}

// fill() runs a filling ioctl (COPY, ZEROPAGE, POISON) whose struct reports
// the bytes done in *done, resuming it after a partial fill (EAGAIN: the
// kernel stopped early; the rest is still missing).
template <class Arg, class Done, class Advance>
void fill(int fd, unsigned long request, Arg& arg, Done* done, std::size_t len, const char* what, void* dst,
          Advance advance) {
  std::size_t left = len;
  for (;;) {
    *done = 0;
    if (::ioctl(fd, request, &arg) == 0) return;
    const int err = errno;
    if (err != EAGAIN || *done <= 0 || static_cast<std::size_t>(*done) >= left) fail(err, what, dst, len);
    left -= static_cast<std::size_t>(*done);
    advance(static_cast<std::size_t>(*done));
  }
}

}  // namespace

Userfaultfd::Userfaultfd(uint64_t required, uint64_t wanted) {
  // UFFDIO_API may be called once per fd and fails outright for a feature
  // the kernel lacks: ask a first fd what is offered, then open ours.
  {
    const int probe = open_uffd();
    uffdio_api api{};
    api.api = UFFD_API;
    const int r = ::ioctl(probe, UFFDIO_API, &api);
    const int err = errno;
    ::close(probe);
    if (r != 0) fail(err, "UFFDIO_API");
    offered_ = api.features;
  }
  if ((offered_ & required) != required) fail(ENOTSUP, "a required feature is not offered by this kernel");
  fd_ = open_uffd();
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = required | (wanted & offered_);
  if (::ioctl(fd_, UFFDIO_API, &api) != 0) {
    const int err = errno;
    close();
    fail(err, "UFFDIO_API");
  }
  features_ = api.features;
}

Userfaultfd::Userfaultfd(Userfaultfd&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), features_(other.features_), offered_(other.offered_) {}

Userfaultfd& Userfaultfd::operator=(Userfaultfd&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    features_ = other.features_;
    offered_ = other.offered_;
  }
  return *this;
}

Userfaultfd::~Userfaultfd() { close(); }

void Userfaultfd::close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

uint64_t Userfaultfd::register_range(void* addr, std::size_t len, uint64_t modes) {
  uffdio_register reg{};
  reg.range = range_of(addr, len);
  reg.mode = modes;
  if (::ioctl(fd_, UFFDIO_REGISTER, &reg) != 0) fail(errno, "UFFDIO_REGISTER", addr, len);
  return reg.ioctls;
}

void Userfaultfd::unregister_range(void* addr, std::size_t len) {
  uffdio_range r = range_of(addr, len);
  if (::ioctl(fd_, UFFDIO_UNREGISTER, &r) != 0) fail(errno, "UFFDIO_UNREGISTER", addr, len);
}

void Userfaultfd::copy(void* dst, const void* src, std::size_t len, bool wake) {
  uffdio_copy c{};
  c.dst = reinterpret_cast<uint64_t>(dst);
  c.src = reinterpret_cast<uint64_t>(src);
  c.len = len;
  c.mode = wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE;
  fill(fd_, UFFDIO_COPY, c, &c.copy, len, "UFFDIO_COPY", dst, [&](std::size_t n) {
    c.dst += n;
    c.src += n;
    c.len -= n;
  });
}

void Userfaultfd::zeropage(void* dst, std::size_t len, bool wake) {
  uffdio_zeropage z{};
  z.range = range_of(dst, len);
  z.mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE;
  fill(fd_, UFFDIO_ZEROPAGE, z, &z.zeropage, len, "UFFDIO_ZEROPAGE", dst, [&](std::size_t n) {
    z.range.start += n;
    z.range.len -= n;
  });
}

void Userfaultfd::wake(void* addr, std::size_t len) {
  uffdio_range r = range_of(addr, len);
  if (::ioctl(fd_, UFFDIO_WAKE, &r) != 0) fail(errno, "UFFDIO_WAKE", addr, len);
}

void Userfaultfd::write_protect(void* addr, std::size_t len, bool protect, bool wake) {
  uffdio_writeprotect w{};
  w.range = range_of(addr, len);
  w.mode = (protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0) | (!protect && !wake ? UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0);
  if (::ioctl(fd_, UFFDIO_WRITEPROTECT, &w) != 0) fail(errno, "UFFDIO_WRITEPROTECT", addr, len);
}

void Userfaultfd::poison(void* addr, std::size_t len, bool wake) {
  if (!has(kFeaturePoison)) fail(ENOTSUP, "UFFDIO_POISON (UFFD_FEATURE_POISON not granted)", addr, len);
  uffdio_poison_v1 p{};
  p.range = range_of(addr, len);
  p.mode = wake ? 0 : kPoisonModeDontWake;
  fill(fd_, kUffdioPoison, p, &p.updated, len, "UFFDIO_POISON", addr, [&](std::size_t n) {
    p.range.start += n;
    p.range.len -= n;
  });
}

std::size_t Userfaultfd::read(uffd_msg* msgs, std::size_t n) {
  for (;;) {
    const ssize_t got = ::read(fd_, msgs, n * sizeof(uffd_msg));
    if (got >= 0) return static_cast<std::size_t>(got) / sizeof(uffd_msg);
    if (errno == EAGAIN) return 0;
    if (errno != EINTR) fail(errno, "read");
  }
}

}  // namespace sa::shim
