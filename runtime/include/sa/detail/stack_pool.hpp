#pragma once
// StackCache: fiber stacks with a guard page each, kept for reuse by one VProc.
//
// Each stack is one private anonymous mapping: the lowest page PROT_NONE (the
// guard; an overflow faults there and is reported by the runtime's SIGSEGV
// handler), the rest read-write and touched on demand. A stack freed on a
// VProc goes to that VProc's cache (no lock: only its owner touches it); past
// `max_cached` it is unmapped. Each live stack costs two kernel mappings, so
// vm.max_map_count (65530 by default) bounds the fibers that have started and
// not finished at about 32k; a fiber that has not run yet has no stack.

#include <cstddef>
#include <vector>

#include <sa/detail/fiber_ctl.hpp>

namespace sa::detail {

class StackCache {
 public:
  StackCache(std::size_t stack_size, std::size_t max_cached);
  StackCache(const StackCache&) = delete;
  StackCache& operator=(const StackCache&) = delete;
  ~StackCache();

  // get() returns a stack of stack_size() usable bytes above a guard page;
  // throws std::system_error (ENOMEM, ...) when none can be mapped.
  Stack get();
  // put() takes back a stack that no fiber uses any more.
  void put(Stack s) noexcept;

  std::size_t stack_size() const noexcept { return usable_; }
  std::size_t cached() const noexcept { return free_.size(); }
  static std::size_t page_size() noexcept;

 private:
  std::size_t usable_;
  std::size_t max_cached_;
  std::vector<Stack> free_;
};

}  // namespace sa::detail
