#pragma once
// sa::io::File: a file whose reads, writes and syncs go through the calling
// fiber's io_uring reactor (the fiber parks; its kernel thread does not).

#include <cstddef>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <sys/types.h>

#include <sa/io/fd.hpp>

namespace sa::io {

class File {
 public:
  File() noexcept = default;

  // open() opens `path` like open(2) (O_CLOEXEC is added) and throws
  // std::system_error with the errno and the path. Parks the fiber.
  static File open(const std::string& path, int flags = O_RDONLY, mode_t mode = 0644);
  static File open(const std::string& path, int flags, mode_t mode, std::error_code& ec) noexcept;

  // read_at() reads up to n bytes at `offset`; returns the count, 0 at end
  // of file. Parks the fiber; throws std::system_error.
  std::size_t read_at(void* buf, std::size_t n, off_t offset);
  // write_at() writes all n bytes at `offset` (looping over short writes).
  // Parks the fiber; throws std::system_error.
  void write_at(const void* buf, std::size_t n, off_t offset);
  // fsync() flushes data and metadata (datasync: data only). Parks the fiber.
  void fsync(bool datasync = false);
  // size() is the file's size in bytes (fstat). Never parks.
  off_t size() const;
  // close() closes the file (no-op if closed). May park the fiber.
  void close() noexcept { fd_.reset(); }

  int fd() const noexcept { return fd_.get(); }
  bool is_open() const noexcept { return static_cast<bool>(fd_); }

 private:
  explicit File(int fd) noexcept : fd_(fd) {}
  Fd fd_;
};

}  // namespace sa::io
