// sa::PagedRegion (issue 6): page faults served by a user-level pager, and
// with ShimMode::on turned into activation_blocked upcalls; plus the
// Userfaultfd wrapper under it.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>
#include <sa/shim/uffd.hpp>

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "paged_test_support.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

using sa_test::fill_page;
using sa_test::page_ok;
using sa_test::pager_needs_a_fiber;
using sa_test::SleepyPager;
using sa_test::SleepyPagerOnThread;
using sa_test::sys_page;
using sa_test::word_of;

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

}  // namespace

// --- the Userfaultfd wrapper -----------------------------------------------------

TEST_CASE("Userfaultfd: a missing page is filled by copy(), and DONTWAKE leaves the faulter asleep until wake()") {
  sa_test::Watchdog wd{10s, "uffd copy and wake"};
  const std::size_t ps = sys_page();
  sa::shim::Userfaultfd uffd(UFFD_FEATURE_THREAD_ID);
  CHECK(uffd.has(UFFD_FEATURE_THREAD_ID));
  void* mem = ::mmap(nullptr, 2 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(mem != MAP_FAILED);
  const uint64_t ioctls = uffd.register_range(mem, 2 * ps, UFFDIO_REGISTER_MODE_MISSING);
  CHECK((ioctls & (uint64_t{1} << _UFFDIO_COPY)) != 0);

  std::atomic<int> tid{0};
  std::atomic<bool> done{false};
  std::thread t([&] {
    tid = static_cast<int>(::gettid());
    const volatile char c = static_cast<char*>(mem)[10];
    SA_FIBER_CHECK(c == 42);
    done = true;
  });
  uffd_msg m{};
  while (uffd.read(&m, 1) == 0) std::this_thread::sleep_for(1ms);
  CHECK(m.event == UFFD_EVENT_PAGEFAULT);
  CHECK(m.arg.pagefault.address == reinterpret_cast<uint64_t>(mem));
  while (tid == 0) std::this_thread::yield();
  CHECK(static_cast<int>(m.arg.pagefault.feat.ptid) == tid);
  std::vector<char> page(ps, 42);
  uffd.copy(mem, page.data(), ps, /*wake=*/false);
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(done);  // resolved but not woken
  uffd.wake(mem, ps);
  t.join();
  CHECK(done);
  CHECK(sa_test::fiber_failures() == 0);

  // Errors name the operation and carry the errno.
  try {
    uffd.copy(mem, page.data(), ps, true);  // already present
    FAIL("copy onto a present page succeeded");
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == EEXIST);
    CHECK(contains(e.what(), "UFFDIO_COPY"));
  }
  try {
    uffd.register_range(static_cast<char*>(mem) + 1, ps, UFFDIO_REGISTER_MODE_MISSING);  // unaligned
    FAIL("registering an unaligned range succeeded");
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == EINVAL);
    CHECK(contains(e.what(), "UFFDIO_REGISTER"));
  }
  ::munmap(mem, 2 * ps);
}

// --- options and refusal ------------------------------------------------------------

TEST_CASE("PagedRegion: bad options throw std::invalid_argument") {
  sa_test::Watchdog wd{10s, "bad options"};
  sa::Runtime rt{{.vprocs = 1}};
  const std::size_t ps = sys_page();
  auto make = [&](sa::PagedRegionOptions o) { sa::PagedRegion r(rt, std::move(o)); };
  CHECK_THROWS_AS(make({.size = 0, .pager = fill_page}), std::invalid_argument);
  CHECK_THROWS_AS(make({.size = ps + 1, .pager = fill_page}), std::invalid_argument);
  CHECK_THROWS_AS(make({.size = 4 * ps, .page_size = ps + 512, .pager = fill_page}), std::invalid_argument);
  CHECK_THROWS_AS(make({.size = 3 * ps, .page_size = 2 * ps, .pager = fill_page}), std::invalid_argument);
  CHECK_THROWS_AS(make({.size = 4 * ps}), std::invalid_argument);  // no pager
  CHECK_NOTHROW(make({.size = 4 * ps, .pager = fill_page}));
  // Outside a fiber the constructor without a runtime has none to use.
  CHECK_THROWS_AS(sa::PagedRegion({.size = ps, .pager = fill_page}), std::logic_error);
}

