//! Locking that survives a panicked holder (the data stays usable).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking the data of a poisoned lock as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// This thread's shard choice (a hash of its id, fixed for its life).
    static THREAD_HASH: usize = {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) as usize
    };
}

/// The shard (of `shards`) this thread uses for counters and logs, so that
/// connections on different threads do not share cache lines or locks.
#[inline]
pub(crate) fn thread_shard(shards: usize) -> usize {
    THREAD_HASH.with(|h| *h) % shards.max(1)
}

/// How many shards per-request bookkeeping uses (the machine's parallelism, at most 8).
pub(crate) fn shard_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
}
