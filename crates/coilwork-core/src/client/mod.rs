//! The upstream (client) side, sans-IO: requests forwarded to a Modbus
//! server and its answers matched back to them.
//!
//! ```text
//! driver                                   Upstream
//!   job   ──── start(now, token, unit, pdu) ──▶ framed into output()
//!   write ◀─── output() / consume_output(n)
//!   read  ──── handle_input(now, bytes, on) ──▶ on(Event::Answer { token, pdu })
//!   timer ──── poll_timeout() / handle_timeout(now, on) ──▶ Event::TimedOut
//!   lost  ──── reset(on) ──▶ Event::Lost for everything in flight
//! ```
//!
//! On MBAP each request gets a fresh upstream transaction id, so several
//! clients' requests (up to `max_in_flight`) can be in flight on one
//! connection; answers are matched by transaction id, unit and function.
//! On RTU and ASCII one request is in flight; an answer must come from the
//! addressed unit with the request's function code (or its exception), with
//! a good CRC/LRC and the length the function's response rule gives.
//! Anything else is dropped and counted, never passed on as an answer. On
//! a timed line (`rtu_timing`) a partial answer followed by t3.5 of silence
//! is dropped, and the next request waits for t3.5 after the last byte
//! received. Unit 0 on RTU/ASCII is a broadcast: sent, never answered, and
//! followed by a turnaround delay.

pub mod response;

use crate::ExceptionCode;
use crate::frame::rtu::RtuTiming;
use crate::frame::{Decoded, Framing, MAX_PDU, MAX_RTU_ADU, ascii, mbap, rtu};
use std::time::{Duration, Instant};

/// How an [`Upstream`] frames and times its exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Frame format of the upstream.
    pub framing: Framing,
    /// Line timing of a real serial line (RTU); `None` on streams.
    pub rtu_timing: Option<RtuTiming>,
    /// How long an answer may take before [`Event::TimedOut`].
    pub response_timeout: Duration,
    /// Requests in flight at once (MBAP only; RTU and ASCII always 1).
    pub max_in_flight: usize,
    /// Pause after a broadcast before the next request (RTU/ASCII).
    pub broadcast_turnaround: Duration,
}

impl ClientConfig {
    /// `framing` with a `response_timeout`, one request in flight, no line timing.
    pub fn new(framing: Framing, response_timeout: Duration) -> Self {
        Self {
            framing,
            rtu_timing: None,
            response_timeout,
            max_in_flight: 1,
            broadcast_turnaround: Duration::from_millis(100),
        }
    }
}

/// What became of a forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The upstream answered: `pdu` is its response PDU (maybe an exception).
    Answer {
        /// The caller's token from [`Upstream::start`].
        token: u64,
        /// The response PDU, function code first.
        pdu: &'a [u8],
    },
    /// No answer within the response timeout.
    TimedOut {
        /// The caller's token.
        token: u64,
    },
    /// The connection was lost ([`Upstream::reset`]) before an answer.
    Lost {
        /// The caller's token.
        token: u64,
    },
}

impl Event<'_> {
    /// The exception a client gets for a request that got no answer.
    pub fn failure(&self) -> Option<ExceptionCode> {
        match self {
            Self::Answer { .. } => None,
            Self::TimedOut { .. } => Some(ExceptionCode::GatewayTargetFailedToRespond),
            Self::Lost { .. } => Some(ExceptionCode::GatewayPathUnavailable),
        }
    }
}

/// Why [`Upstream::start`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// No free slot, or the line is not yet quiet: wait ([`Upstream::ready_at`]).
    #[error("upstream not ready for another request")]
    NotReady,
    /// The PDU is empty or longer than 253 bytes.
    #[error("request PDU of {0} bytes cannot be forwarded")]
    BadPdu(usize),
}

/// How a started request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// An answer (or a timeout) will come as an [`Event`].
    AwaitAnswer,
    /// A broadcast: nothing will come back.
    Broadcast,
}

/// One request in flight.
#[derive(Debug, Clone, Copy)]
struct Slot {
    token: u64,
    unit: u8,
    function: u8,
    transaction_id: u16,
    deadline: Instant,
}

/// Frames that did not match anything in flight, or failed their checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// Bytes dropped for bad CRC/LRC, garbage or truncation.
    pub frame_errors: u64,
    /// Whole frames that matched no request (wrong unit, function, id, length).
    pub unmatched: u64,
}

