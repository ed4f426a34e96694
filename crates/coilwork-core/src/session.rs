//! The whole life of one connection (or one datagram socket, or one serial
//! line), sans-IO: framing, execution, every deadline, delivery pauses, the
//! drain on stop, eviction, close reasons and counters.
//!
//! # The adapter contract
//!
//! A [`Session`] has one way in, [`Session::handle`], and one way out,
//! [`Session::poll`]. An adapter owns the socket (or line) and the clock and
//! runs this loop, nothing more:
//!
//! ```text
//! loop {
//!     match session.poll(now()) {
//!         Output::Transmit(bytes)  => { write bytes; session.handle(now(), Input::Sent(n)) }
//!         Output::ReleaseBuffers   => drop the adapter's own read buffer (allocate it again on the next read)
//!         Output::Discarded        => nothing to do (a datagram or garbled serial input was dropped; counted)
//!         Output::ReadQueued       => read what is already received, without waiting:
//!                                     Input::Bytes(..) if any, else Input::Eof
//!         Output::Wait(deadline)   => read (or receive) until input arrives or `deadline` passes:
//!                                     Input::Bytes / Input::Datagram / Input::Eof, or Input::Timeout
//!                                     (a deadline already passed: take input already there first)
//!         Output::Pause(until)     => a hook's delivery pause: sleep until then without reading,
//!                                     cut short by Input::Stop or Input::Evict
//!         Output::Close(reason)    => close the socket and stop (every later poll says the same)
//!     }
//! }
//! ```
//!
//! From outside the loop, a server raises [`Input::Stop`] (answer what
//! already arrived, then close) or [`Input::Evict`] (close now); an I/O error
//! is [`Input::Failed`]. The session decides everything else: when a partial
//! frame, an idle connection or a buffer release is due, what a hook's
//! [`Delivery`](crate::Delivery) pause means under a stop (skipped) or an
//! eviction (the rest dropped), how many reads a drain may take
//! ([`SessionConfig::drain_reads`]), which close is counted where
//! ([`ServerStats`]). An adapter never parses a frame, knows a function code
//! or decides a policy. Input comes before time: what was read before a
//! passed deadline was acted on is served (and moves the deadlines), and a
//! late [`Input::Timeout`] acts on every deadline passed by its `now`. While
//! answers are pending (a hook's pause) no deadline cuts them.
//!
//! Where this loop lives: the async adapters (tokio, async-std/smol) do not
//! write it themselves; `coilwork-driver` runs it once for both (the accept
//! loop, each connection, UDP and serial), generic over a small seam of
//! streams, timers and task sets that each adapter implements.
//! `coilwork-blocking` runs it on threads. A new adapter for another async
//! runtime implements `coilwork_driver::seam` and binds sockets; nothing more.
//!
//! Three kinds ([`SessionKind`]): a byte stream (TCP, TLS, RTU/ASCII over
//! TCP) closes on a fatal frame error, a partial-frame or idle timeout; a
//! serial line never closes itself (a bad frame is dropped, RTU's t3.5
//! silence ends a partial frame); a datagram socket takes one ADU per
//! datagram and sends each answer (each piece, with pauses) to its sender.

use crate::connection::{Connection, ConnectionConfig};
use crate::engine::Engine;
use crate::frame::Framing;
use crate::frame::rtu::RtuTiming;
use crate::metrics::{DropReason, Tally};
use crate::options::{MAX_DATAGRAM, allowed};
use crate::server::ServerStats;
use crate::storage::Transport;
use crate::timeouts::{Expired, StreamTimeoutConfig, StreamTimeouts};
use core::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default bound on the reads of a drain on stop.
pub const DEFAULT_DRAIN_READS: u16 = 64;

/// What a session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A byte stream: TCP, TLS, RTU or ASCII over TCP.
    Stream,
    /// A serial line: never closed by the session, bad input dropped.
    Line,
    /// A datagram socket (UDP): one ADU per datagram.
    Datagram,
}

