#include <sa/shim/activation.hpp>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include <system_error>

namespace sa::shim {

namespace {

// An alternate signal stack for the calling thread, so that a SIGSEGV on a
// fiber's guard page can still run a handler. RAII: unmapped at thread exit.
class AltStack {
 public:
  AltStack() {
    size_ = 64 * 1024;
    mem_ = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem_ == MAP_FAILED) {
      mem_ = nullptr;
      return;  // no report on overflow, but the runtime still works
    }
    stack_t ss{};
    ss.ss_sp = mem_;
    ss.ss_size = size_;
    ::sigaltstack(&ss, nullptr);
  }
  ~AltStack() {
    if (!mem_) return;
    stack_t ss{};
    ss.ss_flags = SS_DISABLE;
    ::sigaltstack(&ss, nullptr);
    ::munmap(mem_, size_);
  }
  AltStack(const AltStack&) = delete;
  AltStack& operator=(const AltStack&) = delete;

 private:
  void* mem_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

const char* to_string(ActivationState s) noexcept {
  switch (s) {
    case ActivationState::Starting: return "Starting";
    case ActivationState::Spare: return "Spare";
    case ActivationState::Running: return "Running";
    case ActivationState::User: return "User";
    case ActivationState::InCall: return "InCall";
    case ActivationState::Lost: return "Lost";
    case ActivationState::Held: return "Held";
    case ActivationState::Resumable: return "Resumable";
    case ActivationState::Resuming: return "Resuming";
    case ActivationState::Leaving: return "Leaving";
    case ActivationState::Blocked: return "Blocked";
    case ActivationState::Idle: return "Idle";
    case ActivationState::Exited: return "Exited";
  }
  return "?";
}

Activation::Activation(int id, std::function<void(Activation&)> body) : id_(id), body_(std::move(body)) {
  try {
    thread_ = std::thread([this] { main(); });
  } catch (const std::system_error& e) {
    throw std::system_error(e.code(), "sa: cannot start activation " + std::to_string(id));
  }
}

Activation::~Activation() { join(); }

void Activation::join() noexcept {
  if (thread_.joinable()) thread_.join();
}

constinit thread_local Activation* Activation::tl_current_ = nullptr;

void Activation::watch_run_state() noexcept {
  if (run_state_.load(std::memory_order_relaxed)) return;
  run_state_owner_ = RunStateWord::open_for_this_thread();
  // release: readers on other threads see the mapped ring.
  run_state_.store(run_state_owner_.get(), std::memory_order_release);
}

namespace {

// change() moves `word` from state `from` to `to` (a new epoch if `bump`);
// false if it is in another state. acq_rel: observers (the monitor, stats)
// see the state together with what the activation did before the change.
bool change(std::atomic<uint32_t>& word, ActivationState from, ActivationState to, bool bump,
            ActivationState* seen) noexcept {
  uint32_t w = word.load(std::memory_order_relaxed);
  for (;;) {
    if (Activation::state_of(w) != from) {
      if (seen) *seen = Activation::state_of(w);
      return false;
    }
    const uint32_t epoch = (w >> 8) + (bump ? 1u : 0u);
    if (word.compare_exchange_weak(w, epoch << 8 | static_cast<uint32_t>(to), std::memory_order_acq_rel,
                                   std::memory_order_relaxed))
      return true;
  }
}

}  // namespace

void Activation::set_state(ActivationState from, ActivationState to) noexcept {
  ActivationState seen = from;
  if (!change(state_, from, to, /*bump=*/false, &seen)) {
    std::fprintf(stderr, "sa: activation %d: bad state change %s -> %s (was %s)\n", id_, to_string(from),
                 to_string(to), to_string(seen));
    std::abort();
  }
}

void Activation::new_epoch(ActivationState from, ActivationState to) noexcept {
  ActivationState seen = from;
  if (!change(state_, from, to, /*bump=*/true, &seen)) {
    std::fprintf(stderr, "sa: activation %d: bad state change %s -> %s (was %s)\n", id_, to_string(from),
                 to_string(to), to_string(seen));
    std::abort();
  }
}

bool Activation::try_state(ActivationState from, ActivationState to) noexcept {
  return change(state_, from, to, /*bump=*/false, nullptr);
}

void Activation::apply_stream(bool live) noexcept {
  if (stream_live_.load(std::memory_order_relaxed) == live) return;
  stream_live_.store(live, std::memory_order_relaxed);
  if (live) {
    // Before the ioctl: every record it lets through is later (records
    // carry CLOCK_MONOTONIC times, as steady_clock).
    timespec t{};
    ::clock_gettime(CLOCK_MONOTONIC, &t);
    stream_since_ns_.store(int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec, std::memory_order_release);
  }
  if (watch_fd_ >= 0) ::ioctl(watch_fd_, PERF_EVENT_IOC_PAUSE_OUTPUT, live ? 0 : 1);
}

void Activation::set_stream(bool live) noexcept {
  if (stream_live_.load(std::memory_order_relaxed) == live) return;  // rechecked under the lock
  stream_locked([&] { apply_stream(live); });
}

void Activation::pin(int cpu) noexcept {
  if (cpu < 0 || pinned_cpu_.load(std::memory_order_relaxed) == cpu) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  // Failure (a cpuset changed under us) leaves the thread where it was,
  // which is slower but correct; the next pin() tries again.
  const bool ok = ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set) == 0;
  pinned_cpu_.store(ok ? cpu : -1, std::memory_order_relaxed);
}

void Activation::main() {
  tl_current_ = this;
  tid_.store(static_cast<int>(::gettid()), std::memory_order_release);
  char name[16];
  std::snprintf(name, sizeof name, "sa-act%d", id_);
  ::pthread_setname_np(::pthread_self(), name);
  // The runtime's timers (sleep_for, deadlines) end in this thread's futex
  // and io_uring waits; the kernel's default 50 µs slack made every one of
  // them about 50 µs late (sleep_for(50 µs) took 120 µs at p50, 64 µs with
  // this).
  ::prctl(PR_SET_TIMERSLACK, kTimerSlackNs);
  // A thread inherits its creator's policy, and the monitor and the idle
  // runners, which may start activations when the pool runs dry, are
  // SCHED_IDLE: an activation left there would run its processor only when
  // nothing else wants the CPU. Leave it (an unprivileged process may be
  // refused: RLIMIT_NICE; then say so once).
  if (::sched_getscheduler(0) == SCHED_IDLE) {
    sched_param normal{};
    if (::sched_setscheduler(0, SCHED_OTHER, &normal) != 0) {
      static std::atomic<bool> warned{false};
      if (!warned.exchange(true))
        std::fprintf(stderr, "sa: activation %d started in SCHED_IDLE and cannot leave it (%s); "
                             "it runs a processor only when its CPU is otherwise idle\n",
                     id_, std::strerror(errno));
    }
  }
  AltStack alt;
  // A fault's signal is delivered or kills: the kernel resets a blocked
  // SIGSEGV or SIGBUS to its default action. So the stack overflow report
  // (SIGSEGV) and park_fiber faults (SIGBUS, <sa/paged_region.hpp>) need
  // them unblocked here, even when the thread that made the runtime had
  // blocked every signal (as for a sigwait() thread).
  sigset_t faults;
  sigemptyset(&faults);
  sigaddset(&faults, SIGSEGV);
  sigaddset(&faults, SIGBUS);
  ::pthread_sigmask(SIG_UNBLOCK, &faults, nullptr);
  body_(*this);
  state_.store((state_.load(std::memory_order_relaxed) & ~0xffu) | static_cast<uint32_t>(ActivationState::Exited),
               std::memory_order_release);
  run_state_.store(nullptr, std::memory_order_release);
  tl_current_ = nullptr;
}

}  // namespace sa::shim
