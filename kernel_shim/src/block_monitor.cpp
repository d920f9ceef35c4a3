// BlockMonitor: perf switch records (or /proc task states) -> Shim::handoff.

#include <sa/shim/block_monitor.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sa/shim/futex.hpp>
#include <sa/shim/shim.hpp>

#include "switch_events.hpp"

namespace sa::shim {

namespace {

constexpr size_t kDataPages = 8;
constexpr int64_t kFallbackPeriodNs = 50'000;
constexpr int64_t kSweepPeriodNs = 1'000'000;  // the sysmon's period while the monitor keeps up
constexpr int64_t kSweepFastNs = 100'000;      // ... while it lags
// A block a runner has left this long is the sysmon's (its CPU is busy with
// another process's thread, or the runner's wake-up is late).
constexpr int64_t kRunnerGraceNs = 50'000;
// An activation preempted this long means a thread of another process
// wants its CPU: a CPU-bound one keeps it for a time slice (0.75-3 ms).
// Shorter preemptions are mostly our own: the sysmon's sweep, a Lost
// activation's wake-up until it holds, a spare's start.
constexpr int64_t kContendedPreemptNs = 300'000;
// A CPU turns contended at a second sign of it, in another sweep, within
// kConfirmNs of the first (a CPU-bound thread gives one per time slice; a
// kernel worker's blip gives one), and stays so until kContendedHoldNs
// after the last: its processors' streams stay live for the monitor
// meanwhile (Shim::set_cpu_contended).
constexpr int64_t kConfirmNs = 100'000'000;
constexpr int64_t kContendedHoldNs = 500'000'000;

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
  bool in_epoll = false;  // monitor thread only
  uint64_t swept_head = 0;  // data_head at the last sweep (sysmon, under lock_)
  // A block its records showed and no handoff has dealt with yet (0: none),
  // since when it is noted (a sysmon sweep ago: overdue), and the handoff
  // tries so far; under lock_, by the monitor and the sysmon.
  int64_t block_at = 0;
  bool block_overdue = false;
  int block_tries = 0;
  // The last sweep found it Resuming and still asleep (sysmon, under lock_).
  bool resuming_asleep = false;
  // The preemption record last reported from its run-state word (sysmon,
  // under lock_; for activations a runner watches, whose stream is paused).
  int64_t preempt_seen = 0;
  uint64_t preempt_cursor = 0;  // run-state records read for contention (sysmon, under lock_)
  ~Watch() {
    if (ring != MAP_FAILED) ::munmap(ring, ring_len);
    if (fd >= 0) ::close(fd);
  }
};

BlockMonitor::BlockMonitor(Shim& shim, bool use_perf) : shim_(shim), perf_(use_perf) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "sa: eventfd for the block monitor");
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    const int err = errno;
    ::close(wake_fd_);
    throw std::system_error(err, std::generic_category(), "sa: epoll_create1 for the block monitor");
  }
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.ptr = nullptr;  // the wake eventfd
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &e) != 0) {
    const int err = errno;
    ::close(epoll_fd_);
    ::close(wake_fd_);
    throw std::system_error(err, std::generic_category(), "sa: epoll_ctl for the block monitor");
  }
  if (!use_perf) std::fprintf(stderr, "sa: block monitor: perf records disabled; using the /proc fallback\n");
  if (const char* v = std::getenv("SA_MONITOR_SWEEP_ONLY")) sweep_only_ = v[0] == '1';
  thread_ = std::thread([this] { run(); });
  if (use_perf) {
    try {
      sysmon_ = std::thread([this] { run_sysmon(); });
    } catch (...) {
      stopping_.store(true, std::memory_order_seq_cst);
      kick();
      thread_.join();
      ::close(epoll_fd_);
      ::close(wake_fd_);
      throw;
    }
  }
}

BlockMonitor::~BlockMonitor() {
  stopping_.store(true, std::memory_order_seq_cst);
  kick();
  kick_sysmon();
  if (thread_.joinable()) thread_.join();
  if (sysmon_.joinable()) sysmon_.join();
  watches_.clear();
  ::close(epoll_fd_);
  ::close(wake_fd_);
}

