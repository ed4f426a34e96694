//! Connection timeouts of a byte stream (TCP, TLS, RTU/ASCII over TCP), sans-IO.
//!
//! A [`StreamTimeouts`] decides when a stream connection's partial frame has
//! waited too long, when the connection has been idle too long, and when its
//! buffers may be released. Time goes in ([`StreamTimeouts::on_input`],
//! [`StreamTimeouts::on_deadline`]) and deadlines come out
//! ([`StreamTimeouts::next_deadline`]); the adapter owns the clock and the
//! timer (or the read timeout) and does what an [`Expired`] says;
//! [`StreamTimeouts::expire`] does the connection's part itself:
//!
//! - [`Expired::PartialFrame`]: discard the partial frame
//!   ([`Connection::discard_partial_frame`]) and close the connection;
//! - [`Expired::Idle`]: close the connection;
//! - [`Expired::ReleaseBuffers`]: release the buffers
//!   ([`Connection::release_idle_buffers`] and the adapter's read buffer).
//!
//! The deadlines:
//! - partial frame: the first byte of the current partial frame plus
//!   [`StreamTimeoutConfig::partial_frame`];
//! - idle: the last input (or the start) plus [`StreamTimeoutConfig::idle`];
//! - release: the last input plus
//!   [`StreamTimeoutConfig::release_buffers_after`], only while the buffers
//!   are held (from an input until they are released).
//!
//! A deadline that would overflow `Instant` is never reached.

use crate::Connection;
use std::time::{Duration, Instant};

/// Timeout settings of one stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTimeoutConfig {
    /// Close a connection whose partial frame is not completed this long after its first byte (`None`: never).
    pub partial_frame: Option<Duration>,
    /// Close a connection that sent nothing for this long (`None`: never).
    pub idle: Option<Duration>,
    /// Release a connection's buffers after it was quiet this long.
    pub release_buffers_after: Duration,
}

/// A deadline that has passed, and what the adapter must do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The partial frame waited too long: discard it and close the connection.
    PartialFrame,
    /// Nothing arrived for too long: close the connection.
    Idle,
    /// Quiet for a while: release the buffers (the connection stays open).
    ReleaseBuffers,
}

/// The timeout state of one stream connection: a few instants, no clock.
#[derive(Debug, Clone)]
pub struct StreamTimeouts {
    /// The settings.
    config: StreamTimeoutConfig,
    /// The last input, or the start of the connection.
    last_rx: Instant,
    /// When the current partial frame started, if one is buffered.
    partial_since: Option<Instant>,
    /// Buffers are held: input came since the last release.
    holding: bool,
}

