// RunStateWord: an activation's on-CPU state from an overwrite-mode perf ring.

#include <sa/shim/run_state.hpp>

#include "switch_events.hpp"

#include <algorithm>
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

int64_t RunStateWord::longest_preemption(uint64_t& cursor, int64_t now_ns) const noexcept {
  const auto* meta = static_cast<const perf_event_mmap_page*>(ring_);
  const char* data = static_cast<const char*>(ring_) + meta->data_offset;
  const uint64_t size = meta->data_size;
  const uint64_t head = __atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE);
  // Every record is 16 bytes and the ring a multiple of that, so records
  // sit at multiples of 16 and never wrap. The oldest one the kernel may
  // not be overwriting right now is a record past head - size.
  const uint64_t window = size - sizeof(SwitchRecord);
  uint64_t from = std::min(cursor, head);
  if (head - from > window) from = head - window;
  cursor = head;
  int64_t longest = 0, out_at = 0;  // out_at: start of a preemption in progress
  for (uint64_t at = from; at + sizeof(SwitchRecord) <= head; at += sizeof(SwitchRecord)) {
    SwitchRecord r;
    std::memcpy(&r, data + at % size, sizeof r);
    // acquire fence, then head again: a record the kernel reached meanwhile
    // (lapped) may be torn; it and those before it are dropped.
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&meta->data_head, __ATOMIC_RELAXED) - at > size - sizeof(SwitchRecord)) {
      out_at = 0;
      continue;
    }
    if (r.header.type != PERF_RECORD_SWITCH || r.header.size != sizeof r) {
      out_at = 0;
      continue;
    }
    const auto t = static_cast<int64_t>(r.time);
    if (!(r.header.misc & PERF_RECORD_MISC_SWITCH_OUT)) {
      if (out_at) longest = std::max(longest, t - out_at);
      out_at = 0;
    } else {
      out_at = (r.header.misc & PERF_RECORD_MISC_SWITCH_OUT_PREEMPT) ? t : 0;
    }
  }
  if (out_at) longest = std::max(longest, now_ns - out_at);
  return longest;
}

}  // namespace sa::shim
