//! `--trace app|frame|raw`: each request and answer logged, decoded at the
//! chosen level, under the tracing target `coilwork::trace`, with a cap on
//! lines per second so a flood cannot fill a disk.

use clap::ValueEnum;
use coilwork_core::engine::{HookAction, RequestHook};
use coilwork_core::pdu::{DecodeError, PduBuf, Request};
use coilwork_core::storage::RequestContext;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::info;

/// The tracing target of trace lines (`RUST_LOG=coilwork::trace=info` also enables them).
pub const TARGET: &str = "coilwork::trace";

/// How much of each request and answer a trace line shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum TraceLevel {
    /// The function and its fields, the answer's function or exception.
    App,
    /// As `app`, plus transport, peer and PDU lengths.
    Frame,
    /// As `frame`, plus the request and answer PDUs in hex.
    Raw,
}

/// The level `RUST_LOG` asks for when it names the `coilwork::trace` target:
/// `=info` app, `=debug` frame, `=trace` raw (after logging is set up).
pub fn level_from_env() -> Option<TraceLevel> {
    let named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains(TARGET));
    if !named {
        None
    } else if tracing::enabled!(target: TARGET, tracing::Level::TRACE) {
        Some(TraceLevel::Raw)
    } else if tracing::enabled!(target: TARGET, tracing::Level::DEBUG) {
        Some(TraceLevel::Frame)
    } else if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        Some(TraceLevel::App)
    } else {
        None
    }
}

/// A [`RequestHook`] that only logs, at most `limit` lines per second.
#[derive(Debug)]
pub struct Tracer {
    level: TraceLevel,
    limit: u64,
    start: Instant,
    /// The second (since `start`) being counted, and the lines in it.
    window: AtomicU64,
    count: AtomicU64,
}

impl Tracer {
    /// A tracer at `level`, writing at most `limit` lines a second.
    pub fn new(level: TraceLevel, limit: u32) -> Self {
        Self {
            level,
            limit: u64::from(limit),
            start: Instant::now(),
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// True if one more line fits in this second; reports what the last
    /// second dropped when a new one starts.
    fn admit(&self) -> bool {
        let now = self.start.elapsed().as_secs();
        let seen = self.window.load(Ordering::Relaxed);
        if now != seen
            && self
                .window
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let last = self.count.swap(0, Ordering::Relaxed);
            if last > self.limit {
                info!(target: TARGET, dropped = last - self.limit, "trace lines over the per-second cap were dropped");
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed) < self.limit
    }

    fn context(&self, ctx: &RequestContext<'_>, pdu: usize) -> String {
        if self.level < TraceLevel::Frame {
            return String::new();
        }
        let peer = ctx.peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
        format!(" transport={:?} peer={peer} pdu_len={pdu}", ctx.transport)
    }
}

/// The bytes in hex, space separated.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        let _ = write!(out, "{}{b:02x}", if i == 0 { "" } else { " " });
    }
    out
}

/// The answer in words: its function code, or the exception it carries.
fn answer(pdu: &[u8]) -> String {
    match pdu {
        [fc, code, ..] if fc & 0x80 != 0 => format!("exception {code:#04x} to function {:#04x}", fc & 0x7F),
        [fc, ..] => format!("function {fc:#04x} answered"),
        [] => "empty".to_owned(),
    }
}

impl RequestHook for Tracer {
    fn on_request(&self, ctx: &RequestContext<'_>, request: &mut Request<'_>, _response: &mut PduBuf) -> HookAction {
        if self.admit() {
            let mut pdu = PduBuf::default();
            let len = request.encode(&mut pdu).map_or(0, |()| pdu.as_slice().len());
            let raw = if self.level == TraceLevel::Raw {
                format!(" hex=[{}]", hex(pdu.as_slice()))
            } else {
                String::new()
            };
            info!(target: TARGET, "request unit={} {request:?}{}{raw}", ctx.unit, self.context(ctx, len));
        }
        HookAction::Continue
    }

    fn on_response(&self, ctx: &RequestContext<'_>, _request: &Request<'_>, response: &mut PduBuf) -> HookAction {
        if self.admit() {
            let pdu = response.as_slice();
            let raw = if self.level == TraceLevel::Raw {
                format!(" hex=[{}]", hex(pdu))
            } else {
                String::new()
            };
            info!(target: TARGET, "answer unit={} {}{}{raw}", ctx.unit, answer(pdu), self.context(ctx, pdu.len()));
        }
        HookAction::Continue
    }

    fn on_rejected(&self, ctx: &RequestContext<'_>, error: &DecodeError, response: &mut PduBuf) -> HookAction {
        if self.admit() {
            let pdu = response.as_slice();
            info!(target: TARGET, "rejected unit={} ({error}): {}{}", ctx.unit, answer(pdu), self.context(ctx, pdu.len()));
        }
        HookAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_admits_limit_lines_a_second() {
        let t = Tracer::new(TraceLevel::App, 3);
        let admitted = (0..10).filter(|_| t.admit()).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn answers_and_hex_read_well() {
        assert_eq!(answer(&[0x83, 0x02]), "exception 0x02 to function 0x03");
        assert_eq!(answer(&[0x03, 0x02, 0, 1]), "function 0x03 answered");
        assert_eq!(hex(&[0x01, 0xab]), "01 ab");
    }
}
