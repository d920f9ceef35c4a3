#pragma once
// sa::blocking(f): run a call that may block the kernel thread (a foreign
// library, a raw syscall) from a fiber without losing the VProc.
//
// With ShimMode::on the call is announced to the kernel shim (Go's
// entersyscall / exitsyscall): if it returns without blocking it costs one
// CAS each way; if the kernel blocks it, the shim hands the VProc to a spare
// activation, so the other fibers keep running; when it returns, the fiber
// goes back to a ready queue (any VProc) and the activation to the pool.
// errno after it is f's, on whichever kernel thread the fiber continues.
// One caveat, as with any runtime that moves fibers between threads: glibc
// declares __errno_location() const, so a function that used errno before
// the call may read the old thread's copy after it. Read errno inside f, or
// in a function that did not touch it before.
// With ShimMode::off, or outside a fiber, it just calls f.

#include <cerrno>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

namespace sa {

namespace detail {
bool blocking_enter() noexcept;
// blocking_exit() sets errno to `call_errno` on the thread the fiber runs
// on afterwards (the call's errno is the old thread's).
void blocking_exit(int call_errno) noexcept;
}  // namespace detail

// blocking() returns f()'s result and rethrows what it threw. It may block
// the kernel thread (that is what it is for) but never costs the VProc
// under ShimMode::on.
template <class F>
decltype(auto) blocking(F&& f) {
  using R = std::invoke_result_t<F>;
  const bool entered = detail::blocking_enter();
  // The exit may move the fiber to another kernel thread: do it outside any
  // catch block (exception state is per thread), then rethrow.
  std::exception_ptr error;
  if constexpr (std::is_void_v<R>) {
    try {
      std::forward<F>(f)();
    } catch (...) {
      error = std::current_exception();
    }
    if (entered) detail::blocking_exit(errno);
    if (error) std::rethrow_exception(error);
  } else {
    static_assert(!std::is_reference_v<R>, "sa::blocking: return a value, not a reference");
    std::optional<R> result;
    try {
      result.emplace(std::forward<F>(f)());
    } catch (...) {
      error = std::current_exception();
    }
    if (entered) detail::blocking_exit(errno);
    if (error) std::rethrow_exception(error);
    return R(std::move(*result));
  }
}

}  // namespace sa
