#include <sa/detail/timer_heap.hpp>

#include <mutex>

namespace sa::detail {

void TimerHeap::arm(TimerNode* n) {
  std::lock_guard g(lock_);
  n->heap = this;
  n->seq = seq_++;
  heap_.push_back(n);  // may throw std::bad_alloc before anything changed
  place(heap_.size() - 1, n);
  sift_up(heap_.size() - 1);
  publish();
}

void TimerHeap::disarm(TimerNode* n) noexcept {
  std::lock_guard g(lock_);
  if (n->index >= 0) {
    remove_at(static_cast<size_t>(n->index));
    publish();
  }
}

int TimerHeap::fire_expired(int64_t now) noexcept {
  if (next_deadline() > now) return 0;
  int woken = 0;
  std::lock_guard g(lock_);
  while (!heap_.empty() && heap_[0]->deadline <= now) {
    TimerNode* n = heap_[0];
    remove_at(0);
    if (try_wake(n->waiter, WaitState::TimedOut)) ++woken;
  }
  publish();
  return woken;
}

void TimerHeap::remove_at(size_t i) noexcept {
  TimerNode* gone = heap_[i];
  TimerNode* last = heap_.back();
  heap_.pop_back();
  gone->index = -1;
  if (gone == last) return;
  place(i, last);
  sift_up(i);
  sift_down(static_cast<size_t>(last->index));
}

void TimerHeap::sift_up(size_t i) noexcept {
  TimerNode* n = heap_[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!before(n, heap_[parent])) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, n);
}

void TimerHeap::sift_down(size_t i) noexcept {
  TimerNode* n = heap_[i];
  const size_t size = heap_.size();
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= size) break;
    if (child + 1 < size && before(heap_[child + 1], heap_[child])) ++child;
    if (!before(heap_[child], n)) break;
    place(i, heap_[child]);
    i = child;
  }
  place(i, n);
}

}  // namespace sa::detail
