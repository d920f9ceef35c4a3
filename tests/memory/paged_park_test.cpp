// sa::PagedRegion with PagedFaultMode::park_fiber (issue 6): a fault comes
// back to its thread as SIGBUS and parks only its fiber (protocol P1-P4 in
// <sa/paged_region.hpp>).

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <sa/detail/spin_lock.hpp>

#include "paged_test_support.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

using sa_test::fill_page;
using sa_test::page_ok;
using sa_test::SleepyPager;
using sa_test::sys_page;

constexpr auto kPark = sa::PagedFaultMode::park_fiber;

}  // namespace

#if defined(SA_TSAN)

TEST_CASE("PagedRegion park_fiber: refused under ThreadSanitizer with std::invalid_argument") {
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    CHECK_THROWS_AS(sa::PagedRegion({.size = sys_page(), .pager = fill_page, .fault_mode = kPark}),
                    std::invalid_argument);
  });
}

#else

namespace {

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// check_killed_by_sigbus() checks a child whose SIGBUS must kill it: it
// printed no "survived" line and died of the signal within its bound.
void check_killed_by_sigbus(const sa_test::ChildResult& r) {
  CHECK_FALSE(r.timed_out);
  CHECK_FALSE(contains(r.err, "survived"));
  CHECK(!r.exited);
  CHECK(r.status == SIGBUS);
}

const char* shim_name(sa::ShimMode m) { return m == sa::ShimMode::on ? "shim on" : "shim off"; }

// install_sigbus_handler() makes `handler` the SIGBUS action (empty sa_mask).
void install_sigbus_handler(void (*handler)(int), int flags = 0) {
  struct sigaction sa = {};
  sa.sa_handler = handler;
  sa.sa_flags = flags;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);
}

// run_to_sigbus() runs `body` in a child process that a SIGBUS must kill
// within 20 s, and checks that it did (check_killed_by_sigbus).
sa_test::ChildResult run_to_sigbus(const std::function<void()>& body) {
  auto r = sa_test::run_in_child(
      [&] {
        body();
        std::_Exit(0);
      },
      20s);
  INFO(r.err);
  check_killed_by_sigbus(r);
  return r;
}

// run_to_end() runs `body` in a child process that exits 0 if no fiber
// check failed, and checks that it got there within 20 s.
sa_test::ChildResult run_to_end(const std::function<void()>& body) {
  auto r = sa_test::run_in_child(
      [&] {
        body();
        std::_Exit(sa_test::fiber_failures() == 0 ? 0 : 1);
      },
      20s);
  INFO(r.err);
  CHECK_FALSE(r.timed_out);
  CHECK(r.exited);
  CHECK(r.status == 0);
  return r;
}

// errno of the thread the fiber runs on now: out of line, as glibc's
// __errno_location() is const and a caller may keep the old thread's
// address across a fault that moved the fiber.
[[gnu::noinline]] void set_errno(int e) { errno = e; }
[[gnu::noinline]] int get_errno() { return errno; }

}  // namespace

