//! One TCP or TLS connection, from accept to close: the loop that moves
//! bytes and time between a [`ByteStream`] and its [`Session`].
//!
//! The performance rules, kept here once for every runtime:
//! - no buffer while idle: a connection waits with
//!   [`ByteStream::poll_readable`] and makes its read buffer (small first,
//!   grown when a read fills it) only once input is there; the session's
//!   [`Output::ReleaseBuffers`] frees it again after a quiet spell;
//! - one `recv` per request: after a short read the next wait asks for
//!   readiness before reading, never paying a read that says `EAGAIN`;
//! - one write per pipelined batch: everything the session queued from one
//!   read goes out in one write, first tried in one `poll_write` (and, on a
//!   plain socket, [`ByteStream::WRITES_THROUGH`], without a flush);
//! - a lazy timer: one per connection, made when first armed, kept at or
//!   before the earliest deadline and moved only when it fires early, so a
//!   busy connection touches the timer wheel about once a second;
//! - waker reuse: the close signal and the timer keep the task's waker, so a
//!   wait registers only when the waker changes; the timer is polled only
//!   when it may have fired unseen (see [`Waits::poll_wait`]).

use crate::seam::{ByteStream, Runtime, Timer};
use coilwork_core::{CloseCause, CloseReason, CloseSignal, Input, Output, Session};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tracing::debug;

/// First size of a connection's read buffer (grown to `read_buffer_size`
/// when a read fills it).
const SMALL_READ: usize = 512;

/// What one wait of a connection ended with.
pub(crate) enum Event {
    Close(CloseReason),
    Read(std::io::Result<usize>),
    Timer,
}

/// A connection's read buffer, timer and waker bookkeeping.
pub(crate) struct Waits<R: Runtime> {
    buf: Vec<u8>,
    size: usize,
    /// The last read came back short (or would block): wait for readiness
    /// before the next read. A new connection starts so, without a buffer.
    drained: bool,
    /// Boxed by the runtime and made when first armed; `armed` is where it is set.
    timer: Option<R::Timer>,
    armed: Option<Instant>,
    /// The task's waker as last registered with the close signal and, through a poll, the timer.
    registered: Option<Waker>,
    /// The timer must be polled at the next wait.
    check_timer: bool,
}

impl<R: Runtime> Waits<R> {
    pub(crate) fn new(read_buffer_size: usize) -> Self {
        Self {
            buf: Vec::new(),
            size: read_buffer_size.max(1),
            drained: true,
            timer: None,
            armed: None,
            registered: None,
            check_timer: false,
        }
    }

    /// Arms the timer at `deadline` unless it is armed at or before it.
    fn arm(&mut self, deadline: Option<Instant>) {
        if let Some(d) = deadline
            && self.armed.is_none_or(|a| a > d)
        {
            match self.timer.as_mut() {
                Some(t) => t.reset(d),
                None => self.timer = Some(R::timer(d)),
            }
            self.armed = Some(d);
            // A fresh or moved timer registers the waker on its next poll.
            self.check_timer = true;
        }
    }

