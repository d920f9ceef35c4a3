#pragma once
// sa::PagedRegion: memory whose missing pages a user-level pager supplies,
// with page faults turned into scheduler-activation upcalls (issue 6).
//
// Problem. A far-memory or demand-paged data structure faults on pages that
// must be fetched (from the network, a file, a compressor). The kernel
// blocks the faulting kernel thread; under plain M:N threads that is the
// thread carrying a VProc, so the processor is lost for the whole fetch, and
// when the fetch itself needs a fiber to run (it reads a socket, waits on a
// lock) every VProc faulting at once is a deadlock (DESIGN.md, defect 1).
// The paper's kernel upcalls on a page fault like on any block; here the
// fault goes to userfaultfd, and the pager is a fiber of the same runtime.
//
// Concepts.
//   - Region: an anonymous private mapping of `size` bytes in `page_size`
//     pages (a multiple of the system page), registered with a userfaultfd
//     (kernel_shim/include/sa/shim/uffd.hpp): UFFD_USER_MODE_ONLY, missing
//     mode, UFFD_FEATURE_THREAD_ID, plus write-protect mode when a writeback
//     is given. Transparent huge pages are off for it.
//   - Pager: the user's `void(size_t page, std::span<std::byte> out)`, run
//     as a fiber (it may park: sa::io, sleep, lock) that fills a page-sized
//     staging buffer, installed atomically with UFFDIO_COPY.
//   - Fault server: a fiber that waits for the uffd to be readable (one
//     io_uring poll on an epoll set of the uffd and a stop eventfd: it parks,
//     never blocks its activation), reads uffd_msg batches and routes each
//     fault by the page's state (below).
//   - Waiter: a faulting thread id (the message's ptid) with the time its
//     message was read. Resolving a page resumes each waiter with
//     Shim::resume_faulted(tid). A lone waiter that is a Lost activation
//     stays asleep, queued for a processor, and the VProc that takes it
//     wakes it with the hold signal (one wake-up per fault). Otherwise an
//     activation's fault wait is interrupted by the hold signal at once (a
//     Lost one holds in the handler before any user instruction, I1), and
//     one UFFDIO_WAKE on the page wakes the other threads (outside the
//     runtime, or ShimMode::off) and a faulter whose signal mask blocks the
//     hold signal.
//   - Budget: at most `resident_pages` pages are resident or being filled
//     or evicted. A fill past it first evicts a victim chosen by CLOCK.
//
// Page states (PageState; each says who owns the page's memory and queue):
//   Missing   not mapped; in no queue. A fault makes it Filling.
//   Filling   a pager owns the staging buffer; faulting tids collect in the
//             page's waiter list (several faults on one page: one fill).
//   Resident  mapped and in the CLOCK ring; the user owns the bytes.
//   Evicting  out of the ring, being written back (write-protected, so a
//             writer faults and waits) and dropped (MADV_DONTNEED). Faults
//             wait and are resumed once it is Missing: they fault again.
//   Failed    the pager threw; the page is poisoned: every access raises
//             SIGBUS. It holds no budget.
// State changes go through one function that checks the old state, under
// the region's lock.
//
// Protocol of one fault (thread T touches missing page p):
//   1. The kernel puts T to sleep in the fault and queues a message; with
//      ShimMode::on and T an activation running a fiber's own code, the
//      shim's monitor sees T switch out blocked, moves it to Lost and hands
//      its VProc to a spare (upcall activation_blocked) - so the server and
//      the pager have a processor even if every VProc faulted (I4).
//   2. The server reads the message: p Missing -> Filling, T is p's first
//      waiter, a pager fiber starts. p Filling or Evicting: T joins the
//      waiters. p Resident (filled after T faulted) or Failed: T is resumed
//      at once.
//   3. The pager fiber reserves budget (step E below if it is exhausted),
//      runs the pager into a staging buffer, then UFFDIO_COPY with
//      UFFDIO_COPY_MODE_DONTWAKE: no sleeper runs yet.
//   4. Under the lock p becomes Resident (CLOCK bit set) and the waiter
//      list is taken; then each waiter is resumed (resume_faulted), then,
//      unless the only waiter was left asleep, one UFFDIO_WAKE of p wakes
//      the rest. A Lost activation resumed so holds until a VProc hands it a
//      processor (shim.hpp, steps 6-8, and the Resumable shortcut).
//   Eviction (E), by a pager fiber that needs budget:
//   E1. CLOCK: the hand passes resident pages, clearing set bits, and takes
//       the first clear one: victim v, Resident -> Evicting.
//   E2. With a writeback: UFFDIO_WRITEPROTECT v (a concurrent writer now
//       faults and waits: nothing changes v's bytes from here), run the
//       writeback on v's bytes in place.
//   E3. MADV_DONTNEED v; Evicting -> Missing; resume v's waiters (they
//       fault again and are served by a new fill). The freed budget goes to
//       the evicting pager, which carries on at step 3.
//
// Fault modes. Steps 1-4 are the `upcall` mode (the default): the paper's
// mechanism, a fault is a blocked activation. On the 2-CPU VM it costs
// about 4 kernel context switches and 60-150 µs of CPU per fault (switch
// records, the monitor, a spare's wake-up, the faulter's), so a pager
// faster than that cannot be hidden. `park_fiber` gives the fault back to
// the user-level scheduler on the thread that took it, as the paper's
// upcall hands over the blocked thread's machine state: the uffd is opened
// with UFFD_FEATURE_SIGBUS, so the kernel raises SIGBUS in the faulting
// thread instead of putting it to sleep, and the handler (on the fiber's
// own stack, not the alternate one) parks the fiber (about 8 µs for the
// signal and the copy on the VM). Protocol (fiber F touches missing page p):
//   P1. The kernel raises SIGBUS (BUS_ADRERR) in F's thread; the handler
//       finds the region in a process-wide table, enters the runtime
//       (RuntimeSection) and takes the region's lock.
//   P2. By p's state, as in step 2: Missing -> Filling and a pager fiber is
//       launched; Filling or Evicting: F joins the waiters; Resident (filled
//       since), the handler returns and the access is retried.
//   P3. F parks on a Waiter in p's list; the lock is released on the far
//       side of the switch (park()). A fault that cannot park waits on its
//       thread (a futex on the Waiter) instead, as a blocking fault would
//       (thread_waits): a thread outside the runtime, a fiber holding an
//       sa::Spinlock (it stays on its activation) or a runtime SpinLock (a
//       Channel copying a value out of the region: a fiber of the same
//       thread could spin on it for ever; detail::tl_spin_locks), and,
//       with the shim on, runtime code (an activation already Running).
//       Such a wait holds the VProc: with one VProc nothing runs the pager
//       then (as for a blocking fault in upcall mode, where such code is
//       not handed off either).
//   P4. Step 4 wakes the Waiter (try_wake): F is ready on any VProc. When
//       it runs again the handler stores the signal mask and the alternate
//       stack of the thread it now runs on into the signal frame (sigreturn
//       would otherwise install those of the fault's time: another
//       thread's, or undo a change other fibers made here), restores F's
//       errno through a fresh __errno_location() (glibc's is const: the old
//       thread's address could be reused) and returns: the access is
//       retried, normally on a mapped page. (A fault that did not park
//       keeps the frame as it is, unless it comes back on another thread:
//       one inside sa::blocking() may, when entering the runtime ends the
//       announced call and its processor was handed off meanwhile.)
// What park_fiber asks of the code that touches the region: F may resume on
// another kernel thread, and other fibers run on its thread meanwhile,
// exactly as at any sa:: call. So do not touch the region while holding
// something that belongs to the kernel thread: a std::mutex or
// pthread_mutex, a stdio FILE (fwrite of region bytes holds its lock), a
// thread_local whose address the compiler may have kept. Touching it in
// plain loads, stores, memcpy or a std:: algorithm is the intended use.
// Page contents, coalescing, budget and eviction are those of upcall mode;
// only the wait differs. A fault on a poisoned page (BUS_MCEERR_AR) and
// every other SIGBUS go to the action installed before sa's, as it would
// have run: a handler (with its sa_mask, on the faulting stack), the
// default action (the process dies), or ignored if it was and the signal is
// not a fault. A handler installed after sa's that does not pass our
// faults on replaces the mode until the next park_fiber region is made
// (which installs sa's again, in front of it). The handler allocates (the
// page's waiter list, the pager fiber): safe, as the faulting instruction
// touches the region and so is never inside malloc. Also asked:
//   - SIGBUS must not be blocked in a thread that touches the region: the
//     kernel kills the process for a fault on a blocked SIGBUS. sa's
//     activations unblock SIGBUS and SIGSEGV when they start; threads
//     outside the runtime are the user's.
//   - Stack for the signal frame: about 3.6 KiB on this CPU (AT_MINSIGSTKSZ)
//     plus the handler's own, on the faulting fiber's stack.
//   - Not supported: CET shadow stacks (sigreturn on another thread checks
//     the frame against that thread's shadow stack), per-thread protection
//     keys (PKRU), and a fault taken while on the thread's alternate signal
//     stack (a handler of the user's touching the region).
// Under TSan the mode is refused (std::invalid_argument): tried, the
// process died of SIGBUS in TSan's signal wrapper, which also reports those
// allocations as signal-unsafe.
//
// Errors.
//   - Bad options (size 0, a size or page size that is not a multiple of
//     the page, no pager) throw std::invalid_argument; a refused
//     userfaultfd, mmap or registration throws std::system_error with its
//     errno.
//   - A pager that throws: "sa: pager for page N of region R threw: what
//     (fiber F)" on stderr, and the page is poisoned (UFFDIO_POISON), so the
//     faulting access raises SIGBUS in the faulting thread, as an access to
//     a mapped file's page that cannot be read does; never a zero page.
//     Without UFFD_FEATURE_POISON (Linux < 6.6) the process aborts instead.
//   - A writeback that throws: the message, then abort (the page's data
//     would be lost).
//   - More than 64 park_fiber regions at once: std::length_error.
//   - Destroying a region while faults on it are pending (waiters, or
//     messages not yet read): "sa: region R destroyed while N faults are
//     pending (pages ...)" and abort: the sleepers would otherwise wake on
//     unmapped memory. Destroy it after the fibers and threads that touch
//     it are done, and before its Runtime.
//
// Restrictions.
//   - UFFD_USER_MODE_ONLY: the kernel does not fault pages in on the user's
//     behalf. A system call given a missing page of the region (read(2)
//     into it, an io_uring buffer) fails with EFAULT: touch the page first.
//   - Without a writeback, eviction drops a page's bytes: the pager is the
//     source of truth, writes to the region are lost when a page is evicted.
//   - Userspace sees no accessed bits (clear_refs is process-wide, page_idle
//     needs privilege), so CLOCK's reference bit is set only by a fill and
//     by faults that find the page being filled: a new page gets one lap of
//     grace, time for its faulters to use it. The budget should exceed the
//     number of threads that fault at once, or a page may be evicted before
//     its faulter touched it (thrashing).
//   - A pager must not touch its own region (a fault of the pager on a page
//     it is filling waits for itself).
//   - ShimMode::on: every faulting activation stays Lost until its page is
//     filled. Raise Options::max_activations above the number of fibers that
//     may fault at once plus the VProcs; past the limit a faulting
//     activation keeps its VProc, and if all do, the pagers cannot run.
//   - ShimMode::off with pagers as fibers (the default): when every VProc's
//     thread is asleep in a fault nothing runs the pagers: the deadlock the
//     shim removes. `pager_threads` serves faults on kernel threads of the
//     region's own instead, as a plain M:N runtime must.
//
// Rejected designs.
//   - Waking faulters with UFFDIO_COPY's own wake: a woken Lost activation
//     would run user code beside the spare holding its VProc until the
//     monitor noticed (the measured I1 window); resume_faulted makes it hold
//     first.
//   - The fault server in the reactor's poll(): it runs on one VProc and
//     would fill pages inline; a fiber lets pagers park and spreads them.
//   - A fault server on its own kernel thread (the default being fibers):
//     pagers could not park on fibers' events without a VProc, and that
//     thread would run beside the VProcs (oversubscription, I1). It is the
//     `pager_threads` baseline.
//   - mprotect + SIGSEGV instead of userfaultfd: the handler would run on the
//     faulting thread, in a signal context, where a pager cannot park.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include <sa/shim/shim.hpp>

