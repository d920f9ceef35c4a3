#pragma once
// CpuHogs: processes that burn CPU, to make the kernel preempt activations
// (issue 5). Used by the spinlock tests, bench/spinlock.cpp and the tour.
// Header-only so that each of them can include it without a library.

#include <csignal>
#include <cstdio>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <system_error>
#include <vector>

namespace sa_hogs {

// first_allowed_cpu() is the lowest CPU the calling thread may run on (0 if
// the affinity cannot be read).
inline int first_allowed_cpu() noexcept {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) return 0;
  int cpu = 0;
  while (cpu < CPU_SETSIZE - 1 && !CPU_ISSET(cpu, &allowed)) ++cpu;
  return cpu;
}

// idle_on() pins the calling thread to `cpu` and puts it in SCHED_IDLE, as
// the shim's idle-class helpers run; false if either is refused.
inline bool idle_on(int cpu) noexcept {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  sched_param none{};
  return ::sched_setaffinity(0, sizeof one, &one) == 0 && ::sched_setscheduler(0, SCHED_IDLE, &none) == 0;
}

class CpuHogs {
 public:
  // Starts `n` hog processes at the caller's priority; hog i is pinned to
  // cpus[i % cpus.size()] (unpinned if `cpus` is empty). They die with us
  // (PR_SET_PDEATHSIG) if we die first. Throws std::system_error if fork()
  // fails. Safe in a multi-threaded process: a child only spins.
  CpuHogs(int n, const std::vector<int>& cpus) {
    for (int i = 0; i < n; ++i) {
      const pid_t parent = ::getpid();
      const pid_t pid = ::fork();
      if (pid < 0) {
        const int err = errno;
        stop();
        throw std::system_error(err, std::generic_category(), "CpuHogs: fork");
      }
      if (pid == 0) spin(parent, cpus.empty() ? -1 : cpus[static_cast<size_t>(i) % cpus.size()]);
      pids_.push_back(pid);
    }
  }
  CpuHogs(const CpuHogs&) = delete;
  CpuHogs& operator=(const CpuHogs&) = delete;
  ~CpuHogs() { stop(); }

  // stop() kills and reaps every hog; blocks the calling thread briefly.
  void stop() noexcept {
    for (pid_t p : pids_) ::kill(p, SIGKILL);
    for (pid_t p : pids_) ::waitpid(p, nullptr, 0);
    pids_.clear();
  }
  int size() const noexcept { return static_cast<int>(pids_.size()); }

 private:
  [[noreturn]] static void spin(pid_t parent, int cpu) noexcept {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      ::sched_setaffinity(0, sizeof set, &set);
    }
    volatile unsigned long x = 0;
    for (;;) x = x + 1;
  }
  std::vector<pid_t> pids_;
};

}  // namespace sa_hogs