/// The sans-IO state of one upstream connection (or serial line).
#[derive(Debug)]
pub struct Upstream {
    config: ClientConfig,
    rx: Vec<u8>,
    tx: Vec<u8>,
    tx_sent: usize,
    scratch: [u8; MAX_RTU_ADU],
    slots: Vec<Slot>,
    next_tid: u16,
    last_rx: Option<Instant>,
    quiet_until: Option<Instant>,
    counters: ClientCounters,
}

impl Upstream {
    /// A fresh upstream (nothing in flight).
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            rx: Vec::new(),
            tx: Vec::new(),
            tx_sent: 0,
            scratch: [0; MAX_RTU_ADU],
            slots: Vec::with_capacity(config.max_in_flight.max(1)),
            next_tid: 1,
            last_rx: None,
            quiet_until: None,
            counters: ClientCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Counts of dropped input.
    pub fn counters(&self) -> ClientCounters {
        self.counters
    }

    /// Requests waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    fn capacity(&self) -> usize {
        match self.config.framing {
            Framing::Mbap => self.config.max_in_flight.max(1),
            Framing::Rtu | Framing::Ascii => 1,
        }
    }

    /// True if [`Upstream::start`] would take a request at `now`.
    pub fn can_start(&self, now: Instant) -> bool {
        self.slots.len() < self.capacity() && self.quiet_until.is_none_or(|t| now >= t)
    }

    /// When the line is quiet enough for the next request (`None`: now, or
    /// when a slot frees up).
    pub fn ready_at(&self) -> Option<Instant> {
        self.quiet_until
    }

    /// Frames `pdu` for `unit` into the output. `token` comes back in the
    /// request's [`Event`].
    pub fn start(&mut self, now: Instant, token: u64, unit: u8, pdu: &[u8]) -> Result<Started, StartError> {
        let Some(&function) = pdu.first().filter(|_| pdu.len() <= MAX_PDU) else {
            return Err(StartError::BadPdu(pdu.len()));
        };
        if !self.can_start(now) {
            return Err(StartError::NotReady);
        }
        let transaction_id = self.next_tid;
        self.next_tid = self.next_tid.wrapping_add(1);
        match self.config.framing {
            Framing::Mbap => mbap::encode(transaction_id, unit, pdu, &mut self.tx),
            Framing::Rtu => rtu::encode(unit, pdu, &mut self.tx),
            Framing::Ascii => ascii::encode(unit, pdu, ascii::DEFAULT_DELIMITER, &mut self.tx),
        }
        if unit == 0 && self.config.framing != Framing::Mbap {
            self.quiet_until = now.checked_add(self.config.broadcast_turnaround);
            return Ok(Started::Broadcast);
        }
        self.slots.push(Slot {
            token,
            unit,
            function,
            transaction_id,
            deadline: now.checked_add(self.config.response_timeout).unwrap_or(now),
        });
        Ok(Started::AwaitAnswer)
    }

    /// Bytes to write to the upstream.
    pub fn output(&self) -> &[u8] {
        self.tx.get(self.tx_sent..).unwrap_or(&[])
    }

    /// Marks `n` bytes of [`Upstream::output`] as written.
    pub fn consume_output(&mut self, n: usize) {
        self.tx_sent = (self.tx_sent + n).min(self.tx.len());
        if self.tx_sent == self.tx.len() {
            self.tx.clear();
            self.tx_sent = 0;
        }
    }

    /// Feeds bytes read from the upstream at `now`; every matched answer is
    /// reported to `on`.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8], on: &mut dyn FnMut(Event<'_>)) {
        if bytes.is_empty() {
            return;
        }
        self.flush_silence(now);
        self.last_rx = Some(now);
        if let Some(t) = self.config.rtu_timing {
            self.quiet_until = now.checked_add(t.t3_5);
        }
        self.rx.extend_from_slice(bytes);
        let mut rx = core::mem::take(&mut self.rx);
        let used = self.process(&rx, on);
        rx.drain(..used.min(rx.len()));
        if rx.len() > 4 * MAX_RTU_ADU {
            self.counters.frame_errors += rx.len() as u64;
            rx.clear();
        }
        self.rx = rx;
    }

    /// Frames at the front of `buf`, matched; returns the bytes used.
    fn process(&mut self, buf: &[u8], on: &mut dyn FnMut(Event<'_>)) -> usize {
        let mut pos = 0;
        while let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) {
            let decoded = match self.config.framing {
                Framing::Mbap => mbap::decode(rest),
                Framing::Rtu => response::decode_rtu_response(rest),
                Framing::Ascii => ascii::decode(rest, ascii::DEFAULT_DELIMITER, &mut self.scratch[..]),
            };
            match decoded {
                Decoded::Frame {
                    consumed,
                    unit,
                    transaction_id,
                    pdu,
                } => {
                    let source: &[u8] = if self.config.framing == Framing::Ascii {
                        &self.scratch[..]
                    } else {
                        rest
                    };
                    let pdu = source.get(pdu).unwrap_or(&[]);
                    let tid = (self.config.framing == Framing::Mbap).then_some(transaction_id);
                    Self::deliver(&mut self.slots, &mut self.counters, unit, tid, pdu, on);
                    pos += consumed.max(1);
                }
                Decoded::Incomplete => break,
                Decoded::Skip { consumed, .. } => {
                    self.counters.frame_errors += consumed as u64;
                    pos += consumed.max(1);
                }
                Decoded::Fatal(_) => {
                    // A broken MBAP stream: drop what is buffered.
                    self.counters.frame_errors += rest.len() as u64;
                    return buf.len();
                }
            }
        }
        pos
    }

    /// Passes `pdu` to the request it answers (`transaction_id`: MBAP's), or
    /// counts it as unmatched.
    fn deliver(
        slots: &mut Vec<Slot>,
        counters: &mut ClientCounters,
        unit: u8,
        transaction_id: Option<u16>,
        pdu: &[u8],
        on: &mut dyn FnMut(Event<'_>),
    ) {
        let Some(&function) = pdu.first() else {
            counters.unmatched += 1;
            return;
        };
        // Compared without the exception bit on both sides: a "request"
        // with it set (128-255, which no client should send) is answered
        // with the same code, as exception 01 from a server.
        let found = slots.iter().position(|s| {
            s.unit == unit
                && s.function & 0x7F == function & 0x7F
                && transaction_id.is_none_or(|t| s.transaction_id == t)
        });
        match found {
            Some(i) if response::response_length_ok(pdu) => {
                let slot = slots.swap_remove(i);
                on(Event::Answer { token: slot.token, pdu });
            }
            _ => counters.unmatched += 1,
        }
    }

    /// Drops a partial answer followed by t3.5 of silence.
    fn flush_silence(&mut self, now: Instant) {
        if let (Some(t), Some(last)) = (self.config.rtu_timing, self.last_rx)
            && !self.rx.is_empty()
            && now.saturating_duration_since(last) >= t.t3_5
        {
            self.counters.frame_errors += self.rx.len() as u64;
            self.rx.clear();
        }
    }

    /// The next instant [`Upstream::handle_timeout`] must be called at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.slots.iter().map(|s| s.deadline).min();
        let silence = match (self.config.rtu_timing, self.last_rx) {
            (Some(t), Some(last)) if !self.rx.is_empty() => last.checked_add(t.t3_5),
            _ => None,
        };
        match (deadline, silence) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Times out requests whose deadline passed; drops a stale partial answer.
    pub fn handle_timeout(&mut self, now: Instant, on: &mut dyn FnMut(Event<'_>)) {
        self.flush_silence(now);
        let before = self.slots.len();
        self.slots.retain(|s| {
            let expired = s.deadline <= now;
            if expired {
                on(Event::TimedOut { token: s.token });
            }
            !expired
        });
        if self.slots.len() < before && self.config.framing != Framing::Mbap {
            // A late answer must not be taken for the next request's.
            self.rx.clear();
        }
    }

    /// The connection is gone: everything in flight is lost, buffers emptied.
    pub fn reset(&mut self, on: &mut dyn FnMut(Event<'_>)) {
        for s in self.slots.drain(..) {
            on(Event::Lost { token: s.token });
        }
        self.rx.clear();
        self.tx.clear();
        self.tx_sent = 0;
        self.last_rx = None;
        self.quiet_until = None;
    }
}

#[cfg(test)]
mod tests;