TEST_CASE("PagedRegion: a refused userfaultfd (seccomp, as in containers) throws std::system_error with EPERM") {
  auto r = sa_test::run_in_child(
      [] {
        sock_filter filter[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_userfaultfd, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
          std::_Exit(10);
        sa::Runtime rt{{.vprocs = 1}};
        try {
          sa::PagedRegion region(rt, {.size = sys_page(), .pager = fill_page});
        } catch (const std::system_error& e) {
          std::fprintf(stderr, "caught errno %d: %s\n", e.code().value(), e.what());
          std::fflush(stderr);
          std::_Exit(e.code().value() == EPERM ? 0 : 11);
        }
        std::_Exit(12);
      },
      20s);
  INFO(r.err);
  CHECK(r.exited);
  CHECK(r.status == 0);
  CHECK(contains(r.err, "userfaultfd"));
}

// --- contents and coalescing ------------------------------------------------------

TEST_CASE("PagedRegion: many fibers on every VProc read exact page contents from a sleeping pager") {
  struct Mode {
    sa::ShimMode shim;
    int pager_threads;
    const char* what;
  };
  const Mode mode = GENERATE(Mode{sa::ShimMode::on, 0, "shim on, pager fibers"},
                             Mode{sa::ShimMode::on, 2, "shim on, pager threads"},
                             Mode{sa::ShimMode::off, 2, "shim off, pager threads"});
  const int vprocs = GENERATE(1, 2);
  INFO(mode.what << ", " << vprocs << " VProcs");
  sa_test::Watchdog wd{30s, "contents under concurrency"};
  constexpr std::size_t kPages = 64;
  constexpr int kFibers = 24;
  sa::Runtime rt{{.vprocs = vprocs, .shim = mode.shim, .max_activations = 96}};
  SleepyPager pager{200us};
  sa::PagedRegionStats s;
  rt.run([&] {
    sa::PagedRegion region({.size = kPages * sys_page(), .pager = pager, .pager_threads = mode.pager_threads});
    std::vector<sa::Fiber> fibers;
    for (int f = 0; f < kFibers; ++f)
      fibers.push_back(sa::spawn([&, f] {
        // Each fiber walks every page from its own starting point.
        for (std::size_t k = 0; k < kPages; ++k) SA_FIBER_CHECK(page_ok(region, (k * 7 + f * 5) % kPages));
      }));
    for (auto& f : fibers) f.join();
    s = region.stats();
  });
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(*pager.calls == static_cast<int>(kPages));  // each page filled once
  CHECK(s.pages_filled == kPages);
  CHECK(s.faults >= kPages);
  CHECK(s.resident == kPages);
  CHECK(s.evictions == 0);
  CHECK(s.pager_us.count() == kPages);
  CHECK(s.blocked_us.count() == s.faults);  // every fault resumed, and timed
  if (mode.shim == sa::ShimMode::on) CHECK(s.resumed_by_shim >= 1);
  else CHECK(s.resumed_by_shim == 0);
}

TEST_CASE("PagedRegion: several fibers faulting on one page are resolved by one pager call") {
  const int vprocs = GENERATE(1, 2);
  sa_test::Watchdog wd{30s, "coalesced faults"};
  sa::Runtime rt{{.vprocs = vprocs, .shim = sa::ShimMode::on, .max_activations = 64}};
  std::atomic<int> calls{0};
  std::atomic<const sa::PagedRegion*> seen{nullptr};
  sa::PagedRegionStats s;
  rt.run([&] {
    // The pager waits until a second fault has been read (on a loaded
    // machine the handoffs that let the other fibers run may take a while).
    auto pager = [&](std::size_t page, std::span<std::byte> out) {
      ++calls;
      const auto until = std::chrono::steady_clock::now() + 10s;
      while (seen.load()->stats().faults < 2 && std::chrono::steady_clock::now() < until)
        sa::this_fiber::sleep_for(1ms);
      fill_page(page, out);
    };
    sa::PagedRegion region({.size = 4 * sys_page(), .pager = pager});
    seen = &region;
    std::vector<sa::Fiber> fibers;
    for (int f = 0; f < 8; ++f) fibers.push_back(sa::spawn([&] { SA_FIBER_CHECK(page_ok(region, 2)); }));
    for (auto& f : fibers) f.join();
    s = region.stats();
  });
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(calls == 1);
  CHECK(s.pages_filled == 1);
  CHECK(s.faults >= 2);
  CHECK(s.coalesced >= 1);
  // The rest were read after the copy (resumed at once) or are faults
  // retried after a signal interrupted the wait.
  CHECK(s.coalesced <= s.faults - 1);
}

TEST_CASE("PagedRegion: pages larger than the system page fill whole, whichever part faults") {
  sa_test::Watchdog wd{30s, "large pages"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on, .max_activations = 64}};
  SleepyPager pager{100us};
  const std::size_t ps = 4 * sys_page();
  rt.run([&] {
    sa::PagedRegion region({.size = 8 * ps, .page_size = ps, .pager = pager});
    CHECK(region.pages() == 8);
    // Touch the last system page of each page first: one fill serves it all.
    for (std::size_t p = 0; p < 8; ++p) {
      const auto* last = reinterpret_cast<const volatile uint64_t*>(region.page(p).data() + ps - sys_page());
      CHECK(*last == word_of(p, (ps - sys_page()) / sizeof(uint64_t)));
      CHECK(page_ok(region, p));
    }
    CHECK(region.stats().pages_filled == 8);
  });
  CHECK(*pager.calls == 8);
}

