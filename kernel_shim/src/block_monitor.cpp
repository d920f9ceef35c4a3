// BlockMonitor: perf switch records (or /proc task states) -> Shim::handoff.

#include <sa/shim/block_monitor.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sa/shim/shim.hpp>

#include "switch_events.hpp"

namespace sa::shim {

namespace {

constexpr size_t kDataPages = 8;
constexpr int64_t kFallbackPeriodNs = 50'000;

int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

size_t page_size() noexcept { return static_cast<size_t>(::sysconf(_SC_PAGESIZE)); }

// task_sleeping() reads a thread's state from /proc: true for S or D.
bool task_sleeping(int tid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* paren = std::strrchr(buf, ')');
  if (!paren || paren[1] != ' ') return false;
  return paren[2] == 'S' || paren[2] == 'D';
}

}  // namespace

// One watched activation: its perf fd and ring buffer (RAII).
struct BlockMonitor::Watch {
  Activation* a = nullptr;
  int fd = -1;
  void* ring = MAP_FAILED;
  size_t ring_len = 0;
  ~Watch() {
    if (ring != MAP_FAILED) ::munmap(ring, ring_len);
    if (fd >= 0) ::close(fd);
  }
};

BlockMonitor::BlockMonitor(Shim& shim, bool use_perf) : shim_(shim), perf_(use_perf) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "sa: eventfd for the block monitor");
  if (!use_perf) std::fprintf(stderr, "sa: block monitor: perf records disabled; using the /proc fallback\n");
  thread_ = std::thread([this] { run(); });
}

BlockMonitor::~BlockMonitor() {
  stopping_.store(true, std::memory_order_seq_cst);
  kick();
  if (thread_.joinable()) thread_.join();
  watches_.clear();
  ::close(wake_fd_);
}

void BlockMonitor::kick() noexcept {
  uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(wake_fd_, &one, sizeof one);
}

void BlockMonitor::call_started() noexcept { kick(); }

void BlockMonitor::activity() noexcept {
  if (!perf()) kick();
}

void BlockMonitor::attach(Activation& a) noexcept {
  auto w = std::make_unique<Watch>();
  w->a = &a;
  if (perf_.load(std::memory_order_relaxed)) {
    w->fd = detail::open_switch_events(/*wake_per_record=*/true);
    if (w->fd >= 0) {
      w->ring_len = (1 + kDataPages) * page_size();
      w->ring = ::mmap(nullptr, w->ring_len, PROT_READ | PROT_WRITE, MAP_SHARED, w->fd, 0);
    }
    if (w->fd < 0 || w->ring == MAP_FAILED) {
      const int err = errno;
      if (perf_.exchange(false))
        std::fprintf(stderr, "sa: perf_event_open refused (%s); block monitor falls back to /proc task states\n",
                     std::strerror(err));
      w = std::make_unique<Watch>();
      w->a = &a;
    }
  }
  {
    std::lock_guard g(lock_);
    watches_.push_back(std::move(w));
    dirty_ = true;
  }
  kick();
}

void BlockMonitor::detach(Activation& a) noexcept {
  {
    std::lock_guard g(lock_);
    for (auto& w : watches_)
      if (w && w->a == &a) {
        // Keep the Watch object until the monitor rebuilt its poll set.
        w->a = nullptr;
      }
    dirty_ = true;
  }
  kick();
}

bool BlockMonitor::drain(Watch& w, int64_t& blocked_at) noexcept {
  auto* meta = static_cast<perf_event_mmap_page*>(w.ring);
  const size_t page = page_size();
  const uint64_t size = meta->data_size ? meta->data_size : kDataPages * page;
  const char* data = static_cast<const char*>(w.ring) + (meta->data_offset ? meta->data_offset : page);
  // acquire: the records below head are complete.
  const uint64_t head = __atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE);
  uint64_t tail = meta->data_tail;
  auto copy = [&](void* dst, uint64_t at, size_t n) {
    for (size_t i = 0; i < n; ++i) static_cast<char*>(dst)[i] = data[(at + i) % size];
  };
  // The last switch of the batch decides: a block followed by a switch-in
  // already returned to user space.
  int last = 0;  // 0 none, 1 blocked, 2 running
  uint64_t last_time = 0;
  while (tail < head) {
    perf_event_header hdr;
    copy(&hdr, tail, sizeof hdr);
    if (hdr.size < sizeof hdr) break;
    if (hdr.type == PERF_RECORD_SWITCH) {
      uint64_t time = 0;
      if (hdr.size >= sizeof hdr + sizeof time) copy(&time, tail + sizeof hdr, sizeof time);
      const bool out = hdr.misc & PERF_RECORD_MISC_SWITCH_OUT;
      const bool preempted = hdr.misc & PERF_RECORD_MISC_SWITCH_OUT_PREEMPT;
      if (out && preempted && w.a) shim_.preempted(*w.a);
      last = out && !preempted ? 1 : 2;
      last_time = time;
    }
    tail += hdr.size;
  }
  // release: the kernel may reuse what we read.
  __atomic_store_n(&meta->data_tail, tail, __ATOMIC_RELEASE);
  Activation* a = w.a;
  if (!a) return false;
  const ActivationState state = a->state();
  if (last == 2 && state == ActivationState::Lost && !a->signalled.exchange(true)) {
    // Step 6: it woke while its processor is elsewhere: make it hold.
    a->woke_at_ns.store(static_cast<int64_t>(last_time), std::memory_order_relaxed);
    ::syscall(SYS_tgkill, ::getpid(), a->tid(), Shim::kHoldSignal());
    return false;
  }
  blocked_at = static_cast<int64_t>(last_time);
  if (last != 1) return false;
  if (state == ActivationState::InCall) return blocked_at >= a->call_started_ns.load(std::memory_order_relaxed);
  return state == ActivationState::User;
}

