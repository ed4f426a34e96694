//! The per-connection state machine an adapter drives.
//!
//! ```text
//! adapter                              Connection
//!   read bytes ──── handle_input(now, bytes) ──▶ frames, executes, queues answers
//!   write   ◀─────── output() / consume_output(n)
//!   timer   ──── poll_timeout() / handle_timeout(now) (RTU t3.5 silence)
//! ```
//!
//! Bytes may arrive split anywhere: a partial frame waits for the rest, and
//! several frames in one push are all answered, in order. The connection
//! reads no clock: time is an argument. Steady state allocates nothing: the
//! receive and transmit buffers keep their capacity between requests.

use crate::engine::{Delivery, Effect, Engine, Observation};
use crate::error::{ConnectionError, FrameError};
use crate::frame::rtu::RtuTiming;
use crate::frame::{Decoded, Framing, MAX_COUNTED_RTU_ADU, ascii, mbap, rtu};
use crate::metrics::{DropReason, Tally};
use crate::pdu::PduBuf;
use crate::storage::server::DeviceCache;
use crate::storage::{RequestContext, Transport};
use core::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default cap on bytes held while waiting for the rest of a frame.
pub const DEFAULT_MAX_BUFFERED: usize = 4096;

/// How a connection frames and who is on the other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Frame format.
    pub framing: Framing,
    /// Transport (decides per-transport defaults such as serial unit filtering).
    pub transport: Transport,
    /// The client's address, if the transport has one.
    pub peer: Option<SocketAddr>,
    /// Role from the client's TLS certificate (Modbus/TCP Security).
    pub tls_role: Option<String>,
    /// On a real serial line: the RTU silences. A partial frame followed by
    /// t3.5 of silence is discarded. `None` on streams without timing (RTU
    /// over TCP), where frames are found by length rules and CRC alone.
    pub rtu_timing: Option<RtuTiming>,
    /// 2-wire RS-485: the line echoes what we send; drop that echo.
    pub local_echo: bool,
    /// Cap on unframed bytes held; past it the connection must be closed.
    pub max_buffered: usize,
}

impl ConnectionConfig {
    /// MBAP over TCP from `peer`.
    pub fn tcp(peer: Option<SocketAddr>) -> Self {
        Self::stream(Framing::Mbap, Transport::Tcp, peer)
    }

    /// `framing` over a stream `transport` from `peer`, no line timing.
    pub fn stream(framing: Framing, transport: Transport, peer: Option<SocketAddr>) -> Self {
        Self {
            framing,
            transport,
            peer,
            tls_role: None,
            rtu_timing: None,
            local_echo: false,
            max_buffered: DEFAULT_MAX_BUFFERED,
        }
    }

    /// `framing` (RTU or ASCII) on a serial line at `baud_rate` with
    /// `bits_per_char` bits per character (start + data + parity + stop).
    pub fn serial(framing: Framing, baud_rate: u32, bits_per_char: u32) -> Self {
        Self {
            rtu_timing: (framing == Framing::Rtu).then(|| RtuTiming::new(baud_rate, bits_per_char)),
            ..Self::stream(framing, Transport::Serial, None)
        }
    }
}

/// One connection (or one serial line) to the engine.
pub struct Connection {
    engine: Arc<Engine>,
    config: ConnectionConfig,
    rx: Vec<u8>,
    tx: Vec<u8>,
    tx_sent: usize,
    /// Pauses in the output: (offset in `tx`, pause before that byte). Empty
    /// (no allocation) unless a hook asked for a [`Delivery`].
    marks: Vec<(usize, Duration)>,
    echo: Vec<u8>,
    pdu: PduBuf,
    scratch: [u8; MAX_COUNTED_RTU_ADU],
    delimiter: u8,
    last_rx: Option<Instant>,
    devices: DeviceCache,
    /// The observations of the input being handled, handed to the engine's
    /// observer once at its end (empty between inputs; keeps its capacity).
    observed: Vec<Observation>,
    /// Local metric counts, when the engine has metrics.
    tally: Option<Box<Tally>>,
}

impl core::fmt::Debug for Connection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection")
            .field("config", &self.config)
            .field("buffered", &self.rx.len())
            .field("pending_output", &self.output().len())
            .finish_non_exhaustive()
    }
}

