//! One session's local counts, folded into the shared [`Metrics`] at a low rate.

use super::{DropReason, Histogram, Metrics, RequestCount};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// (unit, function) pairs a tally holds before it must fold.
const ENTRIES: usize = 16;

/// How often a busy stream session folds in at most.
pub const FOLD_INTERVAL: Duration = Duration::from_secs(1);

/// One (unit, function) row of a tally.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    unit: u8,
    function: u8,
    count: RequestCount,
}

/// One session's counts: bumped on every request with no atomic, no lock and
/// no allocation, folded into [`Metrics`] when [`Tally::fold_due`] says so,
/// when its table fills, and when it is dropped.
#[derive(Debug)]
pub struct Tally {
    metrics: Arc<Metrics>,
    id: u64,
    entries: [Entry; ENTRIES],
    len: usize,
    /// The entry the last request went to: a client mostly repeats itself.
    last: usize,
    latency: Histogram,
    dropped: [u64; DropReason::ALL.len()],
    /// Answers queued since the input that carried their requests.
    pending: u64,
    /// When that input arrived.
    input_at: Option<Instant>,
    /// When a fold is next due: `FOLD_INTERVAL` after the last one (`None`
    /// before the first). Kept as the deadline, so that the check on every
    /// input is one comparison.
    next_fold: Option<Instant>,
    dirty: bool,
}

impl Tally {
    /// An empty tally of session `id` (which spreads sessions over the shards).
    pub fn new(metrics: Arc<Metrics>, id: u64) -> Self {
        Self {
            metrics,
            id,
            entries: [Entry::default(); ENTRIES],
            len: 0,
            last: 0,
            latency: Histogram::default(),
            dropped: [0; DropReason::ALL.len()],
            pending: 0,
            input_at: None,
            next_fold: None,
            dirty: false,
        }
    }

    /// Counts a request to `unit` for `function`; `answered`: an answer was
    /// queued (its latency is observed at [`Tally::sent`]), `exception`: it is one.
    #[inline]
    pub fn request(&mut self, unit: u8, function: u8, answered: bool, exception: bool) {
        if let Some(count) = self.entry(unit, function) {
            count.requests += 1;
            count.exceptions += u64::from(exception);
        }
        self.pending += u64::from(answered);
    }

    /// Counts an exception answer to a request already counted with
    /// [`Tally::request`] (for an adapter that learns the answer later, as
    /// a gateway whose answers come from upstream).
    #[inline]
    pub fn exception(&mut self, unit: u8, function: u8) {
        if let Some(count) = self.entry(unit, function) {
            count.exceptions += 1;
        }
    }

    /// Observes one answer's latency, measured by the adapter (for answers
    /// that do not follow [`Tally::input`] / [`Tally::sent`], as a gateway's).
    #[inline]
    pub fn observe(&mut self, latency: Duration) {
        self.latency.observe(latency, 1);
        self.dirty = true;
    }

    /// The counts of (`unit`, `function`), made (folding first if the table
    /// is full); marks the tally dirty.
    #[inline]
    fn entry(&mut self, unit: u8, function: u8) -> Option<&mut RequestCount> {
        let last = self.last;
        let hit = last < self.len
            && self
                .entries
                .get(last)
                .is_some_and(|e| e.unit == unit && e.function == function);
        let found = if hit {
            Some(last)
        } else {
            self.entries
                .iter()
                .take(self.len)
                .position(|e| e.unit == unit && e.function == function)
        };
        let at = match found {
            Some(at) => at,
            None => {
                if self.len == ENTRIES {
                    self.fold();
                }
                let at = self.len;
                if let Some(e) = self.entries.get_mut(at) {
                    *e = Entry {
                        unit,
                        function,
                        count: RequestCount::default(),
                    };
                }
                self.len += 1;
                at
            }
        };
        self.dirty = true;
        self.last = at;
        self.entries.get_mut(at).map(|e| &mut e.count)
    }

    /// Counts a frame dropped for `reason`.
    pub fn dropped(&mut self, reason: DropReason) {
        self.dirty = true;
        if let Some(d) = self.dropped.get_mut(reason.index()) {
            *d += 1;
        }
    }

    /// Input arrived at `now`: the requests it completes are timed from it
    /// (unless answers to earlier input are still pending).
    #[inline]
    pub fn input(&mut self, now: Instant) {
        if self.pending == 0 {
            self.input_at = Some(now);
        }
    }

    /// Every queued answer was written at `now`: observes their latency.
    #[inline]
    pub fn sent(&mut self, now: Instant) {
        if self.pending > 0
            && let Some(at) = self.input_at.take()
        {
            self.latency.observe(now.saturating_duration_since(at), self.pending);
            self.pending = 0;
        }
    }

    /// True if counts wait and the last fold was `FOLD_INTERVAL` (1 s) ago.
    #[inline]
    pub fn fold_due(&self, now: Instant) -> bool {
        self.dirty && self.next_fold.is_none_or(|t| now >= t)
    }

    /// When [`Tally::fold_due`] turns true (`now` if it already is); `None`
    /// while nothing waits. An adapter with no other moment to fold (a quiet
    /// gateway client) arms a timer for it and calls [`Tally::fold_if_due`].
    pub fn fold_deadline(&self, now: Instant) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        Some(self.next_fold.map_or(now, |d| d.max(now)))
    }

    /// Folds in if [`Tally::fold_due`].
    #[inline]
    pub fn fold_if_due(&mut self, now: Instant) {
        if self.fold_due(now) {
            // A clock that cannot go 1 s further: fold every time.
            self.next_fold = now.checked_add(FOLD_INTERVAL);
            self.fold();
        }
    }

    /// Adds the local counts to the shared [`Metrics`] and clears them.
    pub fn fold(&mut self) {
        if !self.dirty {
            return;
        }
        let entries = self.entries.get(..self.len).unwrap_or(&[]);
        let (latency, dropped) = (&self.latency, &self.dropped);
        self.metrics.with_shard(self.id, |shard| {
            for e in entries {
                let into = shard.requests.entry((e.unit, e.function)).or_default();
                into.requests = into.requests.saturating_add(e.count.requests);
                into.exceptions = into.exceptions.saturating_add(e.count.exceptions);
            }
            shard.latency.merge(latency);
            for (a, b) in shard.dropped.iter_mut().zip(dropped) {
                *a = a.saturating_add(*b);
            }
        });
        self.len = 0;
        self.latency = Histogram::default();
        self.dropped = [0; DropReason::ALL.len()];
        self.dirty = false;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.fold();
    }
}