void BlockMonitor::kick() noexcept {
  uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(wake_fd_, &one, sizeof one);
}

void BlockMonitor::call_started() noexcept { kick(); }

void BlockMonitor::activity() noexcept {
  if (!perf()) {
    kick();
    return;
  }
  // Pairs with the fence in run_sysmon(): either it sees our new state, or
  // we see that it sleeps without a timeout.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (asleep_unarmed_.load(std::memory_order_relaxed)) kick_sysmon();
}

void BlockMonitor::kick_sysmon() noexcept {
  sysmon_word_.fetch_add(1, std::memory_order_release);
  futex_wake(sysmon_word_, 1);
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
    if (w->fd >= 0 && w->ring != MAP_FAILED) a.watch(w->fd);
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
  a.watch(-1);  // (its own thread) the monitor closes the fd once it drops the watch
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
  // Records from before the stream's last pause are stale: they may show
  // an old switch of an activation that has run (or blocked) since.
  const int64_t fresh_from = w.a ? w.a->stream_since_ns() : 0;
  while (tail < head) {
    perf_event_header hdr;
    copy(&hdr, tail, sizeof hdr);
    if (hdr.size < sizeof hdr) break;
    if (hdr.type == PERF_RECORD_SWITCH) {
      uint64_t time = 0;
      if (hdr.size >= sizeof hdr + sizeof time) copy(&time, tail + sizeof hdr, sizeof time);
      if (static_cast<int64_t>(time) < fresh_from) {
        tail += hdr.size;
        continue;
      }
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
  if (last == 2 && (state == ActivationState::Lost || state == ActivationState::Resumable) &&
      !a->signalled.exchange(true)) {
    // Step 6: it woke while its processor is elsewhere (or, Resumable,
    // before one was handed to it): make it hold.
    a->woke_at_ns.store(static_cast<int64_t>(last_time), std::memory_order_relaxed);
    ::syscall(SYS_tgkill, ::getpid(), a->tid(), Shim::kHoldSignal());
    return false;
  }
  blocked_at = static_cast<int64_t>(last_time);
  if (last != 1) return false;
  if (state == ActivationState::InCall) return blocked_at >= a->call_started_ns.load(std::memory_order_relaxed);
  return state == ActivationState::User;
}

void BlockMonitor::lift() noexcept {
  if (lifted_) return;
  sched_param normal{};
  lifted_ = ::sched_setscheduler(0, SCHED_OTHER, &normal) == 0;
  if (lifted_) n_lifts_.fetch_add(1, std::memory_order_relaxed);
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

bool BlockMonitor::any_exposed() noexcept {
  std::lock_guard g(lock_);
  for (const auto& w : watches_) {
    if (!w->a) continue;
    if (w->block_at != 0) return true;  // a handoff to try again
    switch (w->a->state()) {
      case ActivationState::Running:  // may run fiber code next
      case ActivationState::User:
      case ActivationState::InCall:
      case ActivationState::Lost:
      case ActivationState::Held:  // will run fiber code once given a processor
      case ActivationState::Resumable:
      case ActivationState::Resuming:
        return true;
      default:  // Idle, Spare, Blocked, Leaving, Starting: each gets to
        break;  // Running only through activity() or through us
    }
  }
  return false;
}

void BlockMonitor::note_block(Watch& w, int64_t blocked_at, bool overdue) noexcept {
  if (w.block_at != blocked_at) w.block_tries = 0;
  w.block_at = blocked_at;
  w.block_overdue = overdue;
}

bool BlockMonitor::hand_off_blocks(bool overdue_only) noexcept {
  std::vector<Pending> todo;
  bool noted = false;
  {
    std::lock_guard g(lock_);
    for (auto& w : watches_) {
      if (!w->a || w->block_at == 0) continue;
      noted = true;
      if (overdue_only && !w->block_overdue) {
        w->block_overdue = true;  // the next sweep acts on it
        continue;
      }
      todo.push_back(Pending{w->a, w->block_at, w->block_tries++});
    }
  }
  // The common case, at each of the monitor's wake-ups: nothing noted.
  if (!noted) return false;
  if (!overdue_only) lift();  // handoffs take the shim's locks
  // Outside our lock: the shim may start an activation, which attaches to
  // us. The monitor and the sysmon may try the same block at once: the
  // shim lets one of them in. A block is dealt with once its activation
  // left the call or fiber code (handed off, or running again), not when
  // handoff() returns: that also means "the other one is on it", and the
  // other one may be the monitor, preempted in the middle.
  for (Pending& p : todo) {
    const bool stale = p.a->state() == ActivationState::InCall &&
                       p.blocked_at_ns < p.a->call_started_ns.load(std::memory_order_relaxed);
    if (stale || (p.retries > 0 && !task_sleeping(p.a->tid()))) {
      p.retries = -1;  // from an earlier call, or it runs again: drop
      continue;
    }
    shim_.handoff(*p.a, p.blocked_at_ns, overdue_only ? Shim::HandoffBy::sysmon : Shim::HandoffBy::monitor);
  }
  std::lock_guard g(lock_);
  bool left = false;
  for (auto& w : watches_) {
    if (!w->a || w->block_at == 0) continue;
    const ActivationState st = w->a->state();
    bool dropped = false;
    for (const Pending& p : todo) dropped |= p.a == w->a && p.retries < 0 && p.blocked_at_ns == w->block_at;
    if (dropped || (st != ActivationState::InCall && st != ActivationState::User)) {
      w->block_at = 0;
      w->block_overdue = false;
    } else {
      left = true;
    }
  }
  return left;
}

bool BlockMonitor::sweep() noexcept {
  bool found = false;
  const int64_t now = now_ns();
  ++sweeps_;
  {
    std::lock_guard g(lock_);
    for (auto& w : watches_) {
      if (!w->a || w->ring == MAP_FAILED) continue;
      if (watched_by_runner(*w, now)) found = true;
      // Handed a processor, signalled, and still asleep a sweep later: its
      // fiber blocks the hold signal. Wake it on its page instead.
      const bool resuming_asleep =
          w->a->state() == ActivationState::Resuming && w->a->cpu_state() == CpuState::Sleeping;
      if (resuming_asleep && w->resuming_asleep) shim_.wake_resuming(*w->a);
      w->resuming_asleep = resuming_asleep;
      const auto* meta = static_cast<const perf_event_mmap_page*>(w->ring);
      const uint64_t head = __atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE);
      // Records still unread since the last sweep: the monitor did not get
      // to them (it is starved, or their wake-up never came). Records whose
      // wake-up is on its way are left to it.
      const bool overdue = head != meta->data_tail && head == w->swept_head;
      w->swept_head = head;
      if (!overdue) continue;
      found = true;
      n_swept_.fetch_add(1, std::memory_order_relaxed);
      int64_t blocked_at = 0;
      if (drain(*w, blocked_at)) note_block(*w, blocked_at, /*overdue=*/true);
    }
  }
  // A CPU's contention starts or ends: outside our lock (the shim takes its
  // own and syncs the streams of the activations running there).
  for (Contention& c : contention_) {
    const bool on = now < c.until_ns;
    if (on == c.on) continue;
    c.on = on;
    shim_.set_cpu_contended(c.cpu, on);
  }
  // A runner's handoffs leave the pool's restocking to us (a normal thread).
  if (shim_.runners_on()) shim_.restock();
  // Blocks found here, and blocks the monitor noted a sweep ago and has
  // not handed off (it may have been preempted right after it read them).
  return hand_off_blocks(/*overdue_only=*/true) || found;
}

void BlockMonitor::contended(int cpu, int64_t now) noexcept {
  Contention* c = nullptr;
  for (Contention& have : contention_)
    if (have.cpu == cpu) c = &have;
  if (!c) c = &contention_.emplace_back(Contention{cpu});
  if (c->sign_sweep == sweeps_) return;  // one sign per sweep
  if (c->on || (c->sign_sweep != 0 && now - c->sign_ns <= kConfirmNs)) c->until_ns = now + kContendedHoldNs;
  c->sign_ns = now;
  c->sign_sweep = sweeps_;
}

bool BlockMonitor::watched_by_runner(Watch& w, int64_t now) noexcept {
  Activation& a = *w.a;
  if (!shim_.runners_on()) return false;
  const ActivationState st = a.state();
  const int vp = a.vproc.load(std::memory_order_relaxed);
  const int cpu = vp < 0 ? -1 : shim_.cpu_of(vp);
  if (cpu < 0) return false;
  // Any long preemption since the last sweep, whatever it does now: some
  // other thread wants the CPU, where a runner would get only scraps.
  if (a.longest_preemption(w.preempt_cursor, now) >= kContendedPreemptNs) contended(cpu, now);
  if (st != ActivationState::Running && st != ActivationState::User && st != ActivationState::InCall) return false;
  // The kernel's run-state word shows what a paused stream's records
  // would: preemptions (notices, unless the stream is live and the monitor
  // reads them) and blocks the runner has not handed off.
  int64_t since = 0;
  const CpuState cs = a.cpu_state(&since);
  if (cs == CpuState::Preempted) {
    if (since != w.preempt_seen && !a.stream_live()) {
      w.preempt_seen = since;
      shim_.preempted(a);
    }
    return false;
  }
  if (cs != CpuState::Sleeping || st == ActivationState::Running || now - since < kRunnerGraceNs) return false;
  if (st == ActivationState::InCall && since < a.call_started_ns.load(std::memory_order_relaxed)) return false;
  contended(cpu, now);  // the runner had no CPU for it
  note_block(w, since, /*overdue=*/true);
  return true;
}

void BlockMonitor::run_sysmon() noexcept {
  ::pthread_setname_np(::pthread_self(), "sa-sysmon");
  // SCHED_OTHER, unlike the monitor: under CPU hogs on every CPU a
  // SCHED_IDLE thread waits milliseconds for a CPU (handoff p50 11-20 ms
  // with a hog per CPU on the 2-CPU VM), a normal one does not. It wakes on
  // a timer, never per record, so its preemption of an activation (two
  // records) cannot feed back into more wake-ups of its own: the monitor at
  // nice 0 or 10 lost about 30% of blocking_mix's compute to that loop.
  // While the monitor lags (a sweep found work it left), sweep every
  // kSweepFastNs; back off to kSweepPeriodNs, doubling, once it keeps up.
  int64_t period = kSweepPeriodNs;
  while (!stopping_.load(std::memory_order_seq_cst)) {
    const uint32_t seen = sysmon_word_.load(std::memory_order_acquire);
    // A sleep without a timeout needs every activation out of reach of
    // fiber code; one that gets back to it calls activity(), which kicks us
    // if we went to sleep unarmed (Dekker: each side writes, fences, then
    // reads the other's word).
    asleep_unarmed_.store(true, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const bool exposed = any_exposed();
    if (exposed) asleep_unarmed_.store(false, std::memory_order_relaxed);
    futex_wait(sysmon_word_, seen,
               exposed ? Clock::now() + std::chrono::nanoseconds(period) : Clock::time_point::max());
    asleep_unarmed_.store(false, std::memory_order_relaxed);
    if (stopping_.load(std::memory_order_seq_cst)) break;
    period = sweep() ? kSweepFastNs : std::min(2 * period, kSweepPeriodNs);
  }
}

void BlockMonitor::run() noexcept {
  ::pthread_setname_np(::pthread_self(), "sa-monitor");
  // SCHED_IDLE: the monitor runs on a CPU only when nothing else wants it.
  // An activation that blocks vacates its CPU, so the monitor wakes there at
  // once; but it never preempts a running activation, which would write two
  // switch records and wake it again (a feedback loop that cost about 30% of
  // the compute throughput with SCHED_OTHER). An idle-class thread must not
  // hold a lock that others wait for, though: preempted by a CPU-bound
  // thread it keeps it until its CPU idles again (beside a CPU hog, 1.4 s
  // here). So it reads its records under its own lock, which a normal
  // waiter lifts it out of (IdleHolderLock), and takes any other lock (a
  // handoff: the pool's, the held queue's, a stream's) only at SCHED_OTHER
  // (lift()), until its next wait. A sched_setscheduler costs about 2 µs;
  // the wake-ups with no block to hand off (most of them: an activation
  // holding kicks us) pay none.
  sched_param idle{};
  ::sched_setscheduler(0, SCHED_IDLE, &idle);
  lock_.set_idle_thread();
  uint32_t lifts_seen = 0;
  // One epoll set of the wake eventfd and every watch's perf fd: a wake-up
  // costs the ready fds only. (poll() over all of them cost about a third of
  // a CPU with 64 activations faulting, most of it setting up and tearing
  // down a wait-queue entry per fd per wake-up.)
  constexpr int kMaxEvents = 64;
  epoll_event events[kMaxEvents];
  bool blocks_left = false;  // noted blocks still waiting for a spare
  while (!stopping_.load(std::memory_order_seq_cst)) {
    {
      std::lock_guard g(lock_);
      if (dirty_) {
        // Watches leave the set before they are freed; no event of theirs
        // is pending (events are consumed in the iteration that got them).
        std::erase_if(watches_, [this](const std::unique_ptr<Watch>& w) {
          if (w->a != nullptr) return false;
          if (w->in_epoll) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, w->fd, nullptr);
          return true;
        });
        for (auto& w : watches_)
          if (!w->in_epoll && !sweep_only_ && w->fd >= 0 && w->ring != MAP_FAILED) {
            // Edge-triggered: each record's wake-up reports the fd once
            // (perf_poll() consumes the readiness anyway), and a reported
            // fd is not polled again at the next epoll_wait.
            epoll_event e{};
            e.events = EPOLLIN | EPOLLET;
            e.data.ptr = w.get();
            w->in_epoll = ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, w->fd, &e) == 0;
          }
        dirty_ = false;
      }
    }
    // Poll every 50 µs while a handoff waits for a spare or, without perf,
    // while some activation runs (the shim kicks us when one starts to).
    // With perf, records wake us; the sysmon sweeps for the ones we miss.
    bool in_call = !pending_.empty() || blocks_left;
    if (!perf())  // (lock-free: no lift needed)
      shim_.for_each_activation([&](Activation& a) {
        const ActivationState st = a.state();
        in_call |= st == ActivationState::InCall || st == ActivationState::User || st == ActivationState::Lost ||
                   st == ActivationState::Running;
      });
    timespec period{0, kFallbackPeriodNs};
    // Back to the idle class to wait, if lifted (by us or a waiter).
    if (lifted_) {
      ::sched_setscheduler(0, SCHED_IDLE, &idle);
      lifted_ = false;
    }
    lock_.drop_lift(lifts_seen);
    const int n = ::epoll_pwait2(epoll_fd_, events, kMaxEvents, in_call ? &period : nullptr, nullptr);
    if (n < 0 && errno != EINTR) break;
    {
      std::lock_guard g(lock_);  // a detach may clear Watch::a meanwhile
      int64_t blocked_at = 0;
      for (int i = 0; i < n; ++i) {
        auto* w = static_cast<Watch*>(events[i].data.ptr);
        if (!w) {
          uint64_t v;
          [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
          continue;
        }
        if (drain(*w, blocked_at)) note_block(*w, blocked_at, /*overdue=*/false);
      }
    }
    blocks_left = hand_off_blocks(/*overdue_only=*/false);
    if (!perf()) scan_fallback();
    // Hand off outside our lock: the shim may start an activation, which
    // attaches to us. Keep the ones that wait for a spare.
    if (!pending_.empty()) lift();
    std::erase_if(pending_, [this](Pending& p) {
      if (p.retries++ > 0 && !task_sleeping(p.a->tid())) return true;  // it runs again: drop
      return shim_.handoff(*p.a, p.blocked_at_ns);
    });
  }
}

}  // namespace sa::shim
