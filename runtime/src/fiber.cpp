// sa::Fiber handles, spawning, completion and fiber-local storage.

#include <sa/fiber.hpp>
#include <sa/fiber_local.hpp>

#include <cerrno>
#include <cstdio>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <sa/detail/runtime_core.hpp>

namespace sa {

namespace detail {

const char* to_string(FiberState s) noexcept {
  switch (s) {
    case FiberState::New: return "New";
    case FiberState::Ready: return "Ready";
    case FiberState::Running: return "Running";
    case FiberState::Parked: return "Parked";
    case FiberState::Done: return "Done";
  }
  return "?";
}

void FiberCtl::bad_state(FiberState from, FiberState to, FiberState seen) const noexcept {
  std::fprintf(stderr, "sa: fiber %llu: bad state change %s -> %s (was %s)\n", static_cast<unsigned long long>(id),
               to_string(from), to_string(to), to_string(seen));
  std::abort();
}

struct FlsTable {
  struct Slot {
    void* value = nullptr;
    void (*destroy)(void*) = nullptr;
  };
  std::vector<Slot> slots;
};

namespace {

std::atomic<std::size_t> g_next_fls_key{0};

[[noreturn]] void report_uncaught(const FiberCtl* f) noexcept {
  const auto id = static_cast<unsigned long long>(f->id);
  try {
    std::rethrow_exception(f->error);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sa: uncaught exception in detached fiber %llu: %s\n", id, e.what());
  } catch (...) {
    std::fprintf(stderr, "sa: uncaught exception (not a std::exception) in detached fiber %llu\n", id);
  }
  std::abort();
}

// fls_destroy() destroys a finished fiber's locals, on its own stack; a
// destructor may create new ones, so repeat a few times (as POSIX does).
void fls_destroy(FiberCtl* f) noexcept {
  for (int round = 0; round < 4 && f->fls; ++round) {
    FlsTable* t = std::exchange(f->fls, nullptr);
    for (auto it = t->slots.rbegin(); it != t->slots.rend(); ++it)
      if (it->value) it->destroy(it->value);
    delete t;
  }
}

}  // namespace

std::size_t fls_new_key() noexcept { return g_next_fls_key.fetch_add(1, std::memory_order_relaxed); }

void* fls_get(std::size_t key) noexcept {
  FiberCtl* f = current_fiber();
  if (!f || !f->fls || key >= f->fls->slots.size()) return nullptr;
  return f->fls->slots[key].value;
}

void fls_set(std::size_t key, void* value, void (*destroy)(void*)) {
  FiberCtl* f = current_fiber();
  if (!f) throw std::logic_error("sa::FiberLocal::get called outside a fiber");
  if (!f->fls) f->fls = new FlsTable;
  if (key >= f->fls->slots.size()) f->fls->slots.resize(key + 1);
  f->fls->slots[key] = FlsTable::Slot{value, destroy};
}

void complete(FiberCtl* f) noexcept {
  fls_destroy(f);
  // The fiber's own code is over: it no longer counts as alive. (What is
  // left, the switch away and post_exit, ends before the VProc's activation
  // can exit, which the runtime's shutdown waits for.)
  VProc* vp = current_vproc();
  f->core->count_finish(vp && &vp->core == f->core ? vp : nullptr);
  f->join_lock.lock();
  f->done.store(1, std::memory_order_release);
  Waiter* joiner = std::exchange(f->joiner, nullptr);
  const bool detached = f->detached;
  f->join_lock.unlock();
  if (joiner) try_wake(joiner);
  if (detached && f->error) report_uncaught(f);
}

void retire(FiberCtl* f, FiberState from) noexcept {
  f->set_state(from, FiberState::Done);
  release_ref(f);
}

void fail_unstarted(FiberCtl* f) noexcept {
  complete(f);
  retire(f, FiberState::New);
}

RuntimeCore& core_of_current(const char* what) {
  VProc* vp = current_vproc();
  if (!vp) throw std::logic_error(std::string(what) + " called outside a fiber; use sa::Runtime::spawn");
  return vp->core;
}

FiberCtl* launch(RuntimeCore& core, SpawnOptions options, FiberCtl* ctl) {
  RuntimeSection section;
  if (options.vproc < -1 || options.vproc >= core.size()) {
    delete ctl;
    throw std::invalid_argument("sa::spawn: SpawnOptions::vproc " + std::to_string(options.vproc) +
                                " is not a VProc index (the runtime has " + std::to_string(core.size()) + ")");
  }
  VProc* vp = current_vproc();
  if (vp && &vp->core != &core) vp = nullptr;  // a fiber of another runtime: from outside this one
  ctl->core = &core;
  ctl->id = core.next_fiber_id(vp);
  if (options.vproc >= 0) ctl->home = &core.vproc(options.vproc);
  core.count_spawn(vp);  // before the fiber can run (and end): live_fibers()
  core.start(ctl);
  return ctl;
}

Fiber wrap(FiberCtl* ctl) noexcept { return Fiber(ctl); }

}  // namespace detail

void Fiber::abandoned() const noexcept {
  std::fprintf(stderr, "sa: fiber %llu destroyed while joinable; join() or detach() it first\n",
               static_cast<unsigned long long>(ctl_->id));
  std::terminate();
}

void Fiber::join() {
  using namespace detail;
  if (!ctl_) throw std::system_error(EINVAL, std::generic_category(), "sa::Fiber::join: not joinable");
  FiberCtl* c = ctl_;
  if (c == current_fiber())
    throw std::system_error(EDEADLK, std::generic_category(),
                            "sa::Fiber::join: fiber " + std::to_string(c->id) + " joins itself");
  RuntimeSection section;  // no shim handoff while we hold the lock
  c->join_lock.lock();
  if (!c->done.load(std::memory_order_acquire)) {
    Waiter w;
    c->joiner = &w;
    park(w, &c->join_lock, TimerHeap::kNever);
  } else {
    c->join_lock.unlock();
  }
  ctl_ = nullptr;
  std::exception_ptr error = std::move(c->error);
  release_ref(c);
  if (error) std::rethrow_exception(error);
}

void Fiber::detach() {
  using namespace detail;
  if (!ctl_) throw std::system_error(EINVAL, std::generic_category(), "sa::Fiber::detach: not joinable");
  FiberCtl* c = std::exchange(ctl_, nullptr);
  RuntimeSection section;  // no shim handoff while we hold the lock
  c->join_lock.lock();
  c->detached = true;
  const bool failed = c->done.load(std::memory_order_relaxed) && c->error;
  c->join_lock.unlock();
  if (failed) report_uncaught(c);
  release_ref(c);
}

}  // namespace sa
