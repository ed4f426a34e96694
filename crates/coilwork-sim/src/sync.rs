//! Locking that survives a panicked holder (the data stays usable).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking the data of a poisoned lock as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The number the next thread to ask for its shard gets.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard of [`shard_count`], given round robin in the
    /// order threads first ask (fixed for their life): a runtime's worker
    /// threads get different shards, where a hash of their ids could put
    /// two on one.
    static THREAD_SHARD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % shard_count();
}

/// The shard (of `shards`, normally [`shard_count`]) this thread uses for
/// counters and logs, so that connections on different threads do not
/// share cache lines or locks.
#[inline]
pub(crate) fn thread_shard(shards: usize) -> usize {
    let i = THREAD_SHARD.with(|i| *i);
    if i < shards { i } else { i % shards.max(1) }
}

/// How many shards per-request bookkeeping uses (the machine's parallelism, at most 8).
pub(crate) fn shard_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
}
