#pragma once
// The kernel_shim tests' shared scenarios: pipes whose reads block, and the
// deadlock scenario of issue 4 (I4).

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <vector>

#include "test_support.hpp"

namespace sa_test {

struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() { REQUIRE(::pipe2(fd, O_CLOEXEC) == 0); }
  ~Pipe() {
    ::close(fd[0]);
    ::close(fd[1]);
  }
};

// The deadlock scenario: VProcs + 8 fibers read from pipes that only the
// fiber spawned last writes to. Returns the bytes read.
inline long deadlock_scenario(int vprocs, bool annotate) {
  const int readers = vprocs + 8;
  std::vector<Pipe> pipes(static_cast<size_t>(readers));
  std::atomic<long> got{0};
  std::vector<sa::Fiber> fibers;
  for (int i = 0; i < readers; ++i)
    fibers.push_back(sa::spawn([&, i] {
      char c;
      int fd = pipes[static_cast<size_t>(i)].fd[0];
      ssize_t n = annotate ? sa::blocking([&] { return ::read(fd, &c, 1); }) : ::read(fd, &c, 1);
      if (n == 1) ++got;
    }));
  sa::this_fiber::yield();  // let the readers block first
  fibers.push_back(sa::spawn([&] {
    for (auto& p : pipes) SA_FIBER_CHECK(::write(p.fd[1], "x", 1) == 1);
  }));
  for (auto& f : fibers) f.join();
  return got.load();
}

}  // namespace sa_test
