// sa::io::File: open, positioned reads and writes, fsync on io_uring.

#include <sa/io.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "reactor.hpp"

namespace sa::io {

namespace {

[[noreturn]] void throw_errno(int e, const std::string& what) {
  throw std::system_error(e, std::system_category(), "sa::io::File: " + what);
}

}  // namespace

File File::open(const std::string& path, int flags, mode_t mode, std::error_code& ec) noexcept {
  ec.clear();
  flags |= O_CLOEXEC;
  int fd;
  if (sa::detail::current_fiber()) {
    fd = detail::call(sa::detail::TimerHeap::kNever, -1,
                      [&](io_uring_sqe* s) { io_uring_prep_openat(s, AT_FDCWD, path.c_str(), flags, mode); });
  } else {
    fd = ::open(path.c_str(), flags, mode);
    if (fd < 0) fd = -errno;
  }
  if (fd < 0) {
    ec = std::error_code(-fd, std::system_category());
    return File();
  }
  return File(fd);
}

File File::open(const std::string& path, int flags, mode_t mode) {
  std::error_code ec;
  File f = open(path, flags, mode, ec);
  if (ec) throw std::system_error(ec, "sa::io::File: open '" + path + "'");
  return f;
}

std::size_t File::read_at(void* buf, std::size_t n, off_t offset) {
  const ssize_t r = io::pread(fd_.get(), buf, n, offset);
  if (r < 0) throw_errno(errno, "read_at");
  return static_cast<std::size_t>(r);
}

void File::write_at(const void* buf, std::size_t n, off_t offset) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t r = io::pwrite(fd_.get(), static_cast<const char*>(buf) + done, n - done,
                                 offset + static_cast<off_t>(done));
    if (r < 0) throw_errno(errno, "write_at");
    if (r == 0) throw_errno(EIO, "write_at wrote nothing");
    done += static_cast<std::size_t>(r);
  }
}

void File::fsync(bool datasync) {
  int res;
  if (sa::detail::current_fiber()) {
    const int fd = fd_.get();
    res = detail::call(sa::detail::TimerHeap::kNever, fd, [&](io_uring_sqe* s) {
      io_uring_prep_fsync(s, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
    });
  } else {
    res = datasync ? ::fdatasync(fd_.get()) : ::fsync(fd_.get());
    if (res < 0) res = -errno;
  }
  if (res < 0) throw_errno(-res, "fsync");
}

off_t File::size() const {
  struct stat st{};
  if (::fstat(fd_.get(), &st) < 0) throw_errno(errno, "fstat");
  return st.st_size;
}

}  // namespace sa::io
