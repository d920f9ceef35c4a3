#pragma once
// sa::FiberLocal<T>: one T per fiber, created on first use by that fiber and
// destroyed when the fiber finishes (before a joiner is woken).

#include <cstddef>
#include <new>

#include <sa/detail/fiber_ctl.hpp>

namespace sa {

namespace detail {
// A fiber's table of slots; created on its first FiberLocal use.
void* fls_get(std::size_t key) noexcept;
void fls_set(std::size_t key, void* value, void (*destroy)(void*));
std::size_t fls_new_key() noexcept;
}  // namespace detail

template <class T>
class FiberLocal {
 public:
  FiberLocal() : key_(detail::fls_new_key()) {}
  FiberLocal(const FiberLocal&) = delete;
  FiberLocal& operator=(const FiberLocal&) = delete;

  // get() is the calling fiber's T, default-constructed on first use. Never
  // blocks. Throws std::logic_error outside a fiber.
  T& get() {
    if (void* p = detail::fls_get(key_)) return *static_cast<T*>(p);
    T* value = new T();
    try {
      detail::fls_set(key_, value, [](void* p) { delete static_cast<T*>(p); });
    } catch (...) {
      delete value;
      throw;
    }
    return *value;
  }
  T& operator*() { return get(); }
  T* operator->() { return &get(); }

 private:
  std::size_t key_;
};

}  // namespace sa
