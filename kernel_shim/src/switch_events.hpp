#pragma once
// open_switch_events(): the perf context-switch record stream of the calling
// thread, shared by the BlockMonitor (wakes per record) and RunStateWord
// (read-only overwrite ring, never wakes anyone). Internal to kernel_shim.

#include <ctime>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace sa::shim::detail {

// open_switch_events() opens PERF_COUNT_SW_DUMMY with context_switch=1,
// exclude_kernel, and a CLOCK_MONOTONIC time on every record (so each
// PERF_RECORD_SWITCH is 16 bytes). `wake_per_record` sets watermark=1 and
// wakeup_watermark=1, so poll() wakes at every record (switch records are
// not samples: wakeup_events would never count them). Returns the fd, or
// -1 with errno.
inline int open_switch_events(bool wake_per_record) noexcept {
  perf_event_attr attr{};
  attr.size = sizeof attr;
  attr.type = PERF_TYPE_SOFTWARE;
  attr.config = PERF_COUNT_SW_DUMMY;
  attr.context_switch = 1;
  attr.exclude_kernel = 1;
  attr.exclude_hv = 1;
  if (wake_per_record) {
    attr.watermark = 1;
    attr.wakeup_watermark = 1;
  }
  attr.sample_id_all = 1;  // a timestamp on every record...
  attr.sample_type = PERF_SAMPLE_TIME;
  attr.use_clockid = 1;  // ...on steady_clock's clock
  attr.clockid = CLOCK_MONOTONIC;
  return static_cast<int>(::syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC));
}

}  // namespace sa::shim::detail