namespace sa {

class Runtime;

enum class PagedFaultMode {
  upcall,      // the faulting thread sleeps in the fault (protocol steps 1-4)
  park_fiber,  // a fault raises SIGBUS on the faulting thread; its fiber parks (P1-P4)
};

struct PagedRegionOptions {
  // Bytes in the region: > 0 and a multiple of page_size.
  std::size_t size = 0;
  // Bytes per page: 0 = the system page size; otherwise a multiple of it.
  std::size_t page_size = 0;
  // Most pages resident (or being filled or evicted) at once; 0 = no limit.
  std::size_t resident_pages = 0;
  // Fills `out` (page_size bytes) with page `page`'s contents. Runs as a
  // fiber of the runtime (or on a pager thread, see pager_threads); it may
  // park. Required.
  std::function<void(std::size_t page, std::span<std::byte> out)> pager;
  // Optional: stores page `page`'s bytes before it is evicted (the page is
  // write-protected meanwhile). Without it, evicted pages are dropped.
  std::function<void(std::size_t page, std::span<const std::byte> data)> writeback;
  // 0: the fault server and pagers are fibers of the runtime. n > 0: n
  // kernel threads of the region's own, outside the runtime, read faults and
  // call the pager and writeback inline (sa:: calls in them block that
  // thread): what a plain M:N runtime (ShimMode::off) must do.
  int pager_threads = 0;
  // How a fault is delivered ("Fault modes" above). upcall: the faulting
  // kernel thread sleeps in the kernel (a blocked activation, handed off
  // with ShimMode::on). park_fiber: the fault comes back to the faulting
  // thread as a signal and only its fiber parks; nothing sleeps in the
  // kernel, in either shim mode. Not with pager_threads.
  PagedFaultMode fault_mode = PagedFaultMode::upcall;
  // Name used in messages; empty: "region@<address>".
  std::string name;
};

struct PagedRegionStats {
  uint64_t faults = 0;          // faults served (messages read, or signals in park_fiber mode)
  uint64_t coalesced = 0;       // faults that joined a fill of the same page already under way
  uint64_t pages_filled = 0;    // pager calls installed with UFFDIO_COPY
  uint64_t refills = 0;         // ... of pages that had been evicted before
  uint64_t pager_failures = 0;  // pager calls that threw (pages poisoned)
  uint64_t evictions = 0;       // pages dropped for the budget
  uint64_t writebacks = 0;      // writeback calls
  uint64_t resumed_by_shim = 0; // waiters resumed with Shim::resume_faulted
  uint64_t woken = 0;           // waiters woken with UFFDIO_WAKE (other threads, ShimMode::off)
  uint64_t parked = 0;          // park_fiber: faults that parked only their fiber
  uint64_t thread_waits = 0;    // park_fiber: faults that waited on their thread (P3)
  std::size_t resident = 0;     // pages resident now
  std::size_t resident_high_water = 0;
  double pager_seconds = 0;     // time spent in pager calls, summed
  shim::LatencyHistogram pager_us;    // per pager call
  shim::LatencyHistogram blocked_us;  // per fault: message read (or signal) -> resumed
                                      // (a held activation then waits for a VProc)
};

namespace detail {
class PagedCore;
}

class PagedRegion {
 public:
  // Maps and registers the region and starts its fault server on the
  // calling fiber's runtime. Throws std::logic_error outside a fiber,
  // std::invalid_argument for bad options, std::system_error when the
  // mapping or userfaultfd is refused. Never blocks the fiber.
  explicit PagedRegion(PagedRegionOptions options);
  // The same on `rt`, from any thread; may block the calling fiber or
  // thread briefly (it asks a fiber of `rt` for the runtime's internals).
  PagedRegion(Runtime& rt, PagedRegionOptions options);
  PagedRegion(const PagedRegion&) = delete;
  PagedRegion& operator=(const PagedRegion&) = delete;
  // Stops the fault server, unmaps the region. Aborts with a message if
  // faults on it are pending (see "Errors"). Blocks the calling fiber (or
  // thread) until the server has stopped.
  ~PagedRegion();

  // data() is the region's first byte; touching a page may fault: its
  // activation sleeps until the pager filled it (upcall mode), or only its
  // fiber parks (park_fiber). Never blocks.
  std::byte* data() const noexcept;
  // size() is the region's size in bytes, page_size() the page size,
  // pages() the number of pages. Never block.
  std::size_t size() const noexcept;
  std::size_t page_size() const noexcept;
  std::size_t pages() const noexcept;
  // bytes() is the region as a span; page(i) is page i's bytes. Never
  // block (touching the bytes may fault, as for data()).
  std::span<std::byte> bytes() const noexcept { return {data(), size()}; }
  std::span<std::byte> page(std::size_t i) const noexcept {
    return {data() + i * page_size(), page_size()};
  }
  // name() is the region's name in messages.
  const std::string& name() const noexcept;
  // write_protected_eviction() is true if the region was registered with
  // uffd write protection (it has a writeback): eviction write-protects a
  // page before writing it back. Never blocks.
  bool write_protected_eviction() const noexcept;

  // stats() reads the counters; takes the region's lock briefly, never
  // parks. Any thread.
  PagedRegionStats stats() const;

 private:
  std::unique_ptr<detail::PagedCore> core_;
};

}  // namespace sa
