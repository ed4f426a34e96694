//! Reconnect backoff: doubling from a minimum to a maximum.

use std::time::{Duration, Instant};

/// When to try an upstream again after failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Waits start at `min` and double up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// A failure at `now`: when to try next (the wait then doubles).
    pub fn failed(&mut self, now: Instant) -> Instant {
        let wait = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        now.checked_add(wait).unwrap_or(now)
    }

    /// A success: the next failure waits `min` again.
    pub fn succeeded(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_max_and_resets() {
        let t = Instant::now();
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<_> = (0..4).map(|_| b.failed(t) - t).collect();
        assert_eq!(waits, [100, 200, 350, 350].map(Duration::from_millis));
        b.succeeded();
        assert_eq!(b.failed(t) - t, Duration::from_millis(100));
    }
}
