#pragma once
// The ready queues of the scheduler.
//
// RunQueue: one per VProc. A bounded FIFO ring that only its owner pushes to
// and that the owner and thieves pop from with a CAS on `head`, plus a
// `next` slot for the fiber the running fiber just readied (it runs next, for
// locality of communication). This is the algorithm of Go's per-P run queue
// (runtime/proc.go: runqput, runqget, runqgrab, runqsteal): the owner writes
// slots and publishes them with a release store of `tail`; a consumer reads
// `tail` with acquire, copies slots, and commits with a CAS of `head`, so a
// slot it copied can only have been overwritten if its CAS fails. A thief
// takes half of the queue in one CAS.
//
// Owner-only mode (set_owner_only()): a queue that no thief can reach (its
// runtime has one VProc, and a VProc never steals from itself) has a single
// consumer, its owner, so pop() commits with plain stores of `head` and
// `next` instead of a CAS or an exchange: a yield on such a VProc then makes
// no locked instruction. Readers on other threads (empty(), size(): wakers,
// Runtime::stats) only look, as before.
//
// Rejected: a Chase-Lev deque (Chase and Lev, SPAA 2005). Its owner pops
// LIFO, which makes yield() unfair (the yielding fiber is popped straight back)
// and needs a growable array with deferred reclamation. A full ring instead
// spills half of itself to the global queue (Go's runqputslow).
//
// GlobalQueue: work from outside the runtime and spill-over; a SpinLock and an
// intrusive FIFO, with an atomic size so an empty check is one load.
//
// Inbox: one per VProc, for fibers bound to it that are readied elsewhere,
// usually on another CPU. A producer pushes onto an intrusive LIFO list with
// one CAS (Treiber's stack, IBM RJ 5118, 1986, push side only); the owner
// takes the whole list with one exchange and reverses it into a private
// FIFO it then pops without atomics. A push-only CAS has no ABA problem:
// the node's link is whatever the head is when the CAS succeeds.
// Rejected: Vyukov's intrusive MPSC node queue (1024cores.net), used before:
// handing over one fiber moved four cache lines between the CPUs (the head,
// written by producers and by the owner re-inserting its stub, and the stub's
// link, both ways); here the head's line moves once each way.

#include <atomic>
#include <cstdint>

#include <sa/detail/fiber_ctl.hpp>
#include <sa/detail/spin_lock.hpp>