TEST_CASE("PagedRegion park_fiber: many fibers read exact contents, and each fault parks only its fiber") {
  const sa::ShimMode shim = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  const int vprocs = GENERATE(1, 2);
  INFO(shim_name(shim) << ", " << vprocs << " VProcs");
  sa_test::Watchdog wd{30s, "park_fiber contents"};
  constexpr std::size_t kPages = 64;
  constexpr int kFibers = 24;
  sa::Runtime rt{{.vprocs = vprocs, .shim = shim}};
  SleepyPager pager{200us};
  sa::PagedRegionStats s;
  std::atomic<int> errno_lost{0};
  rt.run([&] {
    sa::PagedRegion region({.size = kPages * sys_page(), .pager = pager, .fault_mode = kPark});
    std::vector<sa::Fiber> fibers;
    for (int f = 0; f < kFibers; ++f)
      fibers.push_back(sa::spawn([&, f] {
        for (std::size_t k = 0; k < kPages; ++k) {
          set_errno(1000 + f);  // a fault, parked or not, leaves the fiber its errno
          SA_FIBER_CHECK(page_ok(region, (k * 7 + f * 5) % kPages));
          if (get_errno() != 1000 + f) ++errno_lost;
        }
      }));
    for (auto& f : fibers) f.join();
    s = region.stats();
  });
  CHECK(sa_test::fiber_failures() == 0);
  INFO("faults " << s.faults << " parked " << s.parked << " coalesced " << s.coalesced);
  CHECK(*pager.calls == static_cast<int>(kPages));
  CHECK(s.pages_filled == kPages);
  CHECK(s.resident == kPages);
  // Each page's first fault found it Missing and waited for its fill, as a
  // parked fiber: no thread waited, no activation was resumed or woken.
  CHECK(s.parked >= kPages);
  CHECK(s.thread_waits == 0);
  CHECK(s.resumed_by_shim == 0);
  CHECK(s.woken == 0);
  CHECK(s.blocked_us.count() == s.parked);
  CHECK(errno_lost == 0);
}

TEST_CASE("PagedRegion park_fiber: every VProc faults and the pagers need a fiber spawned last, shim off: completes") {
  // The program that the upcall mode leaves stuck with the shim off ("I4
  // baseline with page faults"): here no thread sleeps in a fault.
  const int vprocs = GENERATE(1, 2);
  INFO(vprocs << " VProcs");
  sa_test::Watchdog wd{30s, "park_fiber, pager needs a fiber, shim off"};
  sa::Runtime rt{{.vprocs = vprocs, .shim = sa::ShimMode::off}};
  rt.run([&] { sa_test::pager_needs_a_fiber(vprocs, kPark); });
  CHECK(sa_test::fiber_failures() == 0);
}

TEST_CASE("PagedRegion park_fiber: a fiber holding an sa::Spinlock or a runtime lock waits for its page on its thread") {
  const sa::ShimMode shim = GENERATE(sa::ShimMode::off, sa::ShimMode::on);
  const bool runtime_lock = GENERATE(false, true);
  INFO(shim_name(shim) << (runtime_lock ? ", a runtime SpinLock" : ", an sa::Spinlock"));
  sa_test::Watchdog wd{30s, "park_fiber fault in a critical section"};
  sa::Runtime rt{{.vprocs = 2, .shim = shim}};  // the pager runs on the other VProc
  SleepyPager pager{1ms};
  sa::PagedRegionStats s;
  rt.run([&] {
    sa::PagedRegion region({.size = 4 * sys_page(), .pager = pager, .fault_mode = kPark});
    sa::Spinlock lock;
    sa::detail::SpinLock inner;  // what a Channel holds while it copies a value
    sa::spawn([&] {
      // May not park here: the fault must wait on the thread.
      if (runtime_lock) {
        std::lock_guard g(inner);
        SA_FIBER_CHECK(page_ok(region, 1));
      } else {
        std::lock_guard g(lock);
        SA_FIBER_CHECK(page_ok(region, 1));
      }
    }).join();
    s = region.stats();
  });
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(s.thread_waits == 1);
  CHECK(s.parked == 0);
  CHECK(s.pages_filled == 1);
}

