#include <sa/detail/stack_pool.hpp>

#include <cerrno>
#include <string>
#include <sys/mman.h>
#include <system_error>
#include <unistd.h>

#if defined(SA_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace sa::detail {

std::size_t StackCache::page_size() noexcept {
  static const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

StackCache::StackCache(std::size_t stack_size, std::size_t max_cached) : max_cached_(max_cached) {
  const std::size_t page = page_size();
  usable_ = (stack_size + page - 1) / page * page;
  free_.reserve(max_cached_);
}

StackCache::~StackCache() {
  for (Stack& s : free_) ::munmap(s.base, s.size);
}

Stack StackCache::get() {
  if (!free_.empty()) {
    Stack s = free_.back();
    free_.pop_back();
    return s;
  }
  const std::size_t page = page_size();
  const std::size_t total = usable_ + page;
  void* base = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                      -1, 0);
  if (base == MAP_FAILED)
    throw std::system_error(errno, std::generic_category(),
                            "sa: cannot map a fiber stack of " + std::to_string(usable_) + " bytes");
  if (::mprotect(base, page, PROT_NONE) != 0) {
    int e = errno;
    ::munmap(base, total);
    throw std::system_error(e, std::generic_category(),
                            "sa: cannot protect a fiber stack's guard page (vm.max_map_count reached?)");
  }
  return Stack{base, total};
}

void StackCache::put(Stack s) noexcept {
#if defined(SA_ASAN)
  // The dead fiber may have left redzones poisoned on its stack.
  const std::size_t page = page_size();
  __asan_unpoison_memory_region(static_cast<char*>(s.base) + page, s.size - page);
#endif
  if (free_.size() < max_cached_ && s.size == usable_ + page_size()) {
    free_.push_back(s);
    return;
  }
  ::munmap(s.base, s.size);
}

}  // namespace sa::detail