/// Why a session closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCause {
    /// The peer closed its side.
    PeerClosed,
    /// The server stopped (what had arrived was answered).
    Stopped,
    /// The server evicted the connection.
    Evicted,
    /// The stream can never be valid again (counted in [`ServerStats::bad_frames`]).
    BadFrame,
    /// A partial frame waited too long (counted in [`ServerStats::partial_timeouts`]).
    PartialTimeout,
    /// Nothing arrived for too long (counted in [`ServerStats::idle_timeouts`]).
    IdleTimeout,
    /// Reading or writing failed.
    IoError,
}

/// One server's settings for all of its sessions: shared in one [`Arc`], so
/// a session stays small.
#[derive(Debug)]
pub struct SessionConfig {
    /// The engine every session feeds.
    pub engine: Arc<Engine>,
    /// Stream, line or datagram.
    pub kind: SessionKind,
    /// Frame format.
    pub framing: Framing,
    /// Transport (passed on to storage and hooks).
    pub transport: Transport,
    /// Partial-frame, idle and buffer-release deadlines.
    pub timeouts: StreamTimeoutConfig,
    /// Cap on unframed bytes held.
    pub max_buffered: usize,
    /// On a real serial line: the RTU silences.
    pub rtu_timing: Option<RtuTiming>,
    /// 2-wire RS-485: drop the line's echo of what was sent.
    pub local_echo: bool,
    /// Most reads a drain on stop may take.
    pub drain_reads: u16,
    /// Datagram sockets: if set, only datagrams from these IPs are served
    /// (others are counted as refused and dropped).
    pub allow_list: Option<Vec<IpAddr>>,
    /// The server's counters.
    pub stats: Arc<ServerStats>,
}

impl SessionConfig {
    /// Settings of `kind` for `framing` on `transport` with the defaults:
    /// partial frame 5 s, no idle timeout, buffers released after 1 s
    /// (never on a line or a datagram socket).
    pub fn new(engine: Arc<Engine>, kind: SessionKind, framing: Framing, transport: Transport) -> Self {
        let stream = kind == SessionKind::Stream;
        Self {
            engine,
            kind,
            framing,
            transport,
            timeouts: StreamTimeoutConfig {
                partial_frame: stream.then_some(Duration::from_secs(5)),
                idle: None,
                release_buffers_after: if stream { Duration::from_secs(1) } else { Duration::MAX },
            },
            max_buffered: crate::connection::DEFAULT_MAX_BUFFERED,
            rtu_timing: None,
            local_echo: false,
            drain_reads: DEFAULT_DRAIN_READS,
            allow_list: None,
            stats: Arc::new(ServerStats::default()),
        }
    }

    /// A serial line's settings: `framing` (RTU or ASCII) at `baud_rate`
    /// with `bits_per_char` bits per character (RTU: the t1.5/t3.5 silences).
    pub fn serial(engine: Arc<Engine>, framing: Framing, baud_rate: u32, bits_per_char: u32) -> Self {
        Self {
            rtu_timing: (framing == Framing::Rtu).then(|| RtuTiming::new(baud_rate, bits_per_char)),
            ..Self::new(engine, SessionKind::Line, framing, Transport::Serial)
        }
    }

    /// The connection settings of one session from `peer`.
    fn connection(&self, peer: Option<SocketAddr>, tls_role: Option<String>) -> ConnectionConfig {
        ConnectionConfig {
            framing: self.framing,
            transport: self.transport,
            peer,
            tls_role,
            rtu_timing: self.rtu_timing,
            local_echo: self.local_echo,
            max_buffered: self.max_buffered,
        }
    }
}

/// What happened, fed to [`Session::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// Bytes read from a stream or a line.
    Bytes(&'a [u8]),
    /// One datagram, from `from`.
    Datagram {
        /// Its bytes.
        bytes: &'a [u8],
        /// Its sender.
        from: Option<SocketAddr>,
    },
    /// `n` bytes of the last [`Output::Transmit`] were written.
    Sent(usize),
    /// The wait of an [`Output::Wait`] ended with no input.
    Timeout,
    /// End of stream (or, after [`Output::ReadQueued`], nothing queued).
    Eof,
    /// The server stops: answer what already arrived, then close.
    Stop,
    /// The server evicts this connection: close now.
    Evict,
    /// Reading or writing failed.
    Failed,
}