TEST_CASE("PagedRegion park_fiber: a fiber resumed on another thread leaves each thread its own mask and altstack") {
  // sigreturn installs the mask and alternate stack saved in the signal
  // frame: without P4's rewrite, a fiber that faulted on VProc 0's thread
  // and resumed on VProc 1's would give VProc 1 VProc 0's (a shared
  // altstack: two overflows reported on one stack).
  sa_test::Watchdog wd{30s, "park_fiber mask and altstack"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::off}};
  struct ThreadState {
    void* altstack;
    bool usr2_blocked;
  };
  auto this_thread_state = [] {
    stack_t ss{};
    ::sigaltstack(nullptr, &ss);
    sigset_t m;
    ::pthread_sigmask(SIG_SETMASK, nullptr, &m);
    return ThreadState{ss.ss_sp, sigismember(&m, SIGUSR2) == 1};
  };
  auto state_of = [&](int vp) {
    ThreadState t{};
    sa::spawn(sa::SpawnOptions{.vproc = vp}, [&] { t = this_thread_state(); }).join();
    return t;
  };
  std::atomic<int> moved{0}, wrong{0};
  int rounds = 0;
  ThreadState before[2], after[2];
  rt.run([&] {
    // VProc 0's thread blocks SIGUSR2; VProc 1's does not.
    sa::spawn(sa::SpawnOptions{.vproc = 0}, [] {
      sigset_t m;
      sigemptyset(&m);
      sigaddset(&m, SIGUSR2);
      ::pthread_sigmask(SIG_BLOCK, &m, nullptr);
    }).join();
    for (int vp = 0; vp < 2; ++vp) before[vp] = state_of(vp);
    // A fiber moves only when the other VProc steals it, which a CPU hog
    // beside the test can delay past a whole round: repeat rounds (a fresh
    // region each) until one fiber has moved, for at most 10 s.
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    do {
      ++rounds;
      constexpr std::size_t kPages = 64;
      sa::PagedRegion region({.size = kPages * sys_page(), .pager = SleepyPager{100us}, .fault_mode = kPark});
      std::vector<sa::Fiber> fibers;
      for (int f = 0; f < 16; ++f)
        fibers.push_back(sa::spawn([&, f] {
          for (std::size_t k = 0; k < kPages; ++k) {
            const int tid = ::gettid();
            set_errno(2000 + f);
            SA_FIBER_CHECK(page_ok(region, (k * 3 + f * 7) % kPages));
            if (get_errno() != 2000 + f) ++wrong;  // errno is the fiber's, on whichever thread
            if (::gettid() == tid) continue;
            ++moved;
            // Checked at once: a later migration the other way would undo it.
            const ThreadState now = this_thread_state();
            const ThreadState& own = before[sa::this_fiber::vproc()];
            if (now.altstack != own.altstack || now.usr2_blocked != own.usr2_blocked) ++wrong;
          }
        }));
      for (auto& f : fibers) f.join();
    } while (moved == 0 && std::chrono::steady_clock::now() < give_up);
    for (int vp = 0; vp < 2; ++vp) after[vp] = state_of(vp);
  });
  CHECK(sa_test::fiber_failures() == 0);
  INFO("fibers that resumed on another thread: " << moved.load() << " in " << rounds << " round(s)");
  CHECK(moved > 0);  // the case under test happened
  CHECK(wrong == 0);
  CHECK(before[0].altstack != before[1].altstack);
  for (int vp = 0; vp < 2; ++vp) {
    INFO("VProc " << vp);
    CHECK(after[vp].altstack == before[vp].altstack);
    CHECK(after[vp].usr2_blocked == before[vp].usr2_blocked);
  }
  CHECK(before[0].usr2_blocked);
  CHECK_FALSE(before[1].usr2_blocked);
}

TEST_CASE("PagedRegion park_fiber: a mask change made on the thread while a fiber was parked there survives it") {
  // sigreturn would install the mask saved at the fault, undoing what the
  // other fibers of the thread did meanwhile.
  sa_test::Watchdog wd{30s, "park_fiber mask on the same thread"};
  sa::Runtime rt{{.vprocs = 1, .shim = sa::ShimMode::off}};
  bool blocked_after = false;
  rt.run([&] {
    sa::PagedRegion region({.size = 2 * sys_page(), .pager = SleepyPager{2ms}, .fault_mode = kPark});
    sa::Fiber a = sa::spawn([&] {
      SA_FIBER_CHECK(page_ok(region, 0));  // parks; b runs meanwhile on this (the only) thread
      sigset_t m;
      ::pthread_sigmask(SIG_SETMASK, nullptr, &m);
      blocked_after = sigismember(&m, SIGUSR1) == 1;
    });
    sa::Fiber b = sa::spawn([&] {
      while (region.stats().parked == 0) sa::this_fiber::yield();  // a is parked in its fault
      sigset_t m;
      sigemptyset(&m);
      sigaddset(&m, SIGUSR1);
      ::pthread_sigmask(SIG_BLOCK, &m, nullptr);
    });
    a.join();
    b.join();
    CHECK(region.stats().parked == 1);
  });
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(blocked_after);
}

