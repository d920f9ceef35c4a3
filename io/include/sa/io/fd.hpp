#pragma once
// sa::io::Fd: sole owner of a file descriptor (RAII); closing it goes
// through sa::io::close, so operations in flight on it are cancelled first.

#include <utility>

namespace sa::io {

class Fd {
 public:
  Fd() noexcept = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  // get() is the descriptor, -1 if none.
  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  // release() gives up ownership and returns the descriptor.
  int release() noexcept { return std::exchange(fd_, -1); }
  // reset() closes the descriptor (sa::io::close: may park the fiber while
  // operations in flight are cancelled) and takes `fd` instead.
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

}  // namespace sa::io