TEST_CASE("PagedRegion: faults from threads outside the runtime are served too") {
  sa_test::Watchdog wd{30s, "outside threads"};
  sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
  SleepyPager pager{200us};
  constexpr std::size_t kPages = 32;
  sa::PagedRegion region(rt, {.size = kPages * sys_page(), .pager = pager, .name = "outside"});
  CHECK(region.name() == "outside");
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&, t] {
      for (std::size_t k = 0; k < kPages; ++k) SA_FIBER_CHECK(page_ok(region, (k + t * 11) % kPages));
    });
  for (auto& t : threads) t.join();
  CHECK(sa_test::fiber_failures() == 0);
  auto s = region.stats();
  CHECK(s.pages_filled == kPages);
  CHECK(s.woken >= 1);  // plain threads are woken with UFFDIO_WAKE
  CHECK(s.resumed_by_shim == 0);
  CHECK(*pager.calls == static_cast<int>(kPages));
}

// --- I4: a pager that needs another fiber ------------------------------------------

TEST_CASE("I4 with page faults: every VProc faults and the pagers need a fiber spawned last, shim on: completes") {
  const int vprocs = GENERATE(1, 2);
  sa_test::Watchdog wd{30s, "pager needs a fiber, shim on"};
  sa::Runtime rt{{.vprocs = vprocs, .shim = sa::ShimMode::on, .max_activations = 64}};
  rt.run([&] { pager_needs_a_fiber(vprocs); });
  CHECK(sa_test::fiber_failures() == 0);
  auto s = rt.stats().shim;
  INFO("blocked " << s.activation_blocked << " held " << s.held);
  CHECK(s.activation_blocked >= 1);
}

TEST_CASE("I4 baseline with page faults: the same program with the shim off is stuck when the bound expires") {
  auto r = sa_test::run_in_child(
      [] {
        sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::off}};
        rt.run([] { pager_needs_a_fiber(2); });
      },
      3s);
  INFO(r.err);
  CHECK(r.timed_out);  // every VProc's thread sleeps in a fault; the setter never runs
}