TEST_CASE("PagedRegion park_fiber: a runtime made by a thread that blocks every signal still parks faults") {
  // The activations inherit the mask, and a fault on a blocked SIGBUS
  // kills the process: they unblock SIGBUS (and SIGSEGV) when they start.
  auto r = run_to_end([] {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
    sa::Runtime rt{{.vprocs = 2}};
    rt.run([] {
      sa::PagedRegion region({.size = 16 * sys_page(), .pager = SleepyPager{100us}, .fault_mode = kPark});
      std::vector<sa::Fiber> fibers;
      for (int f = 0; f < 4; ++f)
        fibers.push_back(sa::spawn([&] {
          for (std::size_t p = 0; p < 16; ++p) SA_FIBER_CHECK(page_ok(region, p));
        }));
      for (auto& f : fibers) f.join();
      std::fprintf(stderr, "parked %llu\n", static_cast<unsigned long long>(region.stats().parked));
    });
  });
  INFO(r.err);
  CHECK(contains(r.err, "parked "));
}

namespace {

std::atomic<int> g_user_sigbus{0};
void user_sigbus(int) { ++g_user_sigbus; }

}  // namespace

TEST_CASE("PagedRegion park_fiber: other SIGBUSes reach the handler installed before, or since, sa's") {
  auto r = run_to_end([] {
    sa::Runtime rt{{.vprocs = 2}};
    rt.run([] {
      auto install_user_handler = [] { install_sigbus_handler(user_sigbus); };
      auto touch_all = [](const sa::PagedRegion& region) {
        for (std::size_t p = 0; p < region.pages(); ++p) SA_FIBER_CHECK(page_ok(region, p));
      };
      install_user_handler();  // before sa's
      {
        sa::PagedRegion region({.size = 4 * sys_page(), .pager = SleepyPager{100us}, .fault_mode = kPark});
        touch_all(region);
        ::raise(SIGBUS);  // not a fault: passed on
        std::fprintf(stderr, "before: user handler ran %d times, parked %llu\n", g_user_sigbus.load(),
                     static_cast<unsigned long long>(region.stats().parked));
        install_user_handler();  // since sa's: it replaced sa's
      }
      sa::PagedRegion region({.size = 4 * sys_page(), .pager = SleepyPager{100us}, .fault_mode = kPark});
      touch_all(region);  // served: the new region put sa's handler back in front
      ::raise(SIGBUS);
      std::fprintf(stderr, "since: user handler ran %d times, parked %llu\n", g_user_sigbus.load(),
                   static_cast<unsigned long long>(region.stats().parked));
    });
  });
  INFO(r.err);
  CHECK(contains(r.err, "before: user handler ran 1 times, parked 4"));
  CHECK(contains(r.err, "since: user handler ran 2 times, parked 4"));
}

namespace {

// A crash reporter's handler: it notes the signal, then passes it on to the
// action it found when installed (here, sa's).
struct sigaction g_chained_to;
std::atomic<int> g_chaining_calls{0};
void chaining_sigbus(int sig, siginfo_t* si, void* uc) {
  if (g_chaining_calls.fetch_add(1) == 0) {
    const char msg[] = "chaining handler ran\n";
    [[maybe_unused]] const ssize_t n = ::write(2, msg, sizeof msg - 1);
  }
  g_chained_to.sa_sigaction(sig, si, uc);
}

}  // namespace

