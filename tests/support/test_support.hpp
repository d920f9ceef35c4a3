#pragma once
// Helpers shared by the tests: a watchdog that turns a hang into a failure
// with a message, a child-process runner for tests that must crash, and CPU
// time readings.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace sa_test {

// kTsan: built with -DSA_SANITIZE=thread (a few shim paths differ there).
#if defined(SA_TSAN)
inline constexpr bool kTsan = true;
#else
inline constexpr bool kTsan = false;
#endif

// Catch2's assertions are not thread-safe. Code that runs in a fiber or
// thread beside other asserting code (on another VProc) uses
// SA_FIBER_CHECK, which prints and counts a failure; the test then checks
// fiber_failures() == 0 from one thread at the end.
inline std::atomic<int>& fiber_failure_count() {
  static std::atomic<int> n{0};
  return n;
}
inline int fiber_failures() { return fiber_failure_count().load(); }
#define SA_FIBER_CHECK(cond)                                                                 \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: SA_FIBER_CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++::sa_test::fiber_failure_count();                                                    \
    }                                                                                        \
  } while (0)

// dump_threads() prints each thread of this process to stderr: name, state
// (R, S, D...) and the kernel function it waits in, for a watchdog's report.
inline void dump_threads() {
  DIR* d = ::opendir("/proc/self/task");
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string dir = std::string("/proc/self/task/") + e->d_name;
    char stat[512] = {}, wchan[128] = {};
    if (FILE* f = std::fopen((dir + "/stat").c_str(), "r")) {
      [[maybe_unused]] size_t n = std::fread(stat, 1, sizeof stat - 1, f);
      std::fclose(f);
    }
    if (FILE* f = std::fopen((dir + "/wchan").c_str(), "r")) {
      [[maybe_unused]] size_t n = std::fread(wchan, 1, sizeof wchan - 1, f);
      std::fclose(f);
    }
    const char* close = std::strrchr(stat, ')');
    std::fprintf(stderr, "  thread %s: %.*s state %c, in %s\n", e->d_name, close ? static_cast<int>(close - stat + 1) : 0,
                 stat, close && close[1] ? close[2] : '?', wchan[0] ? wchan : "-");
  }
  ::closedir(d);
}

// Watchdog: if not destroyed within `limit`, prints what hung and exits the
// test process with status 3 (ctest reports the failure and the message).
class Watchdog {
 public:
  // `dump`, if given, runs before the exit (on the watchdog's thread): print
  // what the stuck test was doing.
  Watchdog(std::chrono::milliseconds limit, std::string what, std::function<void()> dump = {})
      : what_(std::move(what)), dump_(std::move(dump)) {
    thread_ = std::thread([this, limit] {
      std::unique_lock lk(m_);
      if (!cv_.wait_for(lk, limit, [this] { return done_; })) {
        std::fprintf(stderr, "WATCHDOG: '%s' did not finish within %lld ms\n", what_.c_str(),
                     static_cast<long long>(limit.count()));
        if (dump_) dump_();
        std::fflush(stderr);
        std::_Exit(3);
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lk(m_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::string what_;
  std::function<void()> dump_;
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

struct ChildResult {
  bool exited = false;     // exited normally (else killed by a signal)
  int status = 0;          // exit status, or the signal number
  bool timed_out = false;  // killed by us when the bound expired
  std::string err;         // what it wrote to stderr
};

// run_in_child() runs `body` in a forked child (call it before this process
// starts threads of its own, e.g. before any Runtime), kills it after
// `limit`, and returns how it ended with its stderr.
ChildResult run_in_child(const std::function<void()>& body, std::chrono::milliseconds limit);

// RunningSampler: for I1, reads `running()` (e.g. rt.stats().shim.
// activations_running) every 100 µs on a thread of its own until stop() or
// destruction; max() is the highest value seen.
class RunningSampler {
 public:
  explicit RunningSampler(std::function<int()> running) : running_(std::move(running)) {
    thread_ = std::thread([this] {
      while (!done_.load()) {
        const int r = running_();
        if (r > max_.load()) max_.store(r);  // this thread is the only writer
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    });
  }
  RunningSampler(const RunningSampler&) = delete;
  RunningSampler& operator=(const RunningSampler&) = delete;
  ~RunningSampler() { stop(); }
  // stop() ends the sampling (joins the thread); idempotent.
  void stop() {
    done_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  int max() const { return max_.load(); }

 private:
  std::function<int()> running_;
  std::atomic<bool> done_{false};
  std::atomic<int> max_{0};
  std::thread thread_;
};

// process_cpu_seconds() is user + system CPU time of this process.
double process_cpu_seconds();

// busy_for() spins for about `d` (think time, a short critical section):
// the caller keeps its CPU and its VProc.
inline void busy_for(std::chrono::nanoseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

// ScopedEnv sets environment variable `name` to `value` for its lifetime
// (for the runtimes constructed meanwhile), then unsets it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

}  // namespace sa_test