#[allow(clippy::too_many_arguments)]
fn execute(
    engine: &Engine,
    config: &ConnectionConfig,
    ctx: &mut RequestContext<'_>,
    tx: &mut Vec<u8>,
    marks: &mut Vec<(usize, Duration)>,
    pdu_buf: &mut PduBuf,
    delimiter: &mut u8,
    devices: &mut DeviceCache,
    observed: &mut Vec<Observation>,
    tally: Option<&mut Tally>,
    unit: u8,
    transaction_id: u16,
    pdu: &[u8],
) {
    ctx.unit = unit;
    ctx.function = pdu.first().copied().unwrap_or(0) & 0x7F;
    // `handle_cached` empties `pdu_buf` first.
    let outcome = engine.handle_cached(ctx, pdu, pdu_buf, devices, Some(observed));
    if let Some(tally) = tally {
        let answered = outcome.respond && !pdu_buf.is_empty();
        let exception = answered && pdu_buf.as_slice().first().is_some_and(|f| f & 0x80 != 0);
        tally.request(unit, ctx.function, answered, exception);
    }
    if outcome.respond && !pdu_buf.is_empty() {
        let start = tx.len();
        // MBAP and RTU frame in place around the PDU: one copy into `tx`.
        match config.framing {
            Framing::Mbap => tx.extend_from_slice(pdu_buf.mbap_adu(transaction_id, unit)),
            Framing::Rtu => tx.extend_from_slice(pdu_buf.rtu_adu(unit)),
            Framing::Ascii => ascii::encode(unit, pdu_buf.as_slice(), *delimiter, tx),
        }
        if let Some(delivery) = outcome.delivery {
            apply_delivery(config.framing, *delivery, tx, start, marks);
        }
    }
    match outcome.effect {
        Some(Effect::SetAsciiDelimiter(d)) => *delimiter = d,
        Some(Effect::RestartCommunications) | None => {}
    }
}

/// Records the pauses of `delivery` for the frame at `tx[start..]` and
/// garbles it if asked.
fn apply_delivery(
    framing: Framing,
    delivery: Delivery,
    tx: &mut [u8],
    start: usize,
    marks: &mut Vec<(usize, Duration)>,
) {
    let end = tx.len();
    if delivery.garble {
        let frame = tx.get_mut(start..).unwrap_or(&mut []);
        let len = frame.len();
        match framing {
            // Protocol identifier (bytes 2..4) made non-zero.
            Framing::Mbap => frame.iter_mut().skip(2).take(2).for_each(|b| *b ^= 0xFF),
            // Both CRC bytes inverted.
            Framing::Rtu => frame.iter_mut().skip(len.saturating_sub(2)).for_each(|b| *b ^= 0xFF),
            // The LRC's second hex digit (before the two-byte end) changed to another hex digit.
            Framing::Ascii => {
                if let Some(b) = len.checked_sub(3).and_then(|i| frame.get_mut(i)) {
                    *b = if *b == b'0' { b'1' } else { b'0' };
                }
            }
        }
    }
    if !delivery.delay.is_zero() {
        marks.push((start, delivery.delay));
    }
    if let Some((at, pause)) = delivery.split {
        // ok: `at` is clamped to the frame, so the offset stays within `tx`.
        let offset = start.saturating_add(usize::from(at)).min(end);
        if offset > start && offset < end {
            marks.push((offset, pause));
        }
    }
}

impl Connection {
    /// A connection to `engine` framed as `config` says.
    pub fn new(engine: Arc<Engine>, config: ConnectionConfig) -> Self {
        Self {
            engine,
            config,
            rx: Vec::new(),
            tx: Vec::new(),
            tx_sent: 0,
            marks: Vec::new(),
            echo: Vec::new(),
            pdu: PduBuf::new(),
            scratch: [0; MAX_COUNTED_RTU_ADU],
            delimiter: ascii::DEFAULT_DELIMITER,
            last_rx: None,
            devices: DeviceCache::default(),
            observed: Vec::new(),
            tally: None,
        }
    }

    /// Counts this connection's requests, answers and dropped frames in `tally`.
    pub fn set_tally(&mut self, tally: Tally) {
        self.tally = Some(Box::new(tally));
    }

    /// The local metric counts, if any.
    pub fn tally_mut(&mut self) -> Option<&mut Tally> {
        self.tally.as_deref_mut()
    }

    /// The engine this connection feeds.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The configuration.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// Sets the peer address (for a UDP socket whose datagrams come from many peers).
    pub fn set_peer(&mut self, peer: Option<SocketAddr>) {
        self.config.peer = peer;
    }