namespace sa::detail {

class GlobalQueue {
 public:
  // push_batch() appends the chain first..last (linked by QueueHook::next).
  void push_batch(FiberCtl* first, FiberCtl* last, uint32_t n) noexcept {
    last->next.store(nullptr, std::memory_order_relaxed);
    lock_.lock();
    if (tail_) tail_->next.store(first, std::memory_order_relaxed); else head_ = first;
    tail_ = last;
    // relaxed: size_ is a hint for empty(); the lock orders the contents.
    size_.store(size_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    lock_.unlock();
  }
  void push(FiberCtl* f) noexcept { push_batch(f, f, 1); }
  FiberCtl* pop() noexcept {
    if (empty()) return nullptr;
    lock_.lock();
    FiberCtl* f = static_cast<FiberCtl*>(head_);
    if (f) {
      head_ = f->next.load(std::memory_order_relaxed);
      if (!head_) tail_ = nullptr;
      size_.store(size_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    }
    lock_.unlock();
    return f;
  }
  // empty() may be stale by the time it returns; the idle protocol orders it
  // with a seq_cst fence (see VProc).
  bool empty() const noexcept { return size_.load(std::memory_order_relaxed) == 0; }
  uint32_t size() const noexcept { return size_.load(std::memory_order_relaxed); }

 private:
  SpinLock lock_;
  QueueHook* head_ = nullptr;
  QueueHook* tail_ = nullptr;
  std::atomic<uint32_t> size_{0};
};

class RunQueue {
 public:
  static constexpr uint32_t kCapacity = 256;

  // push() appends `f` at the tail; owner only. A full ring moves half of
  // itself and `f` to `global`.
  void push(FiberCtl* f, GlobalQueue& global) noexcept {
    if (!try_push(f)) push_full(f, global);
  }

  // set_owner_only() declares that no thief will ever take from this queue
  // (see the top of this file). Call before the queue is first used.
  void set_owner_only() noexcept { owner_only_ = true; }

  // push_next() makes `f` run next; the fiber it displaces goes to the tail.
  void push_next(FiberCtl* f, GlobalQueue& global) noexcept {
    FiberCtl* old;
    if (owner_only_) {
      old = next_.load(std::memory_order_relaxed);  // only we write it
      // release: for the readers that only look (empty()); nobody else takes it.
      next_.store(f, std::memory_order_release);
    } else {
      // acq_rel: pairs with a thief's CAS of next_ (steal_next).
      old = next_.exchange(f, std::memory_order_acq_rel);
    }
    if (old) push(old, global);
  }

  // Every kSkipNextEvery-th time pop_local() finds the `next` slot full it
  // takes the head of the ring first, so two fibers waking each other
  // cannot starve the rest. (Counted over the picks that find the slot
  // full, not over all picks: a pick that finds it empty then pays for
  // one load, not for a count.)
  static constexpr uint32_t kSkipNextEvery = 32;

  // pop_local() is pop() for the scheduler's local picks, fair as above.
  // Owner only.
  FiberCtl* pop_local() noexcept {
    if (owner_only_) return pop_owner_only(/*fair=*/true);
    const bool skip_next =
        next_.load(std::memory_order_relaxed) && ++next_picks_ % kSkipNextEvery == 0;
    return pop(skip_next);
  }

  // rotate() is, on an owner-only queue, pop() of the head and push() of
  // `f` at the tail in one step, for a yield: the head, or null (and
  // nothing done) unless the queue is owner-only, its `next` slot is empty
  // and its head a fiber that ran before. `f` is then queued while it still
  // runs: safe only because nobody but the owner pops here, and the owner
  // is switching away from `f` (its context is saved before the owner's
  // next pop). The ring does not grow, so it never spills. Owner only.
  FiberCtl* rotate(FiberCtl* f) noexcept {
    if (!owner_only_ || next_.load(std::memory_order_relaxed)) return nullptr;
    const uint32_t h = head_.load(std::memory_order_relaxed);  // only we write them
    const uint32_t t = tail_.load(std::memory_order_relaxed);
    if (t == h) return nullptr;
    FiberCtl* g = buf_[h % kCapacity].load(std::memory_order_relaxed);
    if (!g->ctx) return nullptr;  // new: prepare() may fail; take the usual path
    buf_[t % kCapacity].store(f, std::memory_order_relaxed);
    // release: for the readers that only look (empty(), size()).
    head_.store(h + 1, std::memory_order_release);
    tail_.store(t + 1, std::memory_order_release);
    return g;
  }

  // pop() takes the next fiber to run: the `next` slot unless `skip_next`,
  // then the head. Owner only.
  FiberCtl* pop(bool skip_next = false) noexcept {
    if (owner_only_) return pop_owner_only(false, skip_next);
    if (!skip_next && next_.load(std::memory_order_relaxed)) {
      FiberCtl* f = next_.exchange(nullptr, std::memory_order_acquire);
      if (f) return f;
    }
    for (;;) {
      uint32_t h = head_.load(std::memory_order_acquire);
      uint32_t t = tail_.load(std::memory_order_relaxed);
      if (t == h) break;
      FiberCtl* f = buf_[h % kCapacity].load(std::memory_order_relaxed);
      // release: our read of the slot happens before the owner may reuse it.
      if (head_.compare_exchange_weak(h, h + 1, std::memory_order_release, std::memory_order_relaxed)) return f;
    }
    if (skip_next) return next_.exchange(nullptr, std::memory_order_acquire);
    return nullptr;
  }

  // steal_into() moves about half of this queue into `thief`'s (which must
  // be empty; called by thief's owner) and returns one fiber to run, or null.
  // The `next` slot is taken only if `take_next` and the ring is empty.
  FiberCtl* steal_into(RunQueue& thief, bool take_next) noexcept {
    uint32_t tt = thief.tail_.load(std::memory_order_relaxed);
    for (;;) {
      uint32_t h = head_.load(std::memory_order_acquire);
      uint32_t t = tail_.load(std::memory_order_acquire);  // acquire: see the slots it covers
      uint32_t n = t - h;
      if (n == 0) return take_next ? steal_next() : nullptr;
      if (n > kCapacity) continue;  // h and t read at different times; retry
      n -= n / 2;
      for (uint32_t i = 0; i < n; ++i)
        thief.buf_[(tt + i) % kCapacity].store(buf_[(h + i) % kCapacity].load(std::memory_order_relaxed),
                                                std::memory_order_relaxed);
      // acq_rel: commit the copy (release for the owner's reuse of the slots).
      if (head_.compare_exchange_strong(h, h + n, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        // Run the last one copied; publish the others (Go's runqsteal).
        FiberCtl* last = thief.buf_[(tt + n - 1) % kCapacity].load(std::memory_order_relaxed);
        if (n > 1) thief.tail_.store(tt + n - 1, std::memory_order_release);
        return last;
      }
    }
  }

  // empty() is true when neither the ring nor the `next` slot holds a fiber.
  bool empty() const noexcept {
    return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire) &&
           next_.load(std::memory_order_acquire) == nullptr;
  }
  uint32_t size() const noexcept {
    return tail_.load(std::memory_order_acquire) - head_.load(std::memory_order_acquire) +
           (next_.load(std::memory_order_relaxed) ? 1 : 0);
  }

 private:
  // try_push() appends `f` unless the ring is full.
  bool try_push(FiberCtl* f) noexcept {
    // acquire: slots below head are no longer read by any consumer.
    uint32_t h = head_.load(std::memory_order_acquire);
    uint32_t t = tail_.load(std::memory_order_relaxed);  // only we write it
    if (t - h >= kCapacity) return false;
    buf_[t % kCapacity].store(f, std::memory_order_relaxed);
    // release: a consumer that sees the new tail sees the slot.
    tail_.store(t + 1, std::memory_order_release);
    return true;
  }

  // push_full() is push() into a full ring: spill half of it (a thief may
  // make room meanwhile: then retry). Out of line: push() stays small
  // enough to inline into the switch path.
  [[gnu::noinline]] void push_full(FiberCtl* f, GlobalQueue& global) noexcept {
    for (;;) {
      uint32_t h = head_.load(std::memory_order_acquire);
      uint32_t t = tail_.load(std::memory_order_relaxed);
      if (t - h < kCapacity) {
        if (try_push(f)) return;
        continue;
      }
      if (spill(f, h, t, global)) return;
    }
  }

  // pop_owner_only() is pop() (or, `fair`, pop_local()) for an owner-only
  // queue: nobody else consumes, so the owner's plain loads and stores
  // suffice.
  FiberCtl* pop_owner_only(bool fair, bool skip_next = false) noexcept {
    FiberCtl* f = next_.load(std::memory_order_relaxed);
    if (f && fair) skip_next = ++next_picks_ % kSkipNextEvery == 0;
    if (f && !skip_next) {
      next_.store(nullptr, std::memory_order_relaxed);
      return f;
    }
    const uint32_t h = head_.load(std::memory_order_relaxed);  // only we write it
    if (tail_.load(std::memory_order_relaxed) != h) {          // and this one
      FiberCtl* g = buf_[h % kCapacity].load(std::memory_order_relaxed);
      // release: for the readers that only look (empty(), size()).
      head_.store(h + 1, std::memory_order_release);
      return g;
    }
    if (f) next_.store(nullptr, std::memory_order_relaxed);
    return f;
  }

  FiberCtl* steal_next() noexcept {
    FiberCtl* f = next_.load(std::memory_order_acquire);
    if (f && next_.compare_exchange_strong(f, nullptr, std::memory_order_acq_rel)) return f;
    return nullptr;
  }

  bool spill(FiberCtl* f, uint32_t h, uint32_t t, GlobalQueue& global) noexcept {
    uint32_t n = (t - h) / 2;
    FiberCtl* batch[kCapacity / 2 + 1];
    for (uint32_t i = 0; i < n; ++i) batch[i] = buf_[(h + i) % kCapacity].load(std::memory_order_relaxed);
    if (!head_.compare_exchange_strong(h, h + n, std::memory_order_acq_rel, std::memory_order_relaxed))
      return false;  // a thief took some; the ring has room now
    batch[n] = f;
    for (uint32_t i = 0; i < n; ++i) batch[i]->next.store(batch[i + 1], std::memory_order_relaxed);
    global.push_batch(batch[0], batch[n], n + 1);
    return true;
  }

  alignas(64) std::atomic<uint32_t> head_{0};
  alignas(64) std::atomic<uint32_t> tail_{0};
  std::atomic<FiberCtl*> next_{nullptr};
  bool owner_only_ = false;  // set_owner_only(): no thief
  uint32_t next_picks_ = 0;  // pop_local() found `next` full this many times (owner only)
  std::atomic<FiberCtl*> buf_[kCapacity] = {};
};

class Inbox {
 public:
  Inbox() noexcept = default;
  Inbox(const Inbox&) = delete;
  Inbox& operator=(const Inbox&) = delete;

  // push() adds `f`; any thread; lock-free (one CAS, retried on contention).
  void push(FiberCtl* f) noexcept {
    // Guess an empty list rather than read the head first: the line then
    // crosses from the owner's CPU once, for the CAS, not for a read and
    // again for the write.
    QueueHook* old = nullptr;
    do {
      f->next.store(old, std::memory_order_relaxed);
      // release: the owner's exchange (acquire) sees the link and the
      // fiber's state; later pushes continue this release sequence.
    } while (!shared_.compare_exchange_weak(old, f, std::memory_order_release, std::memory_order_relaxed));
  }

  // pop() takes the oldest fiber, or null. Owner only.
  FiberCtl* pop() noexcept {
    QueueHook* n = private_.load(std::memory_order_relaxed);
    if (!n) {
      if (!grab()) return nullptr;
      n = private_.load(std::memory_order_relaxed);
    }
    private_.store(n->next.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return static_cast<FiberCtl*>(n);
  }

  // empty() is true when no fiber is queued. Owner only.
  bool empty() const noexcept {
    // One branch for both lists (a yield's fast path asks this every time).
    return (reinterpret_cast<uintptr_t>(private_.load(std::memory_order_relaxed)) |
            reinterpret_cast<uintptr_t>(shared_.load(std::memory_order_acquire))) == 0;
  }

  // looks_nonempty() is a hint for any thread (the time slicer): true if a
  // fiber was queued when it looked.
  bool looks_nonempty() const noexcept {
    return shared_.load(std::memory_order_relaxed) || private_.load(std::memory_order_relaxed);
  }

 private:
  // grab() moves the pushed fibers, oldest first, to the private list;
  // false if there were none.
  bool grab() noexcept {
    // Read first: a spinning owner polls a shared copy of the line and does
    // not take it from a producer about to push.
    if (!shared_.load(std::memory_order_relaxed)) return false;
    // acquire: see the links and the fibers the producers published.
    QueueHook* n = shared_.exchange(nullptr, std::memory_order_acquire);
    QueueHook* fifo = nullptr;
    while (n) {
      QueueHook* older = n->next.load(std::memory_order_relaxed);
      n->next.store(fifo, std::memory_order_relaxed);
      fifo = n;
      n = older;
    }
    private_.store(fifo, std::memory_order_relaxed);
    return fifo != nullptr;
  }

  alignas(64) std::atomic<QueueHook*> shared_{nullptr};  // newest first
  // Oldest first; written by the owner only (atomic, relaxed: for
  // looks_nonempty(); the owner's accesses compile to plain moves).
  alignas(64) std::atomic<QueueHook*> private_{nullptr};
};

}  // namespace sa::detail
