#pragma once
// Context switching between fibers on Boost.Context's fcontext primitives,
// with the sanitizer annotations that make ASan and TSan follow the switch.
//
// A switch from `prev` to `next` carries a SwitchRecord: the resumed side
// stores prev's saved context (it only exists once the jump happened) and then
// runs the record's post-switch action, which publishes prev (pushes it on a
// run queue, releases the lock of the wait list it joined, or frees its
// stack). This is how a fiber can enqueue itself *before* it has stopped
// running without anyone resuming it early: nobody can see it until the
// action runs on the far side of the switch.
//
// A yield needs no record (yield_switch()): its transfer data is the VProc
// the switch happened on, tagged with kYieldTag in its low bit, and the
// VProc's `yielded` field names the fiber that left. The far side
// (finish_yield(), runtime_core.hpp) saves that fiber's context and puts it
// at the back of the VProc's queue: what the action post_yield did, without
// the record's stores and loads and the indirect call.

#include <cstddef>
#include <cstdint>

#include <boost/context/detail/fcontext.hpp>

#include <sa/detail/fiber_ctl.hpp>
#include <sa/detail/poller.hpp>

#if defined(SA_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(SA_TSAN)
extern "C" {
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
}
#endif

namespace sa::detail {

namespace bctx = boost::context::detail;

// switch_context() is bctx::jump_fcontext; on x86_64 (ELF) our own switch,
// sa_jump_fcontext (src/switch_x86_64.S), which resumes with `ret` so the
// return predictions stay right after a switch. It keeps Boost's context
// layout, so contexts from make_fcontext start there.
#if defined(__x86_64__) && defined(__ELF__)
extern "C" bctx::transfer_t sa_jump_fcontext(bctx::fcontext_t to, void* data) noexcept;
inline bctx::transfer_t switch_context(bctx::fcontext_t to, void* data) noexcept { return sa_jump_fcontext(to, data); }
#else
inline bctx::transfer_t switch_context(bctx::fcontext_t to, void* data) noexcept { return bctx::jump_fcontext(to, data); }
#endif

// A post-switch action: runs on the resumed side with the fiber that left.
using PostSwitch = void (*)(FiberCtl* prev, void* arg) noexcept;

struct SwitchRecord {
  FiberCtl* prev;
  PostSwitch action;
  void* arg;
  Poller* poll;  // polled after the action: only then may its completions wake `prev`
};

// The low bits of a yield's transfer data (a VProc is 64-aligned): a
// yield; and the fiber that yielded is queued already (RunQueue::rotate).
inline constexpr uintptr_t kYieldTag = 1;
inline constexpr uintptr_t kYieldQueued = 2;

// finish_yield() is the far side of yield_switch(): `data` is the tagged
// VProc, `from` the context of the fiber that yielded. Defined in
// runtime_core.hpp (it needs VProc), which every file that switches
// includes. (The halves of a transfer_t travel apart from here on: passed
// whole, GCC stores it to the stack and loads it back.)
inline void finish_yield(void* data, bctx::fcontext_t from) noexcept;

// complete_record() finishes a switch that carried a SwitchRecord. It
// copies the record first: it lives on prev's stack, which the action may
// hand away. Out of line (sched.cpp): a yield's far side then keeps
// nothing across a call, and the yield needs no callee-saved register.
void complete_record(void* record, bctx::fcontext_t from) noexcept;

// complete_switch() finishes a switch on the resumed side.
inline void complete_switch(bctx::transfer_t t) noexcept {
  void* const data = t.data;
  bctx::fcontext_t const from = t.fctx;
  if (reinterpret_cast<uintptr_t>(data) & kYieldTag) [[likely]] finish_yield(data, from);
  else complete_record(data, from);
}

// sanitizer_enter() is called first thing in a context that was just entered
// (a new fiber's entry, or after jump() returns).
inline void sanitizer_enter([[maybe_unused]] FiberCtl* self) noexcept {
#if defined(SA_ASAN)
  __sanitizer_finish_switch_fiber(self ? self->asan_fake_stack : nullptr, nullptr, nullptr);
#endif
}

// jump() switches from `self` to `next` and returns when `self` is resumed,
// possibly on another kernel thread: callers re-read the current VProc after
// it. `poll_after` (the VProc's poller, if any) is polled on the far side, so
// an I/O completion for `self` can only wake it once it is saved.
// `self_dies` tells the sanitizers that `self` never resumes.
//
// switch_with() is the switch itself: it jumps to `next` handing it `data`
// (a SwitchRecord, or a tagged VProc from a yield) and finishes the switch
// that resumes `self`.
inline void switch_with(FiberCtl* self, FiberCtl* next, void* data, [[maybe_unused]] bool self_dies = false) noexcept {
#if defined(SA_ASAN)
  __sanitizer_start_switch_fiber(self_dies ? nullptr : &self->asan_fake_stack, next->stack_bottom, next->stack_usable);
#endif
#if defined(SA_TSAN)
  __tsan_switch_to_fiber(next->tsan_fiber, 0);
#endif
  bctx::transfer_t t = switch_context(next->ctx, data);
  sanitizer_enter(self);
  complete_switch(t);
}

inline void jump(FiberCtl* self, FiberCtl* next, PostSwitch action, void* arg, Poller* poll_after = nullptr,
                 bool self_dies = false) noexcept {
  SwitchRecord rec{self, action, arg, poll_after};
  switch_with(self, next, &rec, self_dies);
}

}  // namespace sa::detail