/// What the adapter must do next, from [`Session::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output<'a> {
    /// Write these bytes (a datagram: send them as one, to the last sender),
    /// then report [`Input::Sent`].
    Transmit(&'a [u8]),
    /// Free the adapter's read buffer: the connection is quiet.
    ReleaseBuffers,
    /// Input was dropped (a malformed datagram, garbled serial input).
    Discarded,
    /// Stopping: read only what is already received, without waiting.
    ReadQueued,
    /// Wait for input until the deadline (`None`: no deadline).
    Wait(Option<Instant>),
    /// A hook's delivery pause: read nothing until then, then poll again.
    /// A stop or an eviction raised meanwhile ends it at once.
    Pause(Instant),
    /// Close; final.
    Close(CloseCause),
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving.
    Open,
    /// Stopping: reading what is queued, at most this many reads more.
    Draining(u16),
    /// Writing what is left, then closing for this cause.
    Closing(CloseCause),
    /// Closed.
    Closed(CloseCause),
}

/// The whole life of one connection, datagram socket or serial line.
pub struct Session {
    shared: Arc<SessionConfig>,
    /// Spreads the byte counters over their shards.
    id: u64,
    /// Made on the first input: a client that connects and stays silent
    /// costs no connection state.
    conn: Option<Box<Connection>>,
    /// Who is on the other end, until the connection is made.
    peer: Option<SocketAddr>,
    tls_role: Option<String>,
    timeouts: StreamTimeouts,
    phase: Phase,
    /// The end of the delivery pause before the next piece of output, once started.
    pause_until: Option<Instant>,
    release: bool,
    discarded: bool,
    /// The close was counted (and the metrics folded in).
    reported: bool,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("kind", &self.shared.kind)
            .field("phase", &self.phase)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Session `id` (any number; it spreads the byte counters), opened at
    /// `now` with the client at `peer` (TLS: its role).
    pub fn new(
        shared: Arc<SessionConfig>,
        now: Instant,
        id: u64,
        peer: Option<SocketAddr>,
        tls_role: Option<String>,
    ) -> Self {
        let timeouts = StreamTimeouts::new(shared.timeouts, now);
        Self {
            shared,
            id,
            conn: None,
            peer,
            tls_role,
            timeouts,
            phase: Phase::Open,
            pause_until: None,
            release: false,
            discarded: false,
            reported: false,
        }
    }

    /// The shared settings.
    pub fn config(&self) -> &Arc<SessionConfig> {
        &self.shared
    }