TEST_CASE("PagedRegion: with the shim on, faults are activation_blocked upcalls and the faulters hold before running") {
  sa_test::Watchdog wd{30s, "fault upcalls"};
  constexpr int kVProcs = 2;
  sa::Runtime rt{{.vprocs = kVProcs, .shim = sa::ShimMode::on, .max_activations = 64}};
  SleepyPager pager{2ms};
  sa::PagedRegionStats s;
  std::atomic<int> computed{0};
  // I1: activations owning a processor, sampled while the faults happen.
  sa_test::RunningSampler sampler([&] { return rt.stats().shim.activations_running; });
  rt.run([&] {
    sa::PagedRegion region({.size = 8 * sys_page(), .pager = pager});
    std::vector<sa::Fiber> fibers;
    for (int f = 0; f < 6; ++f)
      fibers.push_back(sa::spawn([&, f] { SA_FIBER_CHECK(page_ok(region, static_cast<std::size_t>(f))); }));
    sa::this_fiber::yield();
    // While the faulters sleep, compute fibers still get the VProcs.
    for (int f = 0; f < 4; ++f) fibers.push_back(sa::spawn([&] { ++computed; }));
    for (auto& f : fibers) f.join();
    s = region.stats();
  });
  sampler.stop();
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(computed == 4);
  CHECK(sampler.max() <= kVProcs);
  auto shim = rt.stats().shim;
  INFO("blocked " << shim.activation_blocked << " held " << shim.held << " handoff detected p50 "
                  << shim.handoff_detected_p50_us << " us; resumed by shim " << s.resumed_by_shim);
  CHECK(shim.activation_blocked >= 1);
  CHECK(shim.held >= 1);  // a faulter whose VProc was taken held before its next instruction
  // Each faulter waits alone on its page: it stays asleep after the fill
  // until a VProc hands it a processor (Resumable; not under TSan, see
  // Shim::resume_faulted).
  if (!sa_test::kTsan) CHECK(shim.held_asleep >= 1);
  CHECK(s.resumed_by_shim >= 1);
  CHECK(shim.activations_running <= kVProcs);
}

