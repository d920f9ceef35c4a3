#pragma once
// sa::Channel<T>: a FIFO channel between fibers (and threads), after Go's.
//
//   Channel<T> ch{0};                  // rendezvous: send waits for a receiver
//   Channel<T> ch{64};                 // bounded: send waits while 64 are queued
//   Channel<T> ch{Channel<T>::unbounded};  // send never waits
//
// recv() returns an empty optional once the channel is closed and drained;
// send() on a closed channel throws sa::ChannelClosed (EPIPE). close() wakes
// every waiter and is idempotent.
//
// Implementation: one SpinLock guards the buffer and two WaitLists (senders,
// receivers). A value goes straight from a sender to a parked receiver's slot
// and from a parked sender into the buffer (or to the receiver, unbuffered),
// as in Go's runtime/chan.go, so FIFO order holds across parking. The waker
// fills the slot under the lock and wakes after releasing it. Channel waits
// have no deadline, so a dequeued waiter is always woken by whoever dequeued
// it. T's move constructor must not throw (it runs under the lock).
// A waiting sender or receiver bound to a VProc spins briefly before it
// parks, while its VProc has nothing else to run (park_spin, waiter.hpp):
// a partner on another CPU usually answers within that spin, and the
// exchange then costs no switch.
//
// Fast slot (T trivially copyable, at most 8 bytes): the receiver that
// would be first in line and may spin waits in the channel's own cache
// line, beside the lock, instead of in a Waiter on its stack. The sender
// then writes one line the receiver reads, where a Waiter costs a second
// line each way (a probe of the bare exchange between two pinned threads:
// 88-104 ns a round trip against 135-163). Protocol (fast_ is the slot's
// state; only its receiver leaves Filled or Closed):
//   F1. recv(), under lock_, with nothing to take, the channel open, no
//       receiver queued and fast_ Idle (acquire: the previous receiver's
//       read of the value came first): fast_ := Armed; unlock.
//   F2. Spin while Armed (detail::spin_while).
//   F3. A sender (deliver_locked, under lock_) finding Armed writes the
//       value, then fast_ := Filled (release); close() makes it Closed. The
//       armed receiver is older than every queued one: it armed when none
//       was queued, and later ones queue while it is Armed.
//   F4. The receiver, seeing Filled, reads the value and stores Idle
//       (release); Closed: Idle, and no value. The spin ran out: under
//       lock_, Armed becomes Idle and the receiver parks as any other, at
//       the front of the queue (it came first).

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <deque>
#include <limits>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <utility>

#include <sa/detail/runtime_core.hpp>
#include <sa/detail/waiter.hpp>

namespace sa {

class ChannelClosed : public std::system_error {
 public:
  ChannelClosed() : std::system_error(EPIPE, std::generic_category(), "sa::Channel: send on a closed channel") {}
};

template <class T>
class Channel {
  static_assert(std::is_nothrow_move_constructible_v<T> && std::is_nothrow_move_assignable_v<T>,
                "sa::Channel<T> needs a T whose moves do not throw");

 public:
  static constexpr std::size_t unbounded = std::numeric_limits<std::size_t>::max();

  // A channel holding up to `capacity` values (0: rendezvous).
  explicit Channel(std::size_t capacity = 0) : cap_(capacity) {}
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // send() delivers `v`, parking the fiber while the channel is full (or, if
  // unbuffered, until a receiver takes it). Throws ChannelClosed.
  void send(T v) {
    sa::detail::RuntimeSection section;  // no shim handoff while we hold the lock
    lock_.lock();
    if (closed_) {
      lock_.unlock();
      throw ChannelClosed();
    }
    if (deliver_locked(v)) return;
    detail::Waiter w;
    w.slot = &v;
    w.tag = 0;  // a receiver sets 1 when it took the value
    senders_.push_back(&w);
    detail::park_spin(w, &lock_);
    if (w.tag == 0) throw ChannelClosed();
  }

  // try_send() delivers `v` if that needs no wait and returns true; else
  // returns false and leaves `v` as it was. Never blocks. Throws ChannelClosed.
  bool try_send(T& v) {
    sa::detail::RuntimeSection section;  // no shim handoff while we hold the lock
    lock_.lock();
    if (closed_) {
      lock_.unlock();
      throw ChannelClosed();
    }
    if (deliver_locked(v)) return true;
    lock_.unlock();
    return false;
  }
  bool try_send(T&& v) { return try_send(v); }

  // recv() takes the oldest value, parking the fiber while there is none;
  // returns an empty optional once the channel is closed and drained.
  std::optional<T> recv() {
    sa::detail::RuntimeSection section;  // no shim handoff while we hold the lock
    lock_.lock();
    if (std::optional<T> v = take_locked()) return v;
    if (closed_) {
      lock_.unlock();
      return std::nullopt;
    }
    if constexpr (kFastSlot) {
      // acquire: see F1.
      if (receivers_.empty() && fast_.load(std::memory_order_acquire) == kIdle)
        if (detail::VProc* vp = detail::spin_eligible()) return recv_fast(vp);
    }
    RecvWait rw;
    rw.w.slot = &rw.value;
    receivers_.push_back(&rw.w);
    detail::park_spin(rw.w, &lock_);
    return std::move(rw.value);  // empty if woken by close()
  }

  // try_recv() takes a value if one is ready; never blocks.
  std::optional<T> try_recv() {
    sa::detail::RuntimeSection section;  // no shim handoff while we hold the lock
    lock_.lock();
    if (std::optional<T> v = take_locked()) return v;
    lock_.unlock();
    return std::nullopt;
  }

