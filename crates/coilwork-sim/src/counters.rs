//! Reads and writes counted per register without a cost per register: each
//! request adds its range to a difference array (two relaxed atomic adds,
//! whatever its length), in one of several shards so that connections on
//! different threads do not fight over one cache line. Totals are prefix
//! sums, computed only when someone looks (the REST API, the page).

use crate::sync::{shard_count, thread_shard};
use std::sync::atomic::{AtomicU64, Ordering};

/// One shard: difference arrays of reads and writes (`size + 1` slots,
/// wrapping arithmetic: the prefix sums come out right).
struct Shard {
    reads: Box<[AtomicU64]>,
    writes: Box<[AtomicU64]>,
}

/// Per-register read and write counts of a device.
pub(crate) struct RangeCounters {
    shards: Box<[Shard]>,
}

impl std::fmt::Debug for RangeCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeCounters")
            .field("shards", &self.shards.len())
            .finish()
    }
}

fn zeros(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl RangeCounters {
    /// Counters for `size` registers, sharded by the machine's parallelism (at most 8).
    pub(crate) fn new(size: usize) -> Self {
        let shards = shard_count();
        Self {
            shards: (0..shards)
                .map(|_| Shard {
                    reads: zeros(size + 1),
                    writes: zeros(size + 1),
                })
                .collect(),
        }
    }

    /// Counts one read (or write) of registers `[first, end)`.
    #[inline]
    pub(crate) fn add(&self, first: usize, end: usize, write: bool) {
        let i = thread_shard(self.shards.len());
        let Some(shard) = self.shards.get(i) else { return };
        let diff = if write { &shard.writes } else { &shard.reads };
        if let (Some(a), Some(b)) = (diff.get(first), diff.get(end)) {
            a.fetch_add(1, Ordering::Relaxed);
            b.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// `(reads, writes)` of each register in `range`.
    pub(crate) fn totals(&self, range: std::ops::Range<usize>) -> Vec<(u64, u64)> {
        let mut out = vec![(0u64, 0u64); range.len()];
        for shard in &*self.shards {
            let (mut r, mut w) = (0u64, 0u64);
            for (a, (dr, dw)) in shard.reads.iter().zip(&*shard.writes).take(range.end).enumerate() {
                r = r.wrapping_add(dr.load(Ordering::Relaxed));
                w = w.wrapping_add(dw.load(Ordering::Relaxed));
                if let Some(slot) = a.checked_sub(range.start).and_then(|i| out.get_mut(i)) {
                    slot.0 = slot.0.wrapping_add(r);
                    slot.1 = slot.1.wrapping_add(w);
                }
            }
        }
        out
    }
}

/// A count that threads add to in shards of their own (a cache line each)
/// and that is summed when read: writers on different threads never share
/// a line.
pub(crate) struct ShardedCount {
    shards: Box<[Padded]>,
}

/// One shard's count, alone in its cache line.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

impl ShardedCount {
    /// A zero count, sharded by the machine's parallelism (at most 8).
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..shard_count()).map(|_| Padded::default()).collect(),
        }
    }

    /// Adds one in this thread's shard.
    #[inline]
    pub(crate) fn add(&self) {
        if let Some(s) = self.shards.get(thread_shard(self.shards.len())) {
            s.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sum of the shards.
    pub(crate) fn total(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_add_up_per_register() {
        let c = RangeCounters::new(10);
        c.add(2, 5, false);
        c.add(4, 10, false);
        c.add(0, 1, true);
        std::thread::scope(|s| {
            s.spawn(|| c.add(3, 4, false));
        });
        let t = c.totals(0..10);
        let reads: Vec<u64> = t.iter().map(|x| x.0).collect();
        assert_eq!(reads, [0, 0, 1, 2, 2, 1, 1, 1, 1, 1]);
        assert_eq!(t[0].1, 1);
        assert_eq!(c.totals(3..5), vec![(2, 0), (2, 0)]);
        assert_eq!(c.totals(9..10), vec![(1, 0)]);
    }

    #[test]
    fn sharded_count_sums_every_thread() {
        let c = ShardedCount::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..1000).for_each(|_| c.add()));
            }
        });
        c.add();
        assert_eq!(c.total(), 4001);
    }
}