    /// Frames and answers everything complete at the front of `buf`
    /// (never `self.rx` itself: the caller moves it out first); returns how
    /// many bytes were used. `single`: at most one frame. The observer (if
    /// any) is told about the input's requests at the end.
    fn process(&mut self, buf: &[u8], single: bool) -> Result<usize, ConnectionError> {
        let mut pos = 0;
        // Built once per input; each request sets its unit and function.
        let mut ctx = RequestContext {
            unit: 0,
            function: 0,
            transport: self.config.transport,
            peer: self.config.peer,
            tls_role: self.config.tls_role.as_deref(),
            // Set by `handle_input` (never for datagrams, which come with no time).
            received: self.last_rx,
        };
        let done = loop {
            let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) else {
                break Ok(());
            };
            let decoded = match self.config.framing {
                Framing::Mbap => mbap::decode(rest),
                Framing::Rtu => {
                    let engine = &self.engine;
                    rtu::decode(rest, &|pdu| engine.custom_pdu_length(pdu))
                }
                Framing::Ascii => ascii::decode(rest, self.delimiter, &mut self.scratch[..]),
            };
            match decoded {
                Decoded::Frame {
                    consumed,
                    unit,
                    transaction_id,
                    pdu,
                } => {
                    // ASCII decodes into the scratch; the others borrow `rest`.
                    let source: &[u8] = if self.config.framing == Framing::Ascii {
                        &self.scratch[..]
                    } else {
                        rest
                    };
                    let Some(pdu) = source.get(pdu) else {
                        break Err(FrameError::EmptyPdu.into());
                    };
                    execute(
                        &self.engine,
                        &self.config,
                        &mut ctx,
                        &mut self.tx,
                        &mut self.marks,
                        &mut self.pdu,
                        &mut self.delimiter,
                        &mut self.devices,
                        &mut self.observed,
                        self.tally.as_deref_mut(),
                        unit,
                        transaction_id,
                        pdu,
                    );
                    pos += consumed.max(1);
                    if single {
                        break Ok(());
                    }
                }
                Decoded::Incomplete => break Ok(()),
                Decoded::Skip { consumed, error } => {
                    self.engine.note_frame_error(&error);
                    if let Some(tally) = self.tally.as_deref_mut() {
                        tally.dropped(DropReason::of_frame(&error));
                    }
                    pos += consumed.max(1);
                }
                Decoded::Fatal(e) => break Err(e.into()),
            }
        };
        // Told even when the input ends in an error: those requests were answered.
        self.engine.flush_observed(&ctx, &mut self.observed);
        done.map(|()| pos.min(buf.len()))
    }

    /// Drops the start of `bytes` that is the line's echo of what we sent.
    fn strip_echo<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        if self.echo.is_empty() {
            return bytes;
        }
        let n = self.echo.iter().zip(bytes).take_while(|(a, b)| a == b).count();
        if n == bytes.len().min(self.echo.len()) {
            self.echo.drain(..n);
            bytes.get(n..).unwrap_or(&[])
        } else {
            // Not our echo after all: stop expecting it and treat it as input.
            self.echo.clear();
            bytes
        }
    }

    fn flush_silence(&mut self, now: Instant) {
        if let (Some(timing), Some(last)) = (self.config.rtu_timing, self.last_rx)
            && !self.rx.is_empty()
            && now.saturating_duration_since(last) >= timing.t3_5
        {
            self.engine.note_frame_error(&FrameError::Truncated(self.rx.len()));
            if let Some(tally) = self.tally.as_deref_mut() {
                tally.dropped(DropReason::Timeout);
            }
            self.rx.clear();
        }
    }

    /// Feeds bytes received at `now`. Every complete frame is executed and its
    /// answer queued in [`Connection::output`]. An error means the stream can
    /// never be valid again: write what [`Connection::output`] holds (the
    /// answers to the frames before the bad one), then close the connection.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ConnectionError> {
        let bytes = if self.config.local_echo {
            self.strip_echo(bytes)
        } else {
            bytes
        };
        if bytes.is_empty() {
            return Ok(());
        }
        self.flush_silence(now);
        self.last_rx = Some(now);
        let max = self.config.max_buffered;
        if self.rx.is_empty() {
            let used = self.process(bytes, false)?;
            let rest = bytes.get(used..).unwrap_or(&[]);
            if rest.len() > max {
                return Err(ConnectionError::BufferFull(max));
            }
            if !rest.is_empty() {
                self.rx.extend_from_slice(rest);
            }
        } else {
            // Moved out while its frames are answered (keeps its capacity).
            let mut rx = core::mem::take(&mut self.rx);
            rx.extend_from_slice(bytes);
            let used = self.process(&rx, false);
            if let Ok(used) = used {
                rx.drain(..used);
            }
            self.rx = rx;
            used?;
            if self.rx.len() > max {
                return Err(ConnectionError::BufferFull(max));
            }
        }
        Ok(())
    }

    /// Feeds one datagram (UDP): exactly one ADU. A datagram that is not one
    /// whole valid frame is dropped and its error returned (count it; the
    /// socket stays open).
    pub fn handle_datagram(&mut self, datagram: &[u8]) -> Result<(), FrameError> {
        // Decide first, then execute, so a datagram with trailing bytes is not half-answered.
        let decoded = match self.config.framing {
            Framing::Mbap => mbap::decode(datagram),
            Framing::Rtu => {
                let engine = &self.engine;
                rtu::decode(datagram, &|pdu| engine.custom_pdu_length(pdu))
            }
            Framing::Ascii => ascii::decode(datagram, self.delimiter, &mut self.scratch[..]),
        };
        match decoded {
            Decoded::Frame { consumed, .. } if consumed == datagram.len() => {
                self.process(datagram, true).map_err(|e| match e {
                    ConnectionError::Frame(f) => f,
                    ConnectionError::BufferFull(n) => FrameError::TooLong(n),
                })?;
                Ok(())
            }
            Decoded::Frame { .. } => Err(FrameError::TooLong(datagram.len())),
            Decoded::Incomplete => Err(FrameError::Truncated(datagram.len())),
            Decoded::Skip { error, .. } | Decoded::Fatal(error) => {
                self.engine.note_frame_error(&error);
                Err(error)
            }
        }
    }

    /// Called when [`Connection::poll_timeout`]'s deadline passes.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flush_silence(now);
    }

    /// The next instant at which [`Connection::handle_timeout`] must be called, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timing = self.config.rtu_timing?;
        if self.rx.is_empty() {
            return None;
        }
        self.last_rx.and_then(|t| t.checked_add(timing.t3_5))
    }

    /// Answers waiting to be written, in request order (all of them,
    /// ignoring any [`Delivery`] pauses: see [`Connection::next_output`]).
    #[inline]
    pub fn output(&self) -> &[u8] {
        self.tx.get(self.tx_sent..).unwrap_or(&[])
    }

    /// The next piece of output and the pause to make before writing it.
    /// Without a hook's [`Delivery`] this is `(Duration::ZERO, output())`;
    /// with one, the output is cut where a delay or a split asks for a pause.
    /// Write the bytes after the pause, then [`Connection::consume_output`].
    pub fn next_output(&self) -> (Duration, &[u8]) {
        if self.marks.is_empty() {
            return (Duration::ZERO, self.output());
        }
        let mut pause = Duration::ZERO;
        let mut end = self.tx.len();
        for &(offset, d) in &self.marks {
            if offset == self.tx_sent {
                pause = pause.saturating_add(d);
            } else if offset > self.tx_sent && offset < end {
                end = offset;
            }
        }
        (pause, self.tx.get(self.tx_sent..end).unwrap_or(&[]))
    }

    /// True if answers are waiting.
    #[inline]
    pub fn has_output(&self) -> bool {
        self.tx_sent < self.tx.len()
    }

    /// Marks `n` bytes of [`Connection::output`] as written.
    #[inline]
    pub fn consume_output(&mut self, n: usize) {
        // The usual case, kept inline: everything went out, no pauses and no
        // local echo to keep.
        if self.tx_sent == 0 && n >= self.tx.len() && self.marks.is_empty() && !self.config.local_echo {
            self.tx.clear();
            return;
        }
        self.consume_output_general(n);
    }

    /// [`Connection::consume_output`] for a partial write, a hook's pauses or a
    /// local echo.
    #[inline(never)]
    fn consume_output_general(&mut self, n: usize) {
        let n = n.min(self.tx.len() - self.tx_sent);
        if self.config.local_echo
            && let Some(sent) = self.tx.get(self.tx_sent..self.tx_sent + n)
        {
            self.echo.extend_from_slice(sent);
        }
        if n > 0 && !self.marks.is_empty() {
            // Pauses before the bytes just written are done.
            let sent_end = self.tx_sent + n;
            self.marks.retain(|&(offset, _)| offset >= sent_end);
        }
        self.tx_sent += n;
        if self.tx_sent == self.tx.len() {
            self.tx.clear();
            self.tx_sent = 0;
            self.marks.clear();
        }
    }

    /// True while part of a frame is buffered (for a partial-frame timeout).
    pub fn has_partial_frame(&self) -> bool {
        !self.rx.is_empty()
    }

    /// Bytes held waiting for the rest of a frame.
    pub fn buffered_len(&self) -> usize {
        self.rx.len()
    }

    /// Drops a partial frame (after the adapter's partial-frame timeout).
    pub fn discard_partial_frame(&mut self) {
        if !self.rx.is_empty() {
            self.engine.note_frame_error(&FrameError::Truncated(self.rx.len()));
            self.rx.clear();
        }
    }

    /// Frees the buffers while nothing is pending, so idle connections hold
    /// no heap memory. The next request allocates them again.
    pub fn release_idle_buffers(&mut self) {
        if self.rx.is_empty() {
            self.rx = Vec::new();
        }
        if !self.has_output() {
            self.tx = Vec::new();
            self.tx_sent = 0;
            self.marks = Vec::new();
        }
        if self.echo.is_empty() {
            self.echo = Vec::new();
        }
        // Empty between inputs.
        self.observed = Vec::new();
        // Nor keep a device the context may since have dropped.
        self.devices = DeviceCache::default();
    }
}
