//! Operational metrics of a server, kept off the per-request path, and
//! their Prometheus text exposition.
//!
//! Two halves:
//! - [`Metrics`], shared by every session of an engine (installed with
//!   [`EngineBuilder::metrics`](crate::EngineBuilder::metrics)): requests and
//!   exceptions by unit and function code, request latency as a histogram
//!   with fixed buckets, frames dropped by reason. It is split in shards,
//!   each behind its own lock, and is written only when a session folds in.
//! - [`Tally`], one per session: plain local counts bumped on every request
//!   (no atomics, no lock, no allocation), folded into the shared
//!   [`Metrics`] at most about once a second, when its small table fills,
//!   when the session closes and when it is dropped.
//!
//! Connections, close causes and bytes are not counted twice: the exposition
//! ([`render`]) reads them from each server's [`ServerStats`](crate::ServerStats).
//! Time comes in as an argument: the core has no clock.

mod render;
mod tally;

pub use render::{Source, escape_label_value, render};
pub use tally::Tally;

use crate::error::{ConnectionError, FrameError};
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Shards of [`Metrics`]: sessions spread over them by id.
const SHARDS: usize = 8;

/// Upper bounds of the latency histogram's buckets, in microseconds (a
/// last `+Inf` bucket takes the rest).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
];

/// Why a frame (or the bytes meant to be one) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// RTU CRC or ASCII LRC wrong, or ASCII not hex.
    Checksum,
    /// MBAP header that can never be valid (protocol id, length).
    Mbap,
    /// Longer than the protocol or the receive buffer allows.
    Oversize,
    /// A partial frame cut off by a timeout or a line silence.
    Timeout,
    /// Bytes that were not a frame (garbage, truncated, empty PDU).
    Garbage,
}

impl DropReason {
    /// Every reason, in exposition order.
    pub const ALL: [Self; 5] = [Self::Checksum, Self::Mbap, Self::Oversize, Self::Timeout, Self::Garbage];

    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Checksum => "checksum",
            Self::Mbap => "mbap",
            Self::Oversize => "oversize",
            Self::Timeout => "timeout",
            Self::Garbage => "garbage",
        }
    }

    /// The index in [`DropReason::ALL`].
    const fn index(self) -> usize {
        self as usize
    }

    /// The reason a frame error drops input.
    pub fn of_frame(error: &FrameError) -> Self {
        match error {
            FrameError::BadCrc { .. } | FrameError::BadLrc { .. } | FrameError::BadHex => Self::Checksum,
            FrameError::BadProtocolId(_) | FrameError::BadLength(_) => Self::Mbap,
            FrameError::TooLong(_) => Self::Oversize,
            FrameError::Garbage(_) | FrameError::Truncated(_) | FrameError::EmptyPdu => Self::Garbage,
        }
    }

    /// The reason a connection error drops input.
    pub fn of_connection(error: &ConnectionError) -> Self {
        match error {
            ConnectionError::Frame(f) => Self::of_frame(f),
            ConnectionError::BufferFull(_) => Self::Oversize,
        }
    }
}

/// Requests and exceptions of one (unit, function code).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCount {
    /// Requests received (answered or not).
    pub requests: u64,
    /// Of them, answered with an exception.
    pub exceptions: u64,
}

/// A latency histogram over [`LATENCY_BUCKETS_US`] (not cumulative: one
/// count per bucket, the last one `+Inf`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket; index `LATENCY_BUCKETS_US.len()` is `+Inf`.
    pub buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of the observations, in nanoseconds.
    pub sum_nanos: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records `n` observations of `latency`.
    pub fn observe(&mut self, latency: Duration, n: u64) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let micros = nanos / 1_000;
        let at = LATENCY_BUCKETS_US.partition_point(|&b| b < micros);
        if let Some(bucket) = self.buckets.get_mut(at) {
            *bucket = bucket.saturating_add(n);
        }
        self.sum_nanos = self.sum_nanos.saturating_add(nanos.saturating_mul(n));
        self.count = self.count.saturating_add(n);
    }

    /// Adds `other` in.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a = a.saturating_add(b);
        }
        self.sum_nanos = self.sum_nanos.saturating_add(other.sum_nanos);
        self.count = self.count.saturating_add(other.count);
    }
}

/// What the shards hold, and what a snapshot sums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Requests and exceptions by (unit, function code).
    pub requests: BTreeMap<(u8, u8), RequestCount>,
    /// Latency of answered requests.
    pub latency: Histogram,
    /// Frames dropped, indexed as [`DropReason::ALL`].
    pub dropped: [u64; DropReason::ALL.len()],
}

impl Snapshot {
    /// Adds `other` in.
    fn merge(&mut self, other: &Self) {
        for (key, count) in &other.requests {
            let into = self.requests.entry(*key).or_default();
            into.requests = into.requests.saturating_add(count.requests);
            into.exceptions = into.exceptions.saturating_add(count.exceptions);
        }
        self.latency.merge(&other.latency);
        for (a, b) in self.dropped.iter_mut().zip(other.dropped) {
            *a = a.saturating_add(b);
        }
    }

    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason.index()).copied().unwrap_or(0)
    }
}

/// One shard on its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard(Mutex<Snapshot>);

/// The metrics of one engine, shared by all of its sessions (in an `Arc`).
#[derive(Debug, Default)]
pub struct Metrics {
    shards: [Shard; SHARDS],
}

impl Metrics {
    /// Nothing counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the shard of session `id`.
    fn with_shard(&self, id: u64, f: impl FnOnce(&mut Snapshot)) {
        // ok: `id % SHARDS` is below SHARDS, so the index is in bounds.
        if let Some(shard) = self.shards.get((id % SHARDS as u64) as usize) {
            f(&mut shard.0.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// The totals over all shards (what has been folded in so far).
    pub fn snapshot(&self) -> Snapshot {
        let mut total = Snapshot::default();
        for shard in &self.shards {
            total.merge(&shard.0.lock().unwrap_or_else(PoisonError::into_inner));
        }
        total
    }
}

#[cfg(test)]
mod tests;