TEST_CASE("PagedRegion park_fiber: a handler that passes SIGBUS back to sa's ends in the default action") {
  // sa's handler, then one installed over it that chains to it, then sa's
  // again in front (a later region): a SIGBUS that is not a fault goes
  // sa -> chaining -> sa, which must not call the chaining handler again
  // (for ever, until its stack overflowed) but take the default action.
  auto r = run_to_sigbus([] {
    sa::Runtime rt{{.vprocs = 1}};
    rt.run([] {
      sa::PagedRegion first({.size = sys_page(), .pager = fill_page, .fault_mode = kPark});
      struct sigaction sa = {};
      sa.sa_sigaction = chaining_sigbus;
      sa.sa_flags = SA_SIGINFO | SA_NODEFER;
      sigemptyset(&sa.sa_mask);
      ::sigaction(SIGBUS, &sa, &g_chained_to);
      sa::PagedRegion second({.size = sys_page(), .pager = fill_page, .fault_mode = kPark});
      SA_FIBER_CHECK(page_ok(second, 0));  // sa's handler is in front again
      std::fprintf(stderr, "raising\n");
      ::raise(SIGBUS);
      std::fprintf(stderr, "survived a SIGBUS whose default action kills\n");
    });
  });
  INFO(r.err);
  CHECK(contains(r.err, "raising"));
  CHECK(contains(r.err, "chaining handler ran"));
  CHECK_FALSE(contains(r.err, "stack overflow"));
}

namespace {

std::atomic<int> g_usr2_blocked_inside{-1};
void sigbus_checking_mask(int) {
  sigset_t m;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &m);
  g_usr2_blocked_inside = sigismember(&m, SIGUSR2);
}

}  // namespace

TEST_CASE("PagedRegion park_fiber: a SIGBUS that was ignored stays ignored; a handler runs with its sa_mask") {
  auto r = run_to_end([] {
    sa::Runtime rt{{.vprocs = 1}};
    rt.run([] {
      ::signal(SIGBUS, SIG_IGN);
      {
        sa::PagedRegion region({.size = sys_page(), .pager = fill_page, .fault_mode = kPark});
        ::raise(SIGBUS);  // sent, not a fault: ignored, as before sa's handler
        std::fprintf(stderr, "survived an ignored SIGBUS\n");
      }
      struct sigaction sa = {};
      sa.sa_handler = sigbus_checking_mask;
      sigemptyset(&sa.sa_mask);
      sigaddset(&sa.sa_mask, SIGUSR2);
      ::sigaction(SIGBUS, &sa, nullptr);
      sa::PagedRegion region({.size = sys_page(), .pager = fill_page, .fault_mode = kPark});  // sa's in front again
      ::raise(SIGBUS);
      std::fprintf(stderr, "SIGUSR2 blocked in the handler: %d\n", g_usr2_blocked_inside.load());
    });
  });
  INFO(r.err);
  CHECK(contains(r.err, "survived an ignored SIGBUS"));
  CHECK(contains(r.err, "SIGUSR2 blocked in the handler: 1"));
}

namespace {

const sa::PagedRegion* g_region_for_handler = nullptr;
std::atomic<bool> g_handler_read_ok{false};
void sigbus_reading_region(int) { g_handler_read_ok = page_ok(*g_region_for_handler, 1); }

}  // namespace

