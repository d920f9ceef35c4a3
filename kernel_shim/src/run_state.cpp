// RunStateWord: an activation's on-CPU state from an overwrite-mode perf ring.

#include <sa/shim/run_state.hpp>

#include "switch_events.hpp"

#include <cstring>
#include <ctime>
#include <linux/perf_event.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace sa::shim {

namespace {

struct SwitchRecord {
  perf_event_header header;
  uint64_t time;  // sample_id_all with PERF_SAMPLE_TIME
};
static_assert(sizeof(SwitchRecord) == 16);

}  // namespace

const char* to_string(CpuState s) noexcept {
  switch (s) {
    case CpuState::Unknown: return "unknown";
    case CpuState::Running: return "running";
    case CpuState::Preempted: return "preempted";
    case CpuState::Sleeping: return "sleeping";
  }
  return "?";
}

std::unique_ptr<RunStateWord> RunStateWord::open_for_this_thread() noexcept {
  const int fd = detail::open_switch_events(/*wake_per_record=*/false);
  if (fd < 0) return nullptr;
  // One metadata page and one data page (a power of two, as perf requires);
  // PROT_READ alone selects overwrite mode.
  const size_t len = 2 * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  void* ring = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  if (ring == MAP_FAILED) {
    ::close(fd);
    return nullptr;
  }
  return std::unique_ptr<RunStateWord>(new RunStateWord(fd, ring, len));
}

RunStateWord::~RunStateWord() {
  ::munmap(ring_, len_);
  ::close(fd_);
}

CpuState RunStateWord::read(int64_t* since_ns) const noexcept {
  const auto* meta = static_cast<const perf_event_mmap_page*>(ring_);
  const char* data = static_cast<const char*>(ring_) + meta->data_offset;
  const uint64_t size = meta->data_size;
  for (int attempt = 0; attempt < 4; ++attempt) {
    // acquire: the kernel stores data_head after the record it covers.
    const uint64_t head = __atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE);
    if (head < sizeof(SwitchRecord)) break;
    SwitchRecord r;
    std::memcpy(&r, data + (head - sizeof r) % size, sizeof r);
    // acquire fence: the copy above completes before the re-check below.
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&meta->data_head, __ATOMIC_RELAXED) != head) continue;  // a newer switch: read again
    if (r.header.type != PERF_RECORD_SWITCH || r.header.size != sizeof r) break;
    if (since_ns) *since_ns = static_cast<int64_t>(r.time);
    if (!(r.header.misc & PERF_RECORD_MISC_SWITCH_OUT)) return CpuState::Running;
    return (r.header.misc & PERF_RECORD_MISC_SWITCH_OUT_PREEMPT) ? CpuState::Preempted : CpuState::Sleeping;
  }
  if (since_ns) *since_ns = 0;
  return CpuState::Unknown;
}

}  // namespace sa::shim
