//! A virtual clock: a sans-IO test passes its `now()` to the code under test
//! and moves it on by hand, so deadlines are hit exactly and nothing sleeps.

use std::time::{Duration, Instant};

/// `t0` plus the time a test advanced it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualClock {
    t0: Instant,
    now: Instant,
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualClock {
    /// A clock whose `t0` is the real time now.
    pub fn new() -> Self {
        let t0 = Instant::now();
        Self { t0, now: t0 }
    }

    /// The time the clock shows.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The time it started at.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// How far it was advanced since `t0`.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Moves the clock on by `d`; returns the new time.
    pub fn advance(&mut self, d: Duration) -> Instant {
        self.now += d;
        self.now
    }

    /// Moves the clock to `t` if `t` is later (a deadline, say); returns the time then.
    pub fn advance_to(&mut self, t: Instant) -> Instant {
        self.now = self.now.max(t);
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_only_when_told_and_never_back() {
        let mut c = VirtualClock::new();
        assert_eq!(c.now(), c.t0());
        let t = c.advance(Duration::from_millis(30));
        assert_eq!(c.elapsed(), Duration::from_millis(30));
        assert_eq!(c.advance_to(c.t0()), t, "never back");
        assert_eq!(
            c.advance_to(t + Duration::from_secs(1)),
            c.t0() + Duration::from_millis(1030)
        );
    }
}