TEST_CASE("PagedRegion park_fiber: a handler installed before sa's (no SA_NODEFER) may touch a park_fiber page") {
  // The kernel would block SIGBUS while such a handler runs; a fault on a
  // park_fiber page would then kill the process. pass_on() leaves SIGBUS
  // unblocked, so the fault inside the handler is served like any other.
  auto r = run_to_end([] {
    install_sigbus_handler(sigbus_reading_region);
    sa::Runtime rt{{.vprocs = 1}};
    rt.run([] {
      sa::PagedRegion region({.size = 2 * sys_page(), .pager = fill_page, .fault_mode = kPark});
      SA_FIBER_CHECK(page_ok(region, 0));  // sa's handler in front; page 1 still unloaded
      g_region_for_handler = &region;
      ::raise(SIGBUS);  // not a fault: passed on; the handler faults on page 1
      std::fprintf(stderr, "handler read page 1: %d, faults served: %llu\n", g_handler_read_ok.load() ? 1 : 0,
                   static_cast<unsigned long long>(region.stats().parked));
    });
  });
  INFO(r.err);
  CHECK(contains(r.err, "handler read page 1: 1, faults served: 2"));
}

namespace {

std::atomic<int> g_oneshot_calls{0};
void oneshot_sigbus(int) { g_oneshot_calls.fetch_add(1); }

}  // namespace

TEST_CASE("PagedRegion park_fiber: a handler installed before sa's with SA_RESETHAND runs once, then SIGBUS kills") {
  // As without sa: the first SIGBUS runs the handler and resets the action
  // to the default, so the second kills. sa's own handler stays in front:
  // faults in the region are still served in between.
  auto r = run_to_sigbus([] {
    install_sigbus_handler(oneshot_sigbus, SA_RESETHAND);
    sa::Runtime rt{{.vprocs = 1}};
    rt.run([] {
      sa::PagedRegion region({.size = 2 * sys_page(), .pager = fill_page, .fault_mode = kPark});
      SA_FIBER_CHECK(page_ok(region, 0));
      ::raise(SIGBUS);
      std::fprintf(stderr, "first SIGBUS: handler ran %d times\n", g_oneshot_calls.load());
      SA_FIBER_CHECK(page_ok(region, 1));
      std::fprintf(stderr, "faults served: %llu\n", static_cast<unsigned long long>(region.stats().parked));
      ::raise(SIGBUS);
      std::fprintf(stderr, "survived a second SIGBUS\n");
    });
  });
  INFO(r.err);
  CHECK(contains(r.err, "first SIGBUS: handler ran 1 times"));
  CHECK(contains(r.err, "faults served: 2"));
}

TEST_CASE("PagedRegion park_fiber: destroying a region while a fiber is parked in a fault aborts with the page") {
  auto r = sa_test::run_in_child(
      [] {
        std::signal(SIGABRT, SIG_DFL);  // not Catch2's handler: the abort is the expected outcome
        sa::Runtime rt{{.vprocs = 2}};
        rt.run([] {
          sa::Event never;
          {
            sa::PagedRegion region({.size = 8 * sys_page(),
                                    .pager = [&never](std::size_t, std::span<std::byte>) { never.wait(); },
                                    .fault_mode = kPark,
                                    .name = "doomed"});
            sa::spawn([&region] {
              const volatile std::byte b = region.page(6)[0];
              (void)b;
            }).detach();
            sa::this_fiber::sleep_for(100ms);  // the fiber parks in its fault, its pager waits
          }
          std::fprintf(stderr, "destroyed without complaint\n");
        });
      },
      20s);
  INFO(r.err);
  CHECK_FALSE(r.timed_out);
  CHECK(contains(r.err, "sa: region doomed destroyed while 1 faults are pending (pages 6)"));
  CHECK_FALSE(contains(r.err, "without complaint"));
  CHECK(!r.exited);
  CHECK(r.status == SIGABRT);
}

TEST_CASE("PagedRegion park_fiber: with pager threads it is refused with std::invalid_argument") {
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    try {
      sa::PagedRegion region({.size = sys_page(), .pager = fill_page, .pager_threads = 1, .fault_mode = kPark});
      FAIL("park_fiber with pager threads was accepted");
    } catch (const std::invalid_argument& e) {
      CHECK(contains(e.what(), "park_fiber needs pager fibers"));
    }
  });
}

#endif  // SA_TSAN