void BlockMonitor::scan_fallback() noexcept {
  const int64_t now = now_ns();
  shim_.for_each_activation([&](Activation& a) {
    const ActivationState st = a.state();
    if (st == ActivationState::InCall &&
        now - a.call_started_ns.load(std::memory_order_relaxed) >= kFallbackPeriodNs && task_sleeping(a.tid()))
      pending_.push_back(Pending{&a, a.call_started_ns.load(std::memory_order_relaxed)});
    // A fiber's own code asleep in the kernel for two looks in a row (its
    // VProc makes no progress): an unannounced block.
    if (st == ActivationState::User) {
      if (!task_sleeping(a.tid())) {
        a.fallback_asleep_since_ns = 0;
      } else if (a.fallback_asleep_since_ns == 0) {
        a.fallback_asleep_since_ns = now;
      } else if (now - a.fallback_asleep_since_ns >= kFallbackPeriodNs) {
        pending_.push_back(Pending{&a, a.fallback_asleep_since_ns});
        a.fallback_asleep_since_ns = 0;
      }
    }
    // A Lost activation that is running again must hold (step 6).
    if (a.state() == ActivationState::Lost && !task_sleeping(a.tid()) && !a.signalled.exchange(true)) {
      a.woke_at_ns.store(now, std::memory_order_relaxed);
      a.fallback_asleep_since_ns = 0;
      ::syscall(SYS_tgkill, ::getpid(), a.tid(), Shim::kHoldSignal());
    }
  });
}

void BlockMonitor::run() noexcept {
  ::pthread_setname_np(::pthread_self(), "sa-monitor");
  // SCHED_IDLE: the monitor runs on a CPU only when nothing else wants it.
  // An activation that blocks vacates its CPU, so the monitor wakes there at
  // once; but it never preempts a running activation, which would write two
  // switch records and wake it again (a feedback loop that cost about 30% of
  // the compute throughput with SCHED_OTHER).
  sched_param idle{};
  ::sched_setscheduler(0, SCHED_IDLE, &idle);
  std::vector<pollfd> fds;
  std::vector<Watch*> ws;
  while (!stopping_.load(std::memory_order_seq_cst)) {
    {
      std::lock_guard g(lock_);
      if (dirty_) {
        std::erase_if(watches_, [](const std::unique_ptr<Watch>& w) { return w->a == nullptr; });
        fds.assign(1, pollfd{wake_fd_, POLLIN, 0});
        ws.assign(1, nullptr);
        for (auto& w : watches_)
          if (w->fd >= 0 && w->ring != MAP_FAILED) {
            fds.push_back(pollfd{w->fd, POLLIN, 0});
            ws.push_back(w.get());
          }
        dirty_ = false;
      }
    }
    // Poll every 50 µs while a handoff waits for a spare or, without perf,
    // while some activation runs (the shim kicks us when one starts to).
    bool in_call = !pending_.empty();
    if (!perf())
      shim_.for_each_activation([&](Activation& a) {
        const ActivationState st = a.state();
        in_call |= st == ActivationState::InCall || st == ActivationState::User || st == ActivationState::Lost ||
                   st == ActivationState::Running;
      });
    timespec period{0, kFallbackPeriodNs};
    int n = ::ppoll(fds.data(), fds.size(), in_call ? &period : nullptr, nullptr);
    if (n < 0 && errno != EINTR) break;
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
    }
    {
      std::lock_guard g(lock_);  // a detach may clear Watch::a meanwhile
      int64_t blocked_at = 0;
      for (size_t i = 1; i < fds.size(); ++i)
        if ((fds[i].revents & POLLIN) && drain(*ws[i], blocked_at)) pending_.push_back(Pending{ws[i]->a, blocked_at});
    }
    if (!perf()) scan_fallback();
    // Hand off outside our lock: the shim may start an activation, which
    // attaches to us. Keep the ones that wait for a spare.
    std::erase_if(pending_, [this](Pending& p) {
      if (p.retries++ > 0 && !task_sleeping(p.a->tid())) return true;  // it runs again: drop
      return shim_.handoff(*p.a, p.blocked_at_ns);
    });
  }
}

}  // namespace sa::shim