    /// One poll of a wait: the close signal (an atomic load), the read, and
    /// the timer only when it may have fired unseen. The timer is polled
    /// when it was just armed or the waker changed; when this wait was woken
    /// and neither the signal nor the stream is ready (the wake may be the
    /// timer's); and when the last event left `check_timer` set (a read taken
    /// at or past the deadline, or a write that waited, may have taken the
    /// timer's wake).
    fn poll_wait<S: ByteStream>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut S,
        signal: &CloseSignal,
        woken: &mut bool,
    ) -> Poll<Event> {
        if let Some(why) = signal.get() {
            return Poll::Ready(Event::Close(why));
        }
        if self.registered.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            // `register` also sees a raise that came since `get`.
            if let Some(why) = signal.register(cx.waker()) {
                return Poll::Ready(Event::Close(why));
            }
            self.registered = Some(cx.waker().clone());
            self.check_timer = true;
        }
        let repoll = std::mem::replace(woken, true);
        if let Poll::Ready(read) = self.poll_read(cx, stream) {
            return Poll::Ready(Event::Read(read));
        }
        if (self.check_timer || repoll)
            && self.armed.is_some()
            && let Some(t) = self.timer.as_mut()
        {
            self.check_timer = false;
            if t.poll_fired(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
        }
        Poll::Pending
    }

    /// Reads what has arrived, first waiting for readiness (without a
    /// buffer, if there is none) when the last read drained the stream.
    fn poll_read<S: ByteStream>(&mut self, cx: &mut Context<'_>, stream: &mut S) -> Poll<std::io::Result<usize>> {
        while self.drained {
            match stream.poll_readable(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            if !self.buf.is_empty() {
                self.drained = false;
                break;
            }
            // No buffer yet: make one only if a read would really return something.
            match stream.has_input() {
                Ok(()) => self.drained = false,
                // Readiness cleared: poll again to wait for the next.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if self.buf.is_empty() {
            self.buf.resize(self.size.min(SMALL_READ), 0);
        }
        let read = stream.poll_read(cx, &mut self.buf);
        // The stream registered for readiness: wait for it before the next read.
        self.drained = read.is_pending();
        read
    }

    /// After a read of `n` bytes at `now`: a short read took everything.
    fn after_read(&mut self, n: usize, now: Instant) {
        if self.armed.is_some_and(|a| a <= now) {
            // The timer may have fired and its wake gone to the poll that returned this read.
            self.check_timer = true;
        }
        self.drained = n < self.buf.len();
    }

    /// After the read's bytes were handled: a read that filled the buffer
    /// means more is coming, read in bigger gulps.
    fn grow_if_full(&mut self) {
        if !self.drained && self.buf.len() < self.size {
            self.buf.resize(self.size, 0);
        }
    }

    /// On a stop: feeds what already arrived, without waiting.
    fn read_queued<S: ByteStream>(&mut self, stream: &mut S, session: &mut Session, now: Instant) {
        if self.buf.is_empty() {
            self.buf.resize(self.size.min(SMALL_READ), 0);
        }
        match stream.read_received(&mut self.buf) {
            Ok(n) if n > 0 => session.handle(now, Input::Bytes(self.buf.get(..n).unwrap_or(&[]))),
            _ => session.handle(now, Input::Eof),
        }
    }
}

/// Serves one stream until its session closes; returns why.
pub(crate) async fn serve<R: Runtime, S: ByteStream>(
    stream: &mut S,
    mut session: Session,
    signal: &CloseSignal,
    read_buffer_size: usize,
) -> CloseCause {
    let mut w = Waits::<R>::new(read_buffer_size);
    loop {
        let now = R::now();
        let deadline = match session.poll(now) {
            Output::Wait(deadline) => deadline,
            Output::Transmit(out) => {
                let written = transmit(stream, out, &mut w.check_timer).await;
                session.handle(R::now(), written.ok().map_or(Input::Failed, Input::Sent));
                continue;
            }
            Output::Pause(until) => {
                // Boxed: only fault injection pauses; no connection's task grows for it.
                if let Some(why) = Box::pin(pause::<R>(signal, until)).await {
                    session.handle(R::now(), input_for(why));
                }
                // The signal and the timer took this task's waker meanwhile.
                w.registered = None;
                w.check_timer = true;
                continue;
            }
            Output::ReleaseBuffers => {
                w.buf = Vec::new();
                continue;
            }
            Output::Discarded => continue,
            Output::ReadQueued => {
                w.read_queued(stream, &mut session, now);
                continue;
            }
            Output::Close(cause) => return cause,
        };
        w.arm(deadline);
        let mut woken = false;
        let event = std::future::poll_fn(|cx| w.poll_wait(cx, stream, signal, &mut woken)).await;
        let now = R::now();
        match event {
            Event::Close(why) => session.handle(now, input_for(why)),
            Event::Read(Ok(0)) => session.handle(now, Input::Eof),
            // The wake that returned it may have been the timer's too.
            Event::Read(Err(e)) if e.kind() == ErrorKind::Interrupted => w.check_timer = true,
            Event::Read(Err(e)) => {
                debug!(error = %e, "read failed");
                session.handle(now, Input::Failed);
            }
            Event::Read(Ok(n)) => {
                w.after_read(n, now);
                session.handle(now, Input::Bytes(w.buf.get(..n).unwrap_or(&[])));
                w.grow_if_full();
            }
            Event::Timer => {
                w.armed = None;
                session.handle(now, Input::Timeout);
            }
        }
    }
}

/// Writes one piece of output whole (and flushes it unless the stream
/// writes through); the bytes written. Sets `check_timer` if the write had
/// to wait (its polls may have taken the timer's wake).
pub(crate) async fn transmit<S: ByteStream>(
    stream: &mut S,
    out: &[u8],
    check_timer: &mut bool,
) -> std::io::Result<usize> {
    let mut written = 0;
    let result = std::future::poll_fn(|cx| {
        while written < out.len() {
            match stream.poll_write(cx, out.get(written..).unwrap_or(&[])) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    *check_timer = true;
                    return Poll::Pending;
                }
            }
        }
        if S::WRITES_THROUGH {
            return Poll::Ready(Ok(()));
        }
        let flushed = stream.poll_flush(cx);
        *check_timer |= flushed.is_pending();
        flushed
    })
    .await;
    result.map(|()| written)
}

/// A pause a hook's delivery asked for: `None` once over, else the signal
/// that cut it short. Only the close signal ends it early: the connection's
/// deadlines wait for the answer (the server owes it).
async fn pause<R: Runtime>(signal: &CloseSignal, until: Instant) -> Option<CloseReason> {
    let mut timer = R::timer(until);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(why) = signal.poll(cx) {
            return Poll::Ready(Some(why));
        }
        timer.poll_fired(cx).map(|()| None)
    })
    .await
}

/// What the server's signal tells the session.
pub(crate) fn input_for(why: CloseReason) -> Input<'static> {
    match why {
        CloseReason::Stop => Input::Stop,
        CloseReason::Evict => Input::Evict,
    }
}

/// A connection as the accept loop hands it over.
pub(crate) struct Accepted {
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) signal: Arc<CloseSignal>,
}