    /// Where [`Output::Transmit`] goes on a datagram socket: the last sender.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.conn.as_ref().map_or(self.peer, |c| c.config().peer)
    }

    /// The cause, once the session is closed or closing.
    pub fn close_cause(&self) -> Option<CloseCause> {
        match self.phase {
            Phase::Closing(c) | Phase::Closed(c) => Some(c),
            Phase::Open | Phase::Draining(_) => None,
        }
    }

    /// True once [`Output::Close`] is all that is left.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed(_))
    }

    /// Takes in what happened at `now`.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) {
        if self.is_closed() {
            return;
        }
        match input {
            Input::Bytes(bytes) => self.on_bytes(now, bytes),
            Input::Datagram { bytes, from } => self.on_datagram(now, bytes, from),
            Input::Sent(n) => self.on_sent(now, n),
            Input::Timeout => self.expire_passed(now),
            Input::Eof => self.on_eof(),
            Input::Stop => self.on_stop(),
            Input::Evict => self.phase = Phase::Closed(CloseCause::Evicted),
            Input::Failed => self.phase = Phase::Closed(CloseCause::IoError),
        }
    }

    /// What to do next at `now`.
    pub fn poll(&mut self, now: Instant) -> Output<'_> {
        if let Phase::Closed(cause) = self.phase {
            self.report_close(cause);
            return Output::Close(cause);
        }
        if core::mem::take(&mut self.release) {
            return Output::ReleaseBuffers;
        }
        if core::mem::take(&mut self.discarded) {
            return Output::Discarded;
        }
        if self.has_output() {
            return self.transmit(now);
        }
        match self.phase {
            Phase::Open => Output::Wait(self.next_deadline()),
            Phase::Draining(0) => self.close(CloseCause::Stopped),
            Phase::Draining(_) => Output::ReadQueued,
            Phase::Closing(cause) | Phase::Closed(cause) => self.close(cause),
        }
    }

    /// The earliest deadline at which [`Input::Timeout`] is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Open {
            return None;
        }
        let silence = self.conn.as_ref().and_then(|c| c.poll_timeout());
        earliest(self.timeouts.next_deadline(), silence)
    }

    /// The earliest deadline that closes the session (partial frame, idle),
    /// leaving out buffer releases and line silences: for an adapter that is
    /// woken from outside only to close.
    pub fn next_closing_deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Open || self.shared.kind != SessionKind::Stream {
            return None;
        }
        self.timeouts.next_closing_deadline()
    }

    /// The connection, made on first use (with a metrics tally if the
    /// engine has metrics).
    fn connection(&mut self) -> &mut Connection {
        let (shared, peer, role, id) = (&self.shared, self.peer, &mut self.tls_role, self.id);
        self.conn.get_or_insert_with(|| {
            let mut conn = Connection::new(Arc::clone(&shared.engine), shared.connection(peer, role.take()));
            if let Some(metrics) = shared.engine.metrics() {
                conn.set_tally(Tally::new(Arc::clone(metrics), id));
            }
            Box::new(conn)
        })
    }

    /// The connection's metrics tally, if there are both.
    fn tally(&mut self) -> Option<&mut Tally> {
        self.conn.as_deref_mut().and_then(Connection::tally_mut)
    }

    /// Folds the tally in if due: a stream at most once a second; a line or
    /// a datagram socket (one session each, no contention) at once.
    fn fold_metrics(&mut self, now: Instant) {
        let stream = self.shared.kind == SessionKind::Stream;
        if let Some(tally) = self.tally() {
            if stream {
                tally.fold_if_due(now);
            } else {
                tally.fold();
            }
        }
    }

    /// Counts the close once (streams) and folds the metrics in.
    fn report_close(&mut self, cause: CloseCause) {
        if core::mem::replace(&mut self.reported, true) {
            return;
        }
        if self.shared.kind == SessionKind::Stream {
            self.shared.stats.count_close(cause);
        }
        if let Some(tally) = self.tally() {
            tally.fold();
        }
    }

    fn has_output(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.has_output())
    }

    fn close(&mut self, cause: CloseCause) -> Output<'static> {
        self.phase = Phase::Closed(cause);
        self.report_close(cause);
        Output::Close(cause)
    }

    /// Pauses are made only while open; stopping, the rest goes out at once.
    fn transmit(&mut self, now: Instant) -> Output<'_> {
        let pause = self.conn.as_ref().map_or(Duration::ZERO, |c| c.next_output().0);
        if pause.is_zero() || !matches!(self.phase, Phase::Open) {
            self.pause_until = None;
            return Output::Transmit(self.output_piece(pause.is_zero()));
        }
        let until = *self
            .pause_until
            .get_or_insert_with(|| now.checked_add(pause).unwrap_or(now));
        if now >= until {
            return Output::Transmit(self.output_piece(true));
        }
        Output::Pause(until)
    }

    /// The next piece (honouring the cuts) or everything left.
    fn output_piece(&self, piece: bool) -> &[u8] {
        match &self.conn {
            Some(c) if piece => c.next_output().1,
            Some(c) => c.output(),
            None => &[],
        }
    }

    /// Acts on every deadline passed by `now` (a timer that fired late loses
    /// nothing). Each expiry moves a deadline; bounded all the same.
    fn expire_passed(&mut self, now: Instant) {
        if self.has_output() {
            // Answers still going out (a hook's pause): not idle, and
            // nothing is cut before they are written.
            return;
        }
        for _ in 0..4 {
            if self.next_deadline().is_none_or(|d| d > now) {
                break;
            }
            self.on_timeout(now);
        }
    }

    fn on_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if let Phase::Closing(_) = self.phase {
            return;
        }
        // Input read before a passed deadline was acted on is served: the
        // deadlines then count from it (a late timer closes nothing).
        self.shared.stats.count_in(self.id, bytes.len());
        self.connection();
        let Some(conn) = self.conn.as_deref_mut() else { return };
        if let Some(tally) = conn.tally_mut() {
            tally.input(now);
        }
        let before = conn.buffered_len();
        let result = conn.handle_input(now, bytes);
        if let (Err(e), Some(tally)) = (&result, conn.tally_mut()) {
            tally.dropped(DropReason::of_connection(e));
        }
        let answering = conn.has_output();
        self.timeouts.on_input(now, conn, before, bytes.len());
        if !answering {
            // With answers queued, the fold waits for them to be written
            // (their latency is known then).
            self.fold_metrics(now);
        }
        if let Phase::Draining(left) = self.phase {
            self.phase = Phase::Draining(left.saturating_sub(1));
        }
        if result.is_err() {
            if let Phase::Draining(_) = self.phase {
                // Stopping anyway: the drain ends, the answers so far go out.
                self.phase = Phase::Closing(CloseCause::Stopped);
            } else if self.shared.kind == SessionKind::Line {
                self.connection().discard_partial_frame();
                self.discarded = true;
            } else {
                self.shared.stats.count_bad_frame();
                self.phase = Phase::Closing(CloseCause::BadFrame);
            }
        }
    }

    fn on_datagram(&mut self, now: Instant, bytes: &[u8], from: Option<SocketAddr>) {
        if !matches!(self.phase, Phase::Open | Phase::Draining(_)) {
            return;
        }
        let stats = &self.shared.stats;
        stats.count_received();
        if from.is_some_and(|f| !allowed(self.shared.allow_list.as_deref(), f.ip())) {
            stats.count_refused();
            self.discarded = true;
            return;
        }
        if bytes.len() > MAX_DATAGRAM {
            // No Modbus ADU is this long (an ASCII one is at most 513 bytes).
            stats.count_malformed();
            self.discarded = true;
            if let Some(tally) = self.connection().tally_mut() {
                tally.dropped(DropReason::Oversize);
            }
            self.fold_metrics(now);
            return;
        }
        stats.count_in(self.id, bytes.len());
        let conn = self.connection();
        conn.set_peer(from);
        if let Some(tally) = conn.tally_mut() {
            tally.input(now);
        }
        if let Err(e) = conn.handle_datagram(bytes) {
            if let Some(tally) = conn.tally_mut() {
                tally.dropped(DropReason::of_frame(&e));
            }
            self.shared.stats.count_malformed();
            self.discarded = true;
        }
        self.fold_metrics(now);
    }

    fn on_sent(&mut self, now: Instant, n: usize) {
        if n == 0 {
            return;
        }
        self.pause_until = None;
        self.shared.stats.count_out(self.id, n);
        if let Some(c) = &mut self.conn {
            c.consume_output(n);
            if !c.has_output()
                && let Some(tally) = c.tally_mut()
            {
                tally.sent(now);
                self.fold_metrics(now);
            }
        }
        if self.shared.kind == SessionKind::Datagram && !self.has_output() {
            self.shared.stats.count_answered();
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Open {
            return;
        }
        if let Some(c) = &mut self.conn {
            c.handle_timeout(now);
        }
        match self.timeouts.expire(now, self.conn.as_deref_mut()) {
            Some(Expired::PartialFrame) => {
                if let Some(tally) = self.tally() {
                    tally.dropped(DropReason::Timeout);
                }
                self.shared.stats.count_partial_timeout();
                self.phase = Phase::Closed(CloseCause::PartialTimeout);
            }
            Some(Expired::Idle) => {
                self.shared.stats.count_idle_timeout();
                self.phase = Phase::Closed(CloseCause::IdleTimeout);
            }
            Some(Expired::ReleaseBuffers) => {
                // Quiet: a good moment to fold the metrics in.
                if let Some(tally) = self.tally() {
                    tally.fold();
                }
                self.release = true;
            }
            None => {}
        }
    }

    fn on_eof(&mut self) {
        self.phase = match self.phase {
            Phase::Draining(_) => Phase::Closing(CloseCause::Stopped),
            Phase::Open => Phase::Closing(CloseCause::PeerClosed),
            other => other,
        };
    }

    fn on_stop(&mut self) {
        if self.phase == Phase::Open {
            self.phase = match self.shared.kind {
                SessionKind::Stream => Phase::Draining(self.shared.drain_reads),
                SessionKind::Line | SessionKind::Datagram => Phase::Closing(CloseCause::Stopped),
            };
        }
    }
}

/// The earlier of two deadlines, either of which may be absent.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