  // close() refuses further sends and wakes every waiter; never blocks.
  void close() noexcept {
    sa::detail::RuntimeSection section;  // no shim handoff while we hold the lock
    lock_.lock();
    closed_ = true;
    if (fast_.load(std::memory_order_relaxed) == kArmed) fast_.store(kClosed, std::memory_order_release);  // F3
    detail::WaitList receivers = std::exchange(receivers_, {});
    detail::WaitList senders = std::exchange(senders_, {});
    lock_.unlock();
    receivers.wake_all();  // their slots stay empty
    senders.wake_all();    // their tags stay 0
  }

  bool closed() const noexcept {
    sa::detail::RuntimeSection section;  // no shim handoff while we hold the lock
    lock_.lock();
    bool c = closed_;
    lock_.unlock();
    return c;
  }
  std::size_t capacity() const noexcept { return cap_; }
  // size() is the number of buffered values (a snapshot).
  std::size_t size() const noexcept {
    sa::detail::RuntimeSection section;  // no shim handoff while we hold the lock
    lock_.lock();
    std::size_t n = buf_.size();
    lock_.unlock();
    return n;
  }

 private:
  // deliver_locked(): with lock_ held and the channel open, hand `v` to a
  // parked receiver or the buffer; releases lock_ and returns true if it did,
  // keeps lock_ and returns false if the sender must wait.
  bool deliver_locked(T& v) {
    if constexpr (kFastSlot) {
      if (fast_.load(std::memory_order_relaxed) == kArmed) {  // F3: the oldest receiver
        fast_value_ = std::bit_cast<FastValue>(v);
        fast_.store(kFilled, std::memory_order_release);
        lock_.unlock();
        return true;
      }
    }
    if (detail::Waiter* r = receivers_.pop_front()) {
      *static_cast<std::optional<T>*>(r->slot) = std::move(v);
      lock_.unlock();
      detail::try_wake(r);
      return true;
    }
    if (cap_ != 0 && buf_.size() < cap_) {
      buf_.push_back(std::move(v));
      lock_.unlock();
      return true;
    }
    return false;
  }

  // recv_fast(): recv() in the fast slot, from F1 (lock_ held; see the
  // design comment).
  std::optional<T> recv_fast(detail::VProc* vp) {
    fast_.store(kArmed, std::memory_order_relaxed);  // F1: the unlock publishes it
    lock_.unlock();
    uint32_t s = detail::spin_while(vp, fast_, kArmed);  // F2
    if (s == kArmed) {  // F4: the spin ran out
      lock_.lock();
      s = fast_.load(std::memory_order_relaxed);
      if (s == kArmed) {
        fast_.store(kIdle, std::memory_order_relaxed);
        RecvWait rw;
        rw.w.slot = &rw.value;
        receivers_.push_front(&rw.w);
        detail::park(rw.w, &lock_, detail::TimerHeap::kNever);
        return std::move(rw.value);  // empty if woken by close()
      }
      lock_.unlock();  // filled or closed meanwhile: ours alone to leave
    }
    std::optional<T> v;
    if (s == kFilled) v.emplace(std::bit_cast<T>(fast_value_));
    // release: our read of the value comes before the next sender's write
    // (the next receiver arms after an acquire load of Idle, F1).
    fast_.store(kIdle, std::memory_order_release);
    return v;
  }

  // RecvWait: a parked receiver's Waiter and the slot a sender fills, on
  // one cache line when T is small: the sender, often on another CPU,
  // writes both, and the receiver reads both when it resumes.
  struct alignas(64) RecvWait {
    std::optional<T> value;
    detail::Waiter w;
  };

  // take_locked(): with lock_ held, take the oldest value (refilling the
  // buffer from a parked sender); releases lock_ if it returns a value.
  std::optional<T> take_locked() {
    detail::Waiter* s = nullptr;
    std::optional<T> v;
    if (cap_ != 0 && !buf_.empty()) {  // a rendezvous channel never touches buf_'s lines
      v.emplace(std::move(buf_.front()));
      buf_.pop_front();
      if ((s = senders_.pop_front())) buf_.push_back(std::move(*static_cast<T*>(s->slot)));
    } else if ((s = senders_.pop_front())) {
      v.emplace(std::move(*static_cast<T*>(s->slot)));  // unbuffered: straight from the sender
    } else {
      return std::nullopt;
    }
    if (s) s->tag = 1;
    lock_.unlock();
    if (s) detail::try_wake(s);
    return v;
  }

  static constexpr bool kFastSlot = std::is_trivially_copyable_v<T> && sizeof(T) <= 8 && alignof(T) <= 8;
  enum : uint32_t { kIdle, kArmed, kFilled, kClosed };  // fast_
  struct FastValue {
    alignas(T) std::byte bytes[sizeof(T)];
  };
  struct NoFastValue {};

  // What every operation touches, first and on one line of its own (two
  // channels side by side are often used from two CPUs at once): the lock,
  // the fast slot (its state and value) and the wait lists, 56 bytes.
  alignas(64) mutable detail::SpinLock lock_;
  bool closed_ = false;
  std::atomic<uint32_t> fast_{kIdle};  // F1-F4
  [[no_unique_address]] std::conditional_t<kFastSlot, FastValue, NoFastValue> fast_value_{};
  detail::WaitList senders_;
  detail::WaitList receivers_;
  const std::size_t cap_;
  std::deque<T> buf_;
};

}  // namespace sa
