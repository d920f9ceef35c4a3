#include <sa/shim/activation.hpp>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <system_error>

namespace sa::shim {

namespace {

thread_local Activation* tl_current = nullptr;

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
    case ActivationState::Running: return "Running";
    case ActivationState::Idle: return "Idle";
    case ActivationState::Exited: return "Exited";
  }
  return "?";
}

Activation::Activation(int vp, int cpu, std::function<void()> body)
    : vp_(vp), cpu_(cpu), body_(std::move(body)) {
  try {
    thread_ = std::thread([this] { main(); });
  } catch (const std::system_error& e) {
    throw std::system_error(e.code(), "sa: cannot start the activation for VProc " + std::to_string(vp));
  }
}

Activation::~Activation() { join(); }

void Activation::join() noexcept {
  if (thread_.joinable()) thread_.join();
}

Activation* Activation::current() noexcept { return tl_current; }

void Activation::set_state(ActivationState from, ActivationState to) noexcept {
  ActivationState seen = from;
  // acq_rel: observers (stats, later the shim's monitors) see the state
  // together with what the activation did before the change.
  if (!state_.compare_exchange_strong(seen, to, std::memory_order_acq_rel)) {
    std::fprintf(stderr, "sa: activation of VProc %d: bad state change %s -> %s (was %s)\n", vp_,
                 to_string(from), to_string(to), to_string(seen));
    std::abort();
  }
}

void Activation::main() {
  tl_current = this;
  if (cpu_ >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu_, &set);
    // Failure (a cpuset changed under us) leaves the thread unpinned, which
    // is slower but correct.
    ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
  }
  char name[16];
  std::snprintf(name, sizeof name, "sa-vp%d", vp_);
  ::pthread_setname_np(::pthread_self(), name);
  AltStack alt;
  set_state(ActivationState::Starting, ActivationState::Running);
  body_();
  set_state(ActivationState::Running, ActivationState::Exited);
  tl_current = nullptr;
}

}  // namespace sa::shim
