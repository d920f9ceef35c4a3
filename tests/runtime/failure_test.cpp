// Programming errors end the process with a message that names the fiber
// and the cause. Each runs in a child process, bounded in time.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <csetjmp>
#include <csignal>
#include <cstdint>
#include <sys/mman.h>
#include <unistd.h>
#include <stdexcept>

#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

// Recurses with a large frame until the guard page is hit.
int deep(int n) {
  volatile char frame[1024];
  frame[0] = static_cast<char>(n);
  return n == 0 ? frame[0] : deep(n - 1) + frame[0];
}

// check_overflow_reported() checks that a child ended as an overflow must.
void check_overflow_reported(const sa_test::ChildResult& r) {
  INFO(r.err);
  CHECK_FALSE(r.timed_out);
  CHECK_FALSE(r.exited);
  CHECK(r.status == SIGABRT);
  CHECK_THAT(r.err, Catch::Contains("stack overflow in fiber"));
}

}  // namespace

TEST_CASE("a stack overflow hits the guard page and is reported") {
  auto r = sa_test::run_in_child(
      [] {
        sa::Runtime rt{{.vprocs = 2, .stack_size = 64 * 1024}};
        rt.run([] {
          sa::Fiber f = sa::spawn([] { std::printf("%d\n", deep(1'000'000)); });
          f.join();
        });
      },
      20s);
  check_overflow_reported(r);
}

namespace {

// A SIGSEGV handler of the application's, installed after a first Runtime
// existed: it reports and exits with status 3.
void app_segv_handler(int) {
  const char msg[] = "application SIGSEGV handler\n";
  [[maybe_unused]] auto r = ::write(2, msg, sizeof msg - 1);
  ::_exit(3);
}

void install_app_segv_handler() {
  { sa::Runtime first{{.vprocs = 1}}; }
  struct sigaction sa {};
  sa.sa_handler = &app_segv_handler;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGSEGV, &sa, nullptr);
}

// A handler that recovers from a fault by siglongjmp, as probing code does.
sigjmp_buf g_probe_env;
void probe_segv_handler(int) { siglongjmp(g_probe_env, 1); }

}  // namespace

TEST_CASE("a SIGSEGV handler that leaves by siglongjmp gets every fault that is not a guard page's") {
  // Installed before the Runtime: ours hands it the faults that are not
  // ours. Its siglongjmp skips the rest of our handler, which must not
  // leave the next fault on that thread without it. Three faults, in a
  // fiber and on a plain thread; the child exits with how many it survived.
  auto r = sa_test::run_in_child(
      [] {
        struct sigaction sa {};
        sa.sa_handler = &probe_segv_handler;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGSEGV, &sa, nullptr);
        void* page = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) std::_Exit(100);
        auto probe = [page] {
          // Volatile: read after siglongjmp returns to sigsetjmp.
          volatile int survived = 0;
          volatile int round = 0;
          while (round < 3) {
            if (sigsetjmp(g_probe_env, 1) == 0) *static_cast<volatile int*>(page) = 1;
            else survived = survived + 1;
            round = round + 1;
          }
          return static_cast<int>(survived);
        };
        sa::Runtime rt{{.vprocs = 1}};
        int in_fiber = 0;
        rt.run([&] { sa::spawn([&] { in_fiber = probe(); }).join(); });
        std::_Exit(in_fiber + probe());
      },
      20s);
  INFO(r.err);
  CHECK_FALSE(r.timed_out);
  CHECK(r.exited);
  CHECK(r.status == 6);
}

TEST_CASE("a SIGSEGV handler installed after a Runtime neither hides a later overflow report nor loses other faults") {
  SECTION("a guard-page fault is still reported as a stack overflow") {
    auto r = sa_test::run_in_child(
        [] {
          install_app_segv_handler();
          sa::Runtime rt{{.vprocs = 1, .stack_size = 64 * 1024}};
          rt.run([] { sa::spawn([] { std::printf("%d\n", deep(1'000'000)); }).join(); });
        },
        20s);
    check_overflow_reported(r);
  }
  SECTION("any other fault reaches the application's handler") {
    auto r = sa_test::run_in_child(
        [] {
          install_app_segv_handler();
          sa::Runtime rt{{.vprocs = 1}};
          rt.run([] {
            sa::spawn([] {
              volatile uintptr_t bad = 16;  // (volatile: the compiler cannot see the address is bad)
              *reinterpret_cast<volatile int*>(bad) = 1;
            }).join();
          });
        },
        20s);
    INFO(r.err);
    CHECK_FALSE(r.timed_out);
    CHECK(r.exited);
    CHECK(r.status == 3);
    CHECK_THAT(r.err, Catch::Contains("application SIGSEGV handler"));
  }
}

TEST_CASE("destroying a joinable fiber handle terminates with a message") {
  auto r = sa_test::run_in_child(
      [] {
        sa::Runtime rt{{.vprocs = 1}};
        rt.run([] { sa::Fiber f = sa::spawn([] {}); });
      },
      20s);
  INFO(r.err);
  CHECK_FALSE(r.timed_out);
  CHECK_FALSE(r.exited);
  CHECK_THAT(r.err, Catch::Contains("destroyed while joinable"));
}

TEST_CASE("an exception escaping a detached fiber is reported with its id") {
  auto r = sa_test::run_in_child(
      [] {
        sa::Runtime rt{{.vprocs = 1}};
        rt.run([] {
          sa::spawn([] { throw std::runtime_error("disk on fire"); }).detach();
          sa::this_fiber::sleep_for(1s);
        });
      },
      20s);
  INFO(r.err);
  CHECK_FALSE(r.timed_out);
  CHECK_FALSE(r.exited);
  CHECK_THAT(r.err, Catch::Contains("uncaught exception in detached fiber") && Catch::Contains("disk on fire"));
}

TEST_CASE("destroying a runtime with live fibers is a clear error, not a hang") {
  auto r = sa_test::run_in_child(
      [] {
        sa::Runtime rt{{.vprocs = 2}};
        rt.run([] {
          // Parked forever: nobody will ever send.
          static sa::Channel<int> never{0};
          sa::spawn([] { never.recv(); }).detach();
          sa::this_fiber::yield();
        });
      },
      20s);
  INFO(r.err);
  CHECK_FALSE(r.timed_out);
  CHECK_FALSE(r.exited);
  CHECK_THAT(r.err, Catch::Contains("1 fiber(s) are still alive"));
}

TEST_CASE("a runtime destroyed after its fibers finished exits cleanly") {
  auto r = sa_test::run_in_child(
      [] {
        for (int i = 0; i < 20; ++i) {
          sa::Runtime rt{{.vprocs = 2}};
          rt.run([] {
            for (int k = 0; k < 10; ++k) sa::spawn([] { sa::this_fiber::yield(); }).detach();
          });
        }
      },
      20s);
  INFO(r.err);
  CHECK(r.exited);
  CHECK(r.status == 0);
}
