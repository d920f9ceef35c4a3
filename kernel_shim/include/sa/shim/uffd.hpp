#pragma once
// Userfaultfd: an RAII userfaultfd, the kernel's page-fault notification
// channel, which the shim's page-fault upcalls are built on (DESIGN.md,
// "Linux mechanisms"; the pager of sa::PagedRegion is its first user).
//
// What it is. A thread that touches a missing page of a range registered
// with a userfaultfd sleeps in the kernel, and a uffd_msg naming the address
// (and, with UFFD_FEATURE_THREAD_ID, the faulting thread) becomes readable
// on the fd. Whoever reads it supplies the page (copy(), zeropage(),
// poison()) and decides when the sleeper resumes: at once, or, with the
// DONTWAKE mode, only at wake() or when a signal interrupts its wait (the
// shim's Shim::resume_faulted(), which makes a Lost activation hold before
// its next user instruction, I1, or leaves it asleep until a processor is
// handed to it).
//
// Choices.
//   - Always opened with UFFD_USER_MODE_ONLY: it needs no privilege (with
//     vm.unprivileged_userfaultfd = 0 a plain userfaultfd needs
//     CAP_SYS_PTRACE), and faults taken by the kernel on the user's behalf
//     (a read(2) into a missing page) are not reported: such a system call
//     fails with EFAULT instead. Always O_CLOEXEC | O_NONBLOCK: read() never
//     blocks; wait for readability with poll(2) or io_uring.
//   - Every failure throws std::system_error carrying the errno and naming
//     the operation, the address and the length, so that a failed copy reads
//     "userfaultfd: UFFDIO_COPY of 4096 bytes at 0x7f...: File exists".
//   - The constants of features newer than the system's <linux/userfaultfd.h>
//     (Debian 12 ships 6.1 headers) are declared here from the kernel's UAPI;
//     whether the running kernel has them is asked at open (features()) and
//     at register (the ioctl mask register_range() returns).
//
// Thread safety: the ioctls may be issued from any thread at once (the
// kernel serialises what needs it); the object itself is not shared-mutable.
// None of the calls blocks the kernel thread for longer than the kernel's
// mm lock (they never wait for a fault); read() never blocks.

#include <linux/userfaultfd.h>

#include <cstddef>
#include <cstdint>

namespace sa::shim {

class Userfaultfd {
 public:
  // UFFD_FEATURE_POISON and UFFDIO_POISON (Linux 6.6): install a marker
  // that makes every access to the page raise SIGBUS.
  static constexpr uint64_t kFeaturePoison = uint64_t{1} << 14;
  static constexpr unsigned kIoctlPoison = 0x08;  // _UFFDIO_POISON: its bit in the ioctl mask

  // Opens a userfaultfd (UFFD_USER_MODE_ONLY, O_CLOEXEC, O_NONBLOCK) and
  // negotiates the API: every feature in `required` must be granted (else
  // std::system_error(ENOTSUP)), those in `wanted` are taken if the kernel
  // offers them. Throws std::system_error with the errno of the refused
  // syscall or ioctl (ENOSYS, EPERM under a seccomp filter, EMFILE...).
  // Never blocks.
  explicit Userfaultfd(uint64_t required, uint64_t wanted = 0);
  Userfaultfd(const Userfaultfd&) = delete;
  Userfaultfd& operator=(const Userfaultfd&) = delete;
  Userfaultfd(Userfaultfd&& other) noexcept;
  Userfaultfd& operator=(Userfaultfd&& other) noexcept;
  // Closes the fd: the kernel unregisters every range and wakes every
  // thread still asleep in a fault on them (they retry unregistered).
  ~Userfaultfd();

  int fd() const noexcept { return fd_; }
  // features() are the UFFD_FEATURE_* bits granted at open.
  uint64_t features() const noexcept { return features_; }
  bool has(uint64_t feature) const noexcept { return (features_ & feature) == feature; }
  // offered() are the features the kernel offers (granted or not).
  uint64_t offered() const noexcept { return offered_; }

  // register_range() registers [addr, addr + len) (page-aligned) with
  // `modes` (UFFDIO_REGISTER_MODE_*) and returns the mask of the ioctls
  // (bit _UFFDIO_*) usable on it. Throws std::system_error. Never blocks.
  uint64_t register_range(void* addr, std::size_t len, uint64_t modes);
  // unregister_range() undoes register_range() and wakes the range's
  // sleepers. Throws std::system_error. Never blocks.
  void unregister_range(void* addr, std::size_t len);

  // copy() atomically fills the missing pages [dst, dst + len) with the
  // bytes at `src` (UFFDIO_COPY; partial copies are resumed) and, unless
  // `wake` is false (UFFDIO_COPY_MODE_DONTWAKE), wakes the range's
  // sleepers. Throws std::system_error (EEXIST: a page was already there).
  // Never blocks.
  void copy(void* dst, const void* src, std::size_t len, bool wake);
  // zeropage() fills missing pages with zeros; otherwise as copy().
  void zeropage(void* dst, std::size_t len, bool wake);
  // wake() wakes every thread asleep in a fault on [addr, addr + len)
  // (UFFDIO_WAKE). Throws std::system_error. Never blocks.
  void wake(void* addr, std::size_t len);
  // write_protect() sets (protect = true) or clears uffd write protection
  // on present pages (UFFDIO_WRITEPROTECT; the range must be registered
  // with UFFDIO_REGISTER_MODE_WP). Clearing wakes the range's write-fault
  // sleepers unless `wake` is false. Throws std::system_error. Never blocks.
  void write_protect(void* addr, std::size_t len, bool protect, bool wake = true);
  // poison() marks missing pages so that every access raises SIGBUS
  // (UFFDIO_POISON, needs kFeaturePoison) and wakes the range's sleepers
  // unless `wake` is false. Throws std::system_error. Never blocks.
  void poison(void* addr, std::size_t len, bool wake);

  // read() reads up to `n` pending messages without blocking and returns how
  // many it read: 0 when none is pending. Throws std::system_error on other
  // errors. Never blocks.
  std::size_t read(uffd_msg* msgs, std::size_t n);

 private:
  void close() noexcept;
  int fd_ = -1;
  uint64_t features_ = 0;
  uint64_t offered_ = 0;
};

}  // namespace sa::shim
