// sa::FiberLocal: one value per fiber, destroyed when the fiber ends.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <atomic>
#include <stdexcept>

namespace {
std::atomic<int> g_alive{0};
struct Tracked {
  Tracked() { ++g_alive; }
  ~Tracked() { --g_alive; }
  int value = 0;
};
}  // namespace

TEST_CASE("each fiber sees its own FiberLocal value, across yields and VProcs") {
  sa::Runtime rt{{.vprocs = 2}};
  sa::FiberLocal<int> local;
  std::atomic<int> mismatches{0};
  rt.run([&] {
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 50; ++i)
      fibers.push_back(sa::spawn([&, i] {
        local.get() = i;
        for (int k = 0; k < 20; ++k) {
          sa::this_fiber::yield();
          if (*local != i) ++mismatches;
        }
      }));
    for (auto& f : fibers) f.join();
    CHECK(local.get() == 0);  // main's own, default-constructed
  });
  CHECK(mismatches == 0);
}

TEST_CASE("FiberLocal values are destroyed when their fiber finishes") {
  sa::Runtime rt{{.vprocs = 2}};
  sa::FiberLocal<Tracked> local;
  rt.run([&] {
    std::vector<sa::Fiber> fibers;
    for (int i = 0; i < 10; ++i) fibers.push_back(sa::spawn([&] { local->value = 1; }));
    for (auto& f : fibers) f.join();
    CHECK(g_alive == 0);  // destroyed before join returned
    local->value = 2;
    CHECK(g_alive == 1);  // main's
  });
  CHECK(g_alive == 0);
}

TEST_CASE("FiberLocal outside a fiber is an error") {
  sa::FiberLocal<int> local;
  CHECK_THROWS_AS(local.get(), std::logic_error);
}
