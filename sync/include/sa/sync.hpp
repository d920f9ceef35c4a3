#pragma once
// sa/sync: synchronisation for fibers.
//
// Every primitive here blocks *fibers*, never the kernel thread that runs
// them: a waiting fiber parks (waiter.hpp's protocol) and its VProc runs
// other fibers. Each one also works from a thread outside the runtime: such
// a thread blocks on a futex when it waits, and its releasing calls
// (unlock, notify, release, send, close, set, done) wake fibers normally.
//
// The building block is detail::WaitQueue: a short internal SpinLock guarding
// an intrusive FIFO of Waiters that live on the waiters' stacks, so waiting
// allocates nothing. The lock is released on the far side of the context
// switch, so no wake-up can reach a fiber that has not finished parking.
// Under ShimMode::on every entry that takes such a lock first opens a
// detail::RuntimeSection: the activation is then in runtime code, where the
// shim never hands its VProc away, so a lock is never held by an activation
// that lost its processor.
//
//   Mutex      Drepper's mutex2 over a WaitQueue (barging, brief spin)
//   CondVar    any Lockable; wait, wait_for, wait_until, notify_one/all
//   Semaphore  counting; permits handed to waiters in FIFO order
//   Barrier    cyclic; WaitGroup (Go); Latch (std::latch); Event (manual reset)
//   Channel<T> bounded, unbounded or rendezvous; close(); try_ variants
//   Spinlock   TTAS with backoff; records its holder (for the shim)
//
// Rejected: a std::mutex / std::condition_variable inside each object. It
// blocks the kernel thread, so a VProc would stop running fibers while one
// waits: the very defect this runtime exists to remove.

#include <sa/barrier.hpp>
#include <sa/channel.hpp>
#include <sa/cond_var.hpp>
#include <sa/mutex.hpp>
#include <sa/semaphore.hpp>
#include <sa/spinlock.hpp>
