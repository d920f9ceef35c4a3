// sa::Runtime and sa::this_fiber: the public face of the scheduler.

#include <sa/runtime.hpp>
#include <sa/this_fiber.hpp>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include <sa/detail/runtime_core.hpp>

namespace sa {

namespace {

Options validate(Options o) {
  if (o.vprocs < 0) throw std::invalid_argument("sa::Runtime: Options::vprocs must be >= 0 (0 = one per CPU)");
  if (o.vprocs > 1024) throw std::invalid_argument("sa::Runtime: Options::vprocs must be <= 1024");
  if (o.stack_size < 16 * 1024) throw std::invalid_argument("sa::Runtime: Options::stack_size must be >= 16 KiB");
  if (o.max_activations < 0) throw std::invalid_argument("sa::Runtime: Options::max_activations must be >= 0");
  if (o.time_slice.count() < 0) throw std::invalid_argument("sa::Runtime: Options::time_slice must be >= 0 (0 = off)");
  return o;
}

}  // namespace

Runtime::Runtime(Options options) : core_(std::make_unique<detail::RuntimeCore>(validate(options))) {}

Runtime::~Runtime() = default;

void Runtime::check_outside(const char* what) {
  if (detail::current_vproc())
    throw std::logic_error(std::string(what) + " called from inside a runtime; call it from a plain thread");
}

int Runtime::vprocs() const noexcept { return core_->size(); }

bool Runtime::revoke_processor(int vp, std::chrono::milliseconds timeout) {
  check_outside("sa::Runtime::revoke_processor");
  if (vp < 0 || vp >= core_->size())
    throw std::out_of_range("sa::Runtime::revoke_processor: no VProc " + std::to_string(vp));
  core_->revoke(vp);
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!core_->vproc(vp).stood_down.load(std::memory_order_acquire)) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

void Runtime::restore_processor(int vp) {
  if (vp < 0 || vp >= core_->size())
    throw std::out_of_range("sa::Runtime::restore_processor: no VProc " + std::to_string(vp));
  core_->restore(vp);
}

VProcStats Stats::total() const noexcept {
  VProcStats t;
  for (const VProcStats& v : vprocs) {
    t.switches += v.switches;
    t.spawns += v.spawns;
    t.steals += v.steals;
    t.fibers_run += v.fibers_run;
    t.fiber_parks += v.fiber_parks;
    t.fiber_wakes += v.fiber_wakes;
    t.spin_wakeups += v.spin_wakeups;
    t.idle_sleeps += v.idle_sleeps;
    t.idle_wakeups += v.idle_wakeups;
    t.preemptions += v.preemptions;
    t.spin_recoveries += v.spin_recoveries;
    t.spin_donations += v.spin_donations;
    t.slice_marks += v.slice_marks;
    t.slice_yields += v.slice_yields;
  }
  return t;
}

Stats Runtime::stats() const {
  Stats s;
  auto get = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  for (int i = 0; i < core_->size(); ++i) {
    const detail::VProc& v = core_->vproc(i);
    const detail::VProcCounters& c = v.counters;
    s.vprocs.push_back(VProcStats{
        .cpu = core_->shim().cpu_of(i),
        .switches = get(c.switches),
        .spawns = get(c.spawns),
        .steals = get(c.steals),
        .fibers_run = get(c.fibers_run),
        .fiber_parks = get(c.fiber_parks),
        .fiber_wakes = get(c.fiber_wakes),
        .spin_wakeups = get(c.spin_wakeups),
        .idle_sleeps = get(c.idle_sleeps),
        .idle_wakeups = get(c.idle_wakeups),
        .preemptions = get(c.preemptions),
        .spin_recoveries = get(c.spin_recoveries),
        .spin_donations = get(c.spin_donations),
        .slice_marks = get(v.slice_marks),
        .slice_yields = get(c.slice_yields),
        .revoked_and_stood_down = v.stood_down.load(std::memory_order_acquire),
    });
  }
  const shim::ShimStats k = core_->shim().stats();
  s.shim = ShimStats{.perf = k.perf,
                     .processor_added = k.processor_added,
                     .activation_blocked = k.activation_blocked,
                     .activation_unblocked = k.activation_unblocked,
                     .blocking_calls = k.calls,
                     .pool_exhausted = k.pool_exhausted,
                     .activations_started = k.activations_started,
                     .activations_high_water = k.activations_high_water,
                     .activations_running = k.running,
                     .handoffs = k.handoff_us.count(),
                     .handoff_p50_us = k.handoff_us.percentile(50),
                     .handoff_p99_us = k.handoff_us.percentile(99),
                     .handoff_call_p50_us = k.handoff_call_us.percentile(50),
                     .handoff_call_p99_us = k.handoff_call_us.percentile(99),
                     .handoff_detected_p50_us = k.handoff_detected_us.percentile(50),
                     .handoff_detected_p99_us = k.handoff_detected_us.percentile(99),
                     .processor_preempted = k.preempted,
                     .donations = k.donations,
                     .held = k.held,
                     .held_asleep = k.held_asleep,
                     .resume_rewakes = k.resume_rewakes,
                     .held_window_p50_us = k.held_window_us.percentile(50),
                     .held_window_p99_us = k.held_window_us.percentile(99),
                     .records_swept = k.records_swept,
                     .handoffs_by_monitor = k.handoffs_by_monitor,
                     .handoffs_by_sysmon = k.handoffs_by_sysmon,
                     .handoffs_by_fault_server = k.handoffs_by_fault_server,
                     .handoffs_by_runner = k.handoffs_by_runner,
                     .contended_spells = k.contended_spells,
                     .runner_boosts = k.runner_boosts,
                     .monitor_lifts = k.monitor_lifts};
  s.fibers_spawned = core_->spawned_fibers();
  s.fibers_live = core_->live_fibers();
  return s;
}

namespace this_fiber {

void yield() noexcept { detail::yield(); }

void maybe_yield() noexcept { detail::maybe_yield(); }

void sleep_until(std::chrono::steady_clock::time_point deadline) noexcept {
  if (!detail::current_fiber()) {
    std::this_thread::sleep_until(deadline);
    return;
  }
  detail::Waiter w;  // linked nowhere: only the timer can wake it
  detail::park(w, nullptr, detail::to_ns(deadline));
}

FiberId id() noexcept {
  detail::FiberCtl* f = detail::current_fiber();
  return f ? f->id : 0;
}

int vproc() noexcept {
  detail::VProc* vp = detail::current_vproc();
  return vp ? vp->index : -1;
}

}  // namespace this_fiber

}  // namespace sa