namespace {
std::atomic<int> g_usr1{0};
void on_usr1(int) { g_usr1.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

TEST_CASE("PagedRegion: a faulter left asleep after its fill that a signal wakes first still holds until a VProc is free") {
  if (sa_test::kTsan) return;  // no Resumable activations under TSan (Shim::resume_faulted)
  sa_test::Watchdog wd{30s, "a Resumable activation woken by a signal"};
  // One VProc. F faults; its VProc goes to a spare, which runs M, a fiber
  // that spins without runtime calls until told to stop, so no VProc can
  // take F's activation after the fill (by a pager thread): it stays
  // Resumable, asleep. A SIGUSR1 then wakes it out of the fault wait: it
  // must hold (the monitor sees it run and signals it), not spin beside M.
  struct sigaction act {}, old {};
  act.sa_handler = &on_usr1;
  act.sa_flags = SA_RESTART;
  sigemptyset(&act.sa_mask);
  REQUIRE(::sigaction(SIGUSR1, &act, &old) == 0);
  sa::Runtime rt{{.vprocs = 1, .shim = sa::ShimMode::on, .max_activations = 16}};
  std::atomic<int> f_tid{0};
  std::atomic<bool> m_spinning{false}, stop{false};
  std::atomic<long> f_spins{0};
  long spins_early = -1, spins_late = -1;
  std::atomic<bool> scenario{true};
  std::thread driver([&] {
    // Bounded: if the scenario never arises, say so instead of leaving M
    // spinning until the watchdog.
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (!m_spinning.load() || rt.stats().shim.held_asleep == 0) {
      if (std::chrono::steady_clock::now() > give_up) {
        scenario = false;
        stop.store(true);
        return;
      }
      std::this_thread::sleep_for(1ms);
    }
    ::syscall(SYS_tgkill, ::getpid(), f_tid.load(), SIGUSR1);
    std::this_thread::sleep_for(100ms);  // the monitor has long seen it run
    spins_early = f_spins.load();
    std::this_thread::sleep_for(100ms);
    spins_late = f_spins.load();
    stop.store(true);
  });
  rt.run([&] {
    // The fill waits for F's VProc to go to a spare (20 ms were not always
    // enough beside other tests' CPU hogs): only a Lost faulter is left
    // asleep by its fill.
    auto pager_after_handoff = [&rt](std::size_t page, std::span<std::byte> out) {
      const auto give_up = std::chrono::steady_clock::now() + 10s;
      while (rt.stats().shim.activation_blocked == 0 && std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(1ms);
      SleepyPagerOnThread{}(page, out);
    };
    sa::PagedRegion region({.size = sys_page(), .pager = pager_after_handoff, .pager_threads = 1});
    sa::Fiber f = sa::spawn([&] {
      f_tid.store(static_cast<int>(::gettid()));
      SA_FIBER_CHECK(page_ok(region, 0));
      while (!stop.load(std::memory_order_relaxed)) f_spins.fetch_add(1, std::memory_order_relaxed);
    });
    sa::this_fiber::yield();  // F runs and faults; its VProc comes back to us on a spare
    m_spinning.store(true);
    while (!stop.load(std::memory_order_relaxed)) {
    }
    f.join();
  });
  driver.join();
  ::sigaction(SIGUSR1, &old, nullptr);
  auto shim = rt.stats().shim;
  INFO("usr1 " << g_usr1.load() << " held " << shim.held << " asleep " << shim.held_asleep << " held window p99 "
               << shim.held_window_p99_us << " us; F spins " << spins_early << " then " << spins_late);
  INFO("scenario: " << (scenario ? "F's activation left asleep after its fill" : "never arose within 10 s"));
  REQUIRE(scenario);
  CHECK(sa_test::fiber_failures() == 0);
  CHECK(g_usr1.load() >= 1);      // the stray wake happened (in F's activation)
  CHECK(shim.held_asleep == 1);   // F's activation was left asleep after the fill
  CHECK(spins_early == spins_late);  // and, woken, held: no progress while M ran the VProc
  CHECK(shim.held_window_p99_us > 0);  // the window from its wake-up to its hold was measured
}

TEST_CASE("PagedRegion: a faulter whose fiber blocks the hold signal is still resumed after its fill") {
  if (sa_test::kTsan) return;  // no Resumable activations under TSan (Shim::resume_faulted)
  sa_test::Watchdog wd{30s, "a Resumable activation that blocks the hold signal"};
  // The fill leaves F's activation asleep (Resumable); the VProc that takes
  // it signals it, but F blocked the signal: the sysmon must wake it on its
  // page. F then runs until it unblocks the signal, and holds there.
  sa::Runtime rt{{.vprocs = 1, .shim = sa::ShimMode::on, .max_activations = 16}};
  bool ok = false;
  rt.run([&] {
    sa::PagedRegion region({.size = sys_page(), .pager = SleepyPager{2ms}});
    sa::Fiber f = sa::spawn([&] {
      sigset_t hold, old;
      sigemptyset(&hold);
      sigaddset(&hold, sa::shim::Shim::kHoldSignal());
      ::pthread_sigmask(SIG_BLOCK, &hold, &old);
      ok = page_ok(region, 0);
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    });
    f.join();
  });
  auto shim = rt.stats().shim;
  INFO("held " << shim.held << " asleep " << shim.held_asleep << " rewakes " << shim.resume_rewakes);
  CHECK(ok);  // resumed, not left asleep for ever (the watchdog bounds that)
  CHECK(shim.held_asleep == 1);
  // Normally the sysmon's rewake resumed it. About 1 run in 50 under ASan
  // beside other test processes, it was up before any rewake (rewakes 0).
  // A likely cause, from the kernel's handle_userfault(): the fault is
  // queued (readable on the uffd) before the faulter checks the page once
  // more and sleeps; preempted in between for longer than the pager's 2 ms
  // (its state then reads S), it finds the page filled and never sleeps.
  // A faulter awake by itself is handled like one woken by a stray signal,
  // which its own test covers: then this says so instead of failing.
  if (shim.resume_rewakes == 0) WARN("the faulter was awake before the sysmon's rewake");
}

// --- budget and eviction ---------------------------------------------------------------

TEST_CASE("PagedRegion: with a budget smaller than the working set, eviction and refaults keep contents exact") {
  const sa::ShimMode shim = GENERATE(sa::ShimMode::on, sa::ShimMode::off);
  INFO((shim == sa::ShimMode::on ? "shim on" : "shim off, pager threads"));
  sa_test::Watchdog wd{30s, "eviction, read-only"};
  constexpr std::size_t kPages = 48, kBudget = 12;
  constexpr int kFibers = 6;
  sa::Runtime rt{{.vprocs = 2, .shim = shim, .max_activations = 64}};
  SleepyPager pager{50us};
  sa::PagedRegionStats s;
  rt.run([&] {
    sa::PagedRegion region({.size = kPages * sys_page(),
                            .resident_pages = kBudget,
                            .pager = pager,
                            .pager_threads = shim == sa::ShimMode::on ? 0 : 2});
    std::vector<sa::Fiber> fibers;
    for (int f = 0; f < kFibers; ++f)
      fibers.push_back(sa::spawn([&, f] {
        uint64_t x = static_cast<uint64_t>(f) + 1;
        for (int k = 0; k < 150; ++k) {
          x = x * 6364136223846793005ULL + 1442695040888963407ULL;
          SA_FIBER_CHECK(page_ok(region, (x >> 33) % kPages));
        }
      }));
    for (auto& f : fibers) f.join();
    s = region.stats();
  });
  CHECK(sa_test::fiber_failures() == 0);
  INFO("filled " << s.pages_filled << " refills " << s.refills << " evictions " << s.evictions << " high water "
                 << s.resident_high_water);
  CHECK(s.evictions > 0);
  CHECK(s.refills > 0);
  CHECK(s.resident_high_water <= kBudget);
  CHECK(s.resident <= kBudget);
  CHECK(s.pages_filled == s.resident + s.evictions);
  CHECK(s.writebacks == 0);
}

TEST_CASE("PagedRegion: writeback under eviction loses no concurrent write (pages are write-protected first)") {
  struct Mode {
    sa::ShimMode shim;
    sa::PagedFaultMode faults;
    int pager_threads;
    const char* what;
  };
#if defined(SA_TSAN)
  const Mode mode = GENERATE(Mode{sa::ShimMode::on, sa::PagedFaultMode::upcall, 0, "shim on, upcall"},
                             Mode{sa::ShimMode::off, sa::PagedFaultMode::upcall, 2, "shim off, upcall, pager threads"});
#else
  const Mode mode = GENERATE(Mode{sa::ShimMode::on, sa::PagedFaultMode::upcall, 0, "shim on, upcall"},
                             Mode{sa::ShimMode::off, sa::PagedFaultMode::upcall, 2, "shim off, upcall, pager threads"},
                             Mode{sa::ShimMode::on, sa::PagedFaultMode::park_fiber, 0, "shim on, park_fiber"},
                             Mode{sa::ShimMode::off, sa::PagedFaultMode::park_fiber, 0, "shim off, park_fiber"});
#endif
  INFO(mode.what);
  const bool park = mode.faults == sa::PagedFaultMode::park_fiber;
  sa_test::Watchdog wd{30s, "eviction with writeback"};
  constexpr std::size_t kPages = 16, kBudget = 8;
  constexpr int kFibers = 4, kRounds = 12;
  const std::size_t ps = sys_page();
  // The backing store: what the pager reads and the writeback writes. A
  // page's fill and writeback never overlap (its states order them).
  std::vector<std::vector<uint64_t>> store(kPages, std::vector<uint64_t>(ps / sizeof(uint64_t), 0));
  auto backed_pager = [&](std::size_t page, std::span<std::byte> out) {
    sa::this_fiber::sleep_for(30us);
    std::memcpy(out.data(), store[page].data(), ps);
  };
  auto writeback = [&](std::size_t page, std::span<const std::byte> data) {
    sa::this_fiber::sleep_for(30us);  // a slow store: writers keep trying meanwhile
    std::memcpy(store[page].data(), data.data(), ps);
  };
  sa::Runtime rt{{.vprocs = 2, .shim = mode.shim, .max_activations = 64}};
  sa::PagedRegionStats s;
  rt.run([&] {
    sa::PagedRegion region({.size = kPages * ps,
                            .resident_pages = kBudget,
                            .pager = backed_pager,
                            .writeback = writeback,
                            .pager_threads = mode.pager_threads,
                            .fault_mode = mode.faults});
    CHECK(region.write_protected_eviction());
    std::vector<sa::Fiber> fibers;
    // Fiber f increments word f of every page, kRounds times, racing the
    // evictions (a write to a page being written back faults too); a plain
    // thread does the same with word kFibers.
    auto writer = [&](int f) {
      for (int k = 0; k < kRounds; ++k)
        for (std::size_t p = 0; p < kPages; ++p) {
          auto* w = reinterpret_cast<volatile uint64_t*>(region.page(p).data()) + f;
          *w = *w + 1;
        }
    };
    for (int f = 0; f < kFibers; ++f) fibers.push_back(sa::spawn(writer, f));
    sa::Event outside_done;
    std::thread outside([&] {
      writer(kFibers);
      outside_done.set();
    });
    for (auto& f : fibers) f.join();
    // Parked, not blocked in join(): with the shim off a blocked VProc
    // would also hold the timers of pager fibers the thread may wait for.
    outside_done.wait();
    outside.join();
    for (std::size_t p = 0; p < kPages; ++p) {
      const auto* w = reinterpret_cast<const volatile uint64_t*>(region.page(p).data());
      for (int f = 0; f <= kFibers; ++f) SA_FIBER_CHECK(w[f] == static_cast<uint64_t>(kRounds));
    }
    s = region.stats();
  });
  CHECK(sa_test::fiber_failures() == 0);
  INFO("filled " << s.pages_filled << " evictions " << s.evictions << " writebacks " << s.writebacks << " faults "
                 << s.faults << " parked " << s.parked << " thread waits " << s.thread_waits);
  CHECK(s.evictions > 0);
  CHECK(s.writebacks == s.evictions);
  CHECK(s.resident_high_water <= kBudget);
  if (park) {
    CHECK(s.parked >= 1);
    CHECK(s.thread_waits >= 1);  // the outside thread, on its own futex
  } else {
    CHECK(s.parked == 0);
  }
}

// --- errors --------------------------------------------------------------------------------

TEST_CASE("PagedRegion: a pager that throws names the page and region, and the faulting access gets SIGBUS") {
#if defined(SA_TSAN)
  const sa::PagedFaultMode mode = sa::PagedFaultMode::upcall;  // park_fiber is refused under TSan
#else
  // park_fiber: the fault parks, then the retry hits the poison, a SIGBUS
  // of another kind that sa's handler passes on to the default action.
  const sa::PagedFaultMode mode = GENERATE(sa::PagedFaultMode::upcall, sa::PagedFaultMode::park_fiber);
#endif
  INFO((mode == sa::PagedFaultMode::upcall ? "upcall" : "park_fiber"));
  auto r = sa_test::run_in_child(
      [mode] {
        sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
        rt.run([mode] {
          sa::PagedRegion region({.size = 8 * sys_page(),
                                  .pager =
                                      [](std::size_t page, std::span<std::byte> out) {
                                        if (page == 3) throw std::runtime_error("disk on fire");
                                        fill_page(page, out);
                                      },
                                  .fault_mode = mode,
                                  .name = "flaky"});
          SA_FIBER_CHECK(page_ok(region, 2));
          std::fprintf(stderr, "page 2 ok\n");
          const volatile std::byte b = region.page(3)[0];  // SIGBUS here
          (void)b;
          std::fprintf(stderr, "read a value from a page whose pager threw\n");
        });
      },
      20s);
  INFO(r.err);
  CHECK_FALSE(r.timed_out);
  CHECK(contains(r.err, "page 2 ok"));
  CHECK(contains(r.err, "sa: pager for page 3 of region flaky threw: disk on fire (fiber "));
  CHECK_FALSE(contains(r.err, "read a value"));
  // Killed by SIGBUS (a sanitizer's handler reports it and exits instead).
  CHECK(((!r.exited && r.status == SIGBUS) || (r.exited && r.status != 0)));
}

TEST_CASE("PagedRegion: destroying a region while a fault on it is pending aborts with the pending pages") {
  auto r = sa_test::run_in_child(
      [] {
        std::signal(SIGABRT, SIG_DFL);  // not Catch2's handler: the abort is the expected outcome
        sa::Runtime rt{{.vprocs = 2, .shim = sa::ShimMode::on}};
        rt.run([] {
          sa::Event never;
          std::thread faulter;
          {
            sa::PagedRegion region({.size = 8 * sys_page(),
                                    .pager =
                                        [&never](std::size_t, std::span<std::byte>) {
                                          never.wait();  // the page never comes
                                        },
                                    .name = "doomed"});
            faulter = std::thread([&region] {
              const volatile std::byte b = region.page(5)[0];
              (void)b;
            });
            sa::this_fiber::sleep_for(100ms);  // the fault is read, its pager waits
          }
          std::fprintf(stderr, "destroyed without complaint\n");
          faulter.join();
        });
      },
      20s);
  INFO(r.err);
  CHECK_FALSE(r.timed_out);
  CHECK(contains(r.err, "sa: region doomed destroyed while 1 faults are pending (pages 5)"));
  CHECK_FALSE(contains(r.err, "without complaint"));
  CHECK(!r.exited);
  CHECK(r.status == SIGABRT);
}
