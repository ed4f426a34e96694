//! Fuzzes the session itself: bytes, datagrams, timeouts, sends, stops and
//! evictions interleaved on a virtual clock, for every kind (stream, line,
//! datagram) and every framing, with a hook that asks for delivery pauses.
//! Invariants: nothing panics; every poll loop settles (a wait, a read of
//! what is queued or a close) within a bounded number of outputs; every
//! transmit is non-empty and bounded; a wait already due is cleared by one
//! timeout, and deadlines never move backwards while nothing happens; a close is final
//! (no transmit, no wait after it, and its cause never changes).
#![no_main]

use coilwork_core::engine::RequestHook;
use coilwork_core::frame::rtu::RtuTiming;
use coilwork_core::pdu::Request;
use coilwork_core::storage::{DeviceContext, RequestContext, ServerContext};
use coilwork_core::{
    CloseCause, Delivery, Engine, Framing, Input, Output, Session, SessionConfig, SessionKind, StreamTimeoutConfig,
    Transport,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pauses for every answer whose function code is odd.
struct Pauses;
impl RequestHook for Pauses {
    fn delivery(&self, ctx: &RequestContext<'_>, _: &Request<'_>, _: &[u8]) -> Option<Delivery> {
        (ctx.function & 1 == 1).then_some(Delivery {
            delay: Duration::from_millis(u64::from(ctx.function)),
            split: Some((3, Duration::from_millis(7))),
            garble: ctx.function == 5,
        })
    }
}

fn shared(mode: u8) -> Option<SessionConfig> {
    let kind = [SessionKind::Stream, SessionKind::Line, SessionKind::Datagram, SessionKind::Stream][usize::from(mode & 3)];
    let framing = [Framing::Mbap, Framing::Rtu, Framing::Ascii, Framing::Rtu][usize::from((mode >> 2) & 3)];
    let transport = match kind {
        SessionKind::Stream => Transport::Tcp,
        SessionKind::Line => Transport::Serial,
        SessionKind::Datagram => Transport::Udp,
    };
    let device = DeviceContext::with_sizes(50, 50, 50, 50).ok()?;
    let builder = Engine::builder(ServerContext::single(device));
    let builder = if mode & 16 != 0 { builder.hook(Arc::new(Pauses)) } else { builder };
    let mut c = SessionConfig::new(Arc::new(builder.build()), kind, framing, transport);
    if kind == SessionKind::Stream {
        c.timeouts = StreamTimeoutConfig {
            partial_frame: Some(Duration::from_millis(300)),
            idle: (mode & 32 != 0).then_some(Duration::from_millis(2000)),
            release_buffers_after: Duration::from_millis(500),
        };
    }
    if kind == SessionKind::Line && framing == Framing::Rtu {
        c.rtu_timing = Some(RtuTiming::new(19_200, 11));
    }
    c.max_buffered = if mode & 64 != 0 { 64 } else { 4096 };
    c.drain_reads = 8;
    Some(c)
}

/// Polls until the session settles; checks the invariants on the way.
fn settle(s: &mut Session, now: Instant, closed: &mut Option<CloseCause>, last_wait: &mut Option<Instant>) {
    for _ in 0..200 {
        match s.poll(now) {
            Output::Transmit(bytes) => {
                assert!(closed.is_none(), "transmit after close");
                assert!(!bytes.is_empty() && bytes.len() <= 8192, "transmit of {} bytes", bytes.len());
                let n = bytes.len();
                s.handle(now, Input::Sent(n));
                *last_wait = None;
            }
            Output::ReleaseBuffers | Output::Discarded => *last_wait = None,
            Output::ReadQueued => return,
            Output::Pause(until) => {
                assert!(closed.is_none(), "pause after close");
                assert!(until > now, "a pause in the past");
                return;
            }
            Output::Wait(deadline) => {
                assert!(closed.is_none(), "wait after close");
                if deadline.is_some_and(|d| d <= now) {
                    // Due already: the adapter's timer fires at once, and
                    // the timeout must move the session on.
                    s.handle(now, Input::Timeout);
                    *last_wait = None;
                    continue;
                }
                if let Some(d) = deadline {
                    if let Some(old) = *last_wait {
                        assert!(d >= old, "a deadline moved back with nothing happening");
                    }
                }
                *last_wait = deadline;
                return;
            }
            Output::Close(cause) => {
                assert!(closed.is_none_or(|c| c == cause), "close cause changed");
                *closed = Some(cause);
                return;
            }
        }
    }
    panic!("the poll loop does not settle");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let Some(config) = shared(mode) else { return };
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = Session::new(Arc::new(config), t0, 0, None, None);
    let mut closed = None;
    let mut last_wait = None;
    while let Some((&op, tail)) = rest.split_first() {
        let len = usize::from(op >> 3).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        let input = match op & 7 {
            0 | 1 => Input::Bytes(chunk),
            2 => Input::Datagram { bytes: chunk, from: None },
            3 => {
                now += Duration::from_millis(u64::from(op >> 3) * 20);
                Input::Timeout
            }
            4 => Input::Stop,
            5 => Input::Evict,
            6 => Input::Eof,
            _ => {
                // Time passes with nothing to tell: the adapter only polls again.
                now += Duration::from_millis(u64::from(op >> 3));
                settle(&mut s, now, &mut closed, &mut last_wait);
                continue;
            }
        };
        if !matches!(input, Input::Timeout) {
            last_wait = None;
        }
        s.handle(now, input);
        settle(&mut s, now, &mut closed, &mut last_wait);
    }
    if closed.is_some() {
        assert!(s.is_closed());
    }
});