impl StreamTimeouts {
    /// The state of a connection opened at `now`: no partial frame, no buffers held.
    pub fn new(config: StreamTimeoutConfig, now: Instant) -> Self {
        Self {
            config,
            last_rx: now,
            partial_since: None,
            holding: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &StreamTimeoutConfig {
        &self.config
    }

    /// Records `n` bytes read at `now` and handed to `conn`; call right after
    /// [`Connection::handle_input`] (before taking the output), with
    /// `before` the connection's [`Connection::buffered_len`] before it.
    pub fn on_input(&mut self, now: Instant, conn: &Connection, before: usize, n: usize) {
        self.record_input(
            now,
            InputState {
                before,
                read: n,
                answered: conn.has_output(),
                partial: conn.has_partial_frame(),
                after: conn.buffered_len(),
            },
        );
    }

    /// [`StreamTimeouts::on_input`] on plain values.
    fn record_input(&mut self, now: Instant, input: InputState) {
        self.last_rx = now;
        self.holding = true;
        if !input.partial {
            self.partial_since = None;
        } else if self.partial_since.is_none()
            || input.answered
            || input.after < input.before.saturating_add(input.read)
        {
            // A new partial frame starts: the older frames were used up (or
            // none was buffered). A partial frame that only grew keeps its start.
            self.partial_since = Some(now);
        }
    }

    /// The partial-frame deadline, if a partial frame is buffered.
    fn partial_deadline(&self) -> Option<Instant> {
        let since = self.partial_since?;
        since.checked_add(self.config.partial_frame?)
    }

    /// The idle deadline, if there is an idle timeout.
    fn idle_deadline(&self) -> Option<Instant> {
        self.last_rx.checked_add(self.config.idle?)
    }

    /// The release deadline, while buffers are held.
    fn release_deadline(&self) -> Option<Instant> {
        if self.holding {
            self.last_rx.checked_add(self.config.release_buffers_after)
        } else {
            None
        }
    }

    /// The earliest deadline: arm a timer (or a read timeout) for it and call
    /// [`StreamTimeouts::on_deadline`] when it passes.
    pub fn next_deadline(&self) -> Option<Instant> {
        // The idle and release deadlines both count from the last input: one
        // addition for the nearer of the two (asked for on every wait).
        let from_rx = match (self.config.idle, self.holding) {
            (Some(idle), true) => Some(idle.min(self.config.release_buffers_after)),
            (Some(idle), false) => Some(idle),
            (None, true) => Some(self.config.release_buffers_after),
            (None, false) => None,
        }
        .and_then(|d| self.last_rx.checked_add(d));
        earliest(self.partial_deadline(), from_rx)
    }

    /// The earliest deadline that closes the connection (partial frame or
    /// idle), leaving out the buffer release: for an adapter whose reads are
    /// woken from outside only to close.
    pub fn next_closing_deadline(&self) -> Option<Instant> {
        earliest(self.partial_deadline(), self.idle_deadline())
    }

    /// The deadline that passed by `now`, if any; several passed: the partial
    /// frame first, then idle, then release. After
    /// [`Expired::ReleaseBuffers`] the buffers count as released until the
    /// next input (no release deadline until then).
    pub fn on_deadline(&mut self, now: Instant) -> Option<Expired> {
        if self.partial_deadline().is_some_and(|d| d <= now) {
            return Some(Expired::PartialFrame);
        }
        if self.idle_deadline().is_some_and(|d| d <= now) {
            return Some(Expired::Idle);
        }
        if self.release_deadline().is_some_and(|d| d <= now) {
            self.holding = false;
            return Some(Expired::ReleaseBuffers);
        }
        None
    }

    /// [`StreamTimeouts::on_deadline`], and the connection's part of what
    /// passed done on `conn` (if the connection state exists yet): the
    /// partial frame discarded, or its buffers released. The adapter is left
    /// to close the connection or drop its own read buffer.
    pub fn expire(&mut self, now: Instant, conn: Option<&mut Connection>) -> Option<Expired> {
        let expired = self.on_deadline(now)?;
        if let Some(conn) = conn {
            match expired {
                Expired::PartialFrame => conn.discard_partial_frame(),
                Expired::ReleaseBuffers => conn.release_idle_buffers(),
                Expired::Idle => {}
            }
        }
        Some(expired)
    }
}

/// The earlier of two deadlines, either of which may be absent.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What an input did to a connection, as [`StreamTimeouts`] needs it.
#[derive(Debug, Clone, Copy)]
struct InputState {
    /// Bytes buffered before the input.
    before: usize,
    /// Bytes read.
    read: usize,
    /// Answers were queued.
    answered: bool,
    /// A partial frame is buffered after the input.
    partial: bool,
    /// Bytes buffered after the input.
    after: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{DeviceContext, ServerContext};
    use crate::{ConnectionConfig, Engine, Framing, Transport};
    use std::sync::Arc;

    /// `next_deadline` (one addition for idle and release) is the earliest of
    /// the three deadlines, for every combination of settings and state.
    #[test]
    fn the_next_deadline_is_the_earliest_of_the_three() {
        let t0 = Instant::now();
        let durations = [None, Some(MS * 200), Some(MS * 1000), Some(MS * 5000)];
        for partial in durations {
            for idle in durations {
                for release in [MS * 300, MS * 1000, MS * 3000] {
                    for holding in [false, true] {
                        for partial_since in [None, Some(t0 + MS * 50)] {
                            let t = StreamTimeouts {
                                config: StreamTimeoutConfig {
                                    partial_frame: partial,
                                    idle,
                                    release_buffers_after: release,
                                },
                                last_rx: t0 + MS * 100,
                                partial_since,
                                holding,
                            };
                            let want = [t.partial_deadline(), t.idle_deadline(), t.release_deadline()]
                                .into_iter()
                                .flatten()
                                .min();
                            assert_eq!(
                                t.next_deadline(),
                                want,
                                "{partial:?} {idle:?} {release:?} {holding} {partial_since:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_closing_deadline_leaves_the_release_out() {
        let t0 = Instant::now();
        let mut t = StreamTimeouts::new(config(), t0);
        // Idle only (no input yet, so no buffers held).
        assert_eq!(t.next_closing_deadline(), Some(t0 + MS * 10_000));
        // Input that leaves a partial frame: release at +1 s, partial at +0.5 s, idle at +10 s.
        let t1 = t0 + MS * 100;
        t.record_input(t1, input(0, 5, false, 5));
        assert_eq!(t.next_deadline(), Some(t1 + MS * 500));
        assert_eq!(t.next_closing_deadline(), Some(t1 + MS * 500));
        // Whole frames only: the release (+1 s) is next, the closing one is idle (+10 s).
        let t2 = t1 + MS * 100;
        t.record_input(t2, input(5, 7, true, 0));
        assert_eq!(t.next_deadline(), Some(t2 + MS * 1000));
        assert_eq!(t.next_closing_deadline(), Some(t2 + MS * 10_000));
        let none = StreamTimeouts::new(
            StreamTimeoutConfig {
                partial_frame: None,
                idle: None,
                release_buffers_after: MS,
            },
            t0,
        );
        assert_eq!(none.next_closing_deadline(), None);
    }

    const MS: Duration = Duration::from_millis(1);

    fn config() -> StreamTimeoutConfig {
        StreamTimeoutConfig {
            partial_frame: Some(MS * 500),
            idle: Some(MS * 10_000),
            release_buffers_after: MS * 1000,
        }
    }

    /// An input that leaves `after` bytes of a partial frame (or none).
    fn input(before: usize, read: usize, answered: bool, after: usize) -> InputState {
        InputState {
            before,
            read,
            answered,
            partial: after > 0,
            after,
        }
    }

    #[test]
    fn a_new_connection_has_only_the_idle_deadline() {
        let t0 = Instant::now();
        let mut t = StreamTimeouts::new(config(), t0);
        assert_eq!(t.next_deadline(), Some(t0 + MS * 10_000));
        assert_eq!(t.on_deadline(t0 + MS * 9_999), None);
        assert_eq!(t.on_deadline(t0 + MS * 10_000), Some(Expired::Idle));

        let quiet = StreamTimeoutConfig {
            partial_frame: None,
            idle: None,
            release_buffers_after: MS,
        };
        let mut t = StreamTimeouts::new(quiet, t0);
        assert_eq!(t.next_deadline(), None);
        assert_eq!(t.on_deadline(t0 + MS * 1_000_000), None);
    }

    #[test]
    fn deadlines_are_the_minimum_of_partial_idle_and_release() {
        let t0 = Instant::now();
        let mut t = StreamTimeouts::new(config(), t0);
        let t1 = t0 + MS * 100;
        // 3 bytes of a 12-byte MBAP request.
        t.record_input(t1, input(0, 3, false, 3));
        assert_eq!(t.partial_deadline(), Some(t1 + MS * 500));
        assert_eq!(t.idle_deadline(), Some(t1 + MS * 10_000));
        assert_eq!(t.release_deadline(), Some(t1 + MS * 1000));
        assert_eq!(t.next_deadline(), Some(t1 + MS * 500));
        assert_eq!(t.on_deadline(t1 + MS * 499), None);
        assert_eq!(t.on_deadline(t1 + MS * 500), Some(Expired::PartialFrame));
    }

    #[test]
    fn partial_comes_before_idle_and_idle_before_release() {
        let t0 = Instant::now();
        let all_at_once = StreamTimeoutConfig {
            partial_frame: Some(MS * 100),
            idle: Some(MS * 100),
            release_buffers_after: MS * 100,
        };
        let mut t = StreamTimeouts::new(all_at_once, t0);
        t.record_input(t0, input(0, 3, false, 3));
        assert_eq!(t.on_deadline(t0 + MS * 100), Some(Expired::PartialFrame));
        // Without a partial frame: idle wins over release.
        t.record_input(t0, input(3, 9, true, 0));
        assert_eq!(t.on_deadline(t0 + MS * 100), Some(Expired::Idle));
    }

    #[test]
    fn a_growing_partial_frame_keeps_its_start() {
        let t0 = Instant::now();
        let mut t = StreamTimeouts::new(config(), t0);
        t.record_input(t0, input(0, 3, false, 3));
        t.record_input(t0 + MS * 300, input(3, 4, false, 7));
        t.record_input(t0 + MS * 400, input(7, 2, false, 9));
        assert_eq!(t.partial_since, Some(t0));
        assert_eq!(t.next_deadline(), Some(t0 + MS * 500));
        assert_eq!(t.on_deadline(t0 + MS * 500), Some(Expired::PartialFrame));
    }

    #[test]
    fn a_new_partial_frame_after_an_answer_restarts_the_clock() {
        let t0 = Instant::now();
        let mut t = StreamTimeouts::new(config(), t0);
        t.record_input(t0, input(0, 3, false, 3));
        // The rest of the request and 3 bytes of the next: answered, 3 buffered.
        let t1 = t0 + MS * 400;
        t.record_input(t1, input(3, 12, true, 3));
        assert_eq!(t.partial_since, Some(t1));
        assert_eq!(t.next_deadline(), Some(t1 + MS * 500));
        assert_eq!(t.on_deadline(t0 + MS * 500), None);
    }

    #[test]
    fn a_partial_frame_that_shrank_is_new_even_without_an_answer() {
        // A frame was used up without an answer (a broadcast, another unit):
        // fewer bytes buffered than before plus read.
        let t0 = Instant::now();
        let mut t = StreamTimeouts::new(config(), t0);
        t.record_input(t0, input(0, 3, false, 3));
        let t1 = t0 + MS * 200;
        t.record_input(t1, input(3, 12, false, 3));
        assert_eq!(t.partial_since, Some(t1));
    }

    #[test]
    fn a_complete_frame_clears_the_partial_deadline() {
        let t0 = Instant::now();
        let mut t = StreamTimeouts::new(config(), t0);
        t.record_input(t0, input(0, 3, false, 3));
        let t1 = t0 + MS * 100;
        t.record_input(t1, input(3, 9, true, 0));
        assert_eq!(t.partial_since, None);
        assert_eq!(t.partial_deadline(), None);
        assert_eq!(t.next_deadline(), Some(t1 + MS * 1000));
    }

    #[test]
    fn release_only_while_holding() {
        let t0 = Instant::now();
        let mut t = StreamTimeouts::new(config(), t0);
        assert_eq!(t.release_deadline(), None);
        let t1 = t0 + MS * 50;
        t.record_input(t1, input(0, 12, true, 0));
        assert_eq!(t.next_deadline(), Some(t1 + MS * 1000));
        assert_eq!(t.on_deadline(t1 + MS * 999), None);
        assert_eq!(t.on_deadline(t1 + MS * 1000), Some(Expired::ReleaseBuffers));
        // Released: no release deadline until the next input, only idle.
        assert_eq!(t.on_deadline(t1 + MS * 1001), None);
        assert_eq!(t.next_deadline(), Some(t1 + MS * 10_000));
        let t2 = t1 + MS * 3000;
        t.record_input(t2, input(0, 12, true, 0));
        assert_eq!(t.next_deadline(), Some(t2 + MS * 1000));
    }

    #[test]
    fn idle_moves_with_input() {
        let t0 = Instant::now();
        let mut t = StreamTimeouts::new(config(), t0);
        assert_eq!(t.idle_deadline(), Some(t0 + MS * 10_000));
        let t1 = t0 + MS * 9_000;
        t.record_input(t1, input(0, 12, true, 0));
        assert_eq!(t.idle_deadline(), Some(t1 + MS * 10_000));
        assert_eq!(t.on_deadline(t1 + MS * 1000), Some(Expired::ReleaseBuffers));
        assert_eq!(t.on_deadline(t0 + MS * 10_000), None);
        assert_eq!(t.on_deadline(t1 + MS * 10_000), Some(Expired::Idle));
    }

    #[test]
    fn deadlines_past_the_end_of_time_are_never_reached() {
        let t0 = Instant::now();
        let forever = StreamTimeoutConfig {
            partial_frame: Some(Duration::MAX),
            idle: Some(Duration::MAX),
            release_buffers_after: Duration::MAX,
        };
        let mut t = StreamTimeouts::new(forever, t0);
        t.record_input(t0, input(0, 3, false, 3));
        assert_eq!(t.next_deadline(), None);
        assert_eq!(t.on_deadline(t0 + MS * 1_000_000), None);
    }

    #[test]
    fn on_input_reads_the_connection() {
        let device = DeviceContext::with_sizes(10, 10, 10, 10).expect("device");
        let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
        let mut conn = Connection::new(engine, ConnectionConfig::stream(Framing::Mbap, Transport::Tcp, None));
        // FC3, unit 1, read 2 holding registers from 0 (MBAP, 12 bytes).
        let request = [0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x00, 0x00, 0x00, 0x02];
        let t0 = Instant::now();
        let mut t = StreamTimeouts::new(config(), t0);

        let (head, rest) = request.split_at(5);
        let before = conn.buffered_len();
        conn.handle_input(t0, head).expect("input");
        t.on_input(t0, &conn, before, head.len());
        assert_eq!(t.partial_since, Some(t0));

        // The rest of the request and the first 5 bytes of the next one.
        let t1 = t0 + MS * 100;
        let mut more = rest.to_vec();
        more.extend_from_slice(head);
        let before = conn.buffered_len();
        conn.handle_input(t1, &more).expect("input");
        assert!(conn.has_output());
        t.on_input(t1, &conn, before, more.len());
        assert_eq!(t.partial_since, Some(t1));
        assert_eq!(t.next_deadline(), Some(t1 + MS * 500));

        // `expire` does the connection's part: the partial frame is dropped...
        let n = conn.output().len();
        conn.consume_output(n);
        assert_eq!(t.expire(t1 + MS * 499, Some(&mut conn)), None);
        assert!(conn.has_partial_frame());
        assert_eq!(t.expire(t1 + MS * 500, Some(&mut conn)), Some(Expired::PartialFrame));
        assert!(!conn.has_partial_frame());
        assert_eq!(conn.buffered_len(), 0);
        // ...and with no connection state yet, only the verdict comes back.
        let mut idle = StreamTimeouts::new(config(), t0);
        assert_eq!(idle.expire(t0 + MS * 10_000, None), Some(Expired::Idle));
    }
}
