//! One connection thread of a TCP or TLS server: the upgrade step (nothing,
//! or the TLS handshake), then [`drive`] over a blocking stream whose reads
//! the server wakes (see `Slot::state` in the `table` module).

use crate::drive::{Link, drive};
use crate::handle::ServerHandle;
use crate::table::{BUSY, FIRED, NO_DEADLINE, SlotGuard};
use crate::tcp::TcpServerConfig;
use coilwork_core::{CloseCause, Input, Session, SessionConfig, Transport};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::debug;

/// A byte stream a connection thread serves: a plain TCP socket, or a
/// TLS stream over one. Timeouts and non-blocking mode are set on the TCP
/// socket underneath.
pub(crate) trait StreamSocket: Read + Write {
    /// The TCP socket carrying the stream.
    fn socket(&self) -> &TcpStream;
    /// Closes the sending side after a graceful stop (TLS: `close_notify` first).
    fn close_write(&mut self);
}

/// A connection's socket, shared with its slot in the server's table (which
/// wakes the thread by shutting its reading side down); reads and writes go
/// through `&TcpStream`, with no second descriptor.
#[derive(Debug)]
pub(crate) struct SharedStream(pub(crate) Arc<TcpStream>);

impl Read for SharedStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [std::io::IoSliceMut<'_>]) -> std::io::Result<usize> {
        (&*self.0).read_vectored(bufs)
    }
}

impl Write for SharedStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        (&*self.0).write_vectored(bufs)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

impl StreamSocket for SharedStream {
    fn socket(&self) -> &TcpStream {
        &self.0
    }

    fn close_write(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
}

/// The step between accept and serving, run on the connection thread:
/// nothing for TCP, the handshake and role check for TLS.
pub(crate) trait Upgrade: Send + Sync + 'static {
    /// The stream served after the step.
    type Stream: StreamSocket;
    /// The transport the engine is told about.
    const TRANSPORT: Transport;
    /// The server's name in logs.
    const NAME: &'static str;
    /// The served stream and the client's role, or `None` to close the
    /// connection. `stream` is blocking, with the write timeout set; the
    /// step polls `cancelled` at least every `poll` and gives up once it is
    /// true (a read of end of stream may also mean it was cancelled). It may
    /// leave a read timeout set: the connection loop clears it.
    fn upgrade(
        &self,
        stream: SharedStream,
        peer: SocketAddr,
        cancelled: &dyn Fn() -> bool,
        poll: Duration,
    ) -> Option<(Self::Stream, Option<String>)>;
    /// Logs what the server should warn about when it starts serving.
    fn starting(&self) {}
}

/// Plain Modbus/TCP, served as accepted: the service of a [`TcpServer`](crate::TcpServer).
#[derive(Debug, Default)]
pub struct PlainTcp;

impl Upgrade for PlainTcp {
    type Stream = SharedStream;
    const TRANSPORT: Transport = Transport::Tcp;
    const NAME: &'static str = "modbus tcp";

    fn upgrade(
        &self,
        stream: SharedStream,
        _peer: SocketAddr,
        _cancelled: &dyn Fn() -> bool,
        _poll: Duration,
    ) -> Option<(SharedStream, Option<String>)> {
        Some((stream, None))
    }
}

/// Everything one connection thread owns.
pub(crate) struct ConnThread {
    pub(crate) peer: SocketAddr,
    /// The server's settings for every session, with its engine and counters.
    pub(crate) shared: Arc<SessionConfig>,
    pub(crate) config: Arc<TcpServerConfig>,
    pub(crate) stop: ServerHandle,
    pub(crate) guard: SlotGuard,
}

impl ConnThread {
    pub(crate) fn run<U: Upgrade>(self, stream: SharedStream, upgrade: &U) {
        let peer = self.peer;
        debug!(%peer, "connection opened");
        // Accepted sockets inherit non-blocking mode from the listener on some systems.
        let tcp = stream.socket();
        let setup = tcp
            .set_nonblocking(false)
            .and_then(|()| tcp.set_nodelay(self.config.nodelay))
            .and_then(|()| tcp.set_write_timeout(self.config.write_timeout));
        if let Err(e) = setup {
            debug!(%peer, error = %e, "cannot set up the socket");
            return;
        }
        let slot = &*self.guard.slot;
        let cancelled = || self.stop.is_stopping() || slot.close.load(Ordering::Acquire);
        let poll = self.config.poll_interval.max(Duration::from_millis(1));
        match upgrade.upgrade(stream, peer, &cancelled, poll) {
            Some((stream, role)) => {
                let mut session = Session::new(Arc::clone(&self.shared), Instant::now(), slot.id, Some(peer), role);
                let mut link = StreamLink {
                    conn: &self,
                    stream,
                    buf: Vec::new(),
                    nonblocking: false,
                };
                // Reads block until input or a wake (a TLS handshake may have left a read timeout).
                let cause = match link.stream.socket().set_read_timeout(None) {
                    Ok(()) => drive(&mut session, &mut link),
                    Err(_) => CloseCause::IoError,
                };
                if cause == CloseCause::Stopped {
                    link.stream.close_write();
                }
                debug!(%peer, ?cause, "connection closed");
            }
            None if cancelled() => debug!(%peer, "closed during the upgrade by a stop or an eviction"),
            None => self.shared.stats.count_handshake_failure(),
        }
    }
}

/// One connection's stream as [`drive`] sees it. Reads block with no read
/// timeout; the server wakes them (see `Slot::state`).
struct StreamLink<'a, S> {
    conn: &'a ConnThread,
    stream: S,
    /// Allocated on the first read.
    buf: Vec<u8>,
    /// Set while a stop's drain reads what is already queued.
    nonblocking: bool,
}

impl<S: StreamSocket> StreamLink<'_, S> {
    /// Reads into `buf`, allocated on first use.
    fn read(&mut self) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            self.buf.resize(self.conn.config.read_buffer_size.max(1), 0);
        }
        self.stream.read(&mut self.buf)
    }

    fn bytes(&self, n: usize) -> Input<'_> {
        Input::Bytes(self.buf.get(..n).unwrap_or(&[]))
    }
}

impl<S: StreamSocket> Link for StreamLink<'_, S> {
    fn handle(&self) -> &ServerHandle {
        &self.conn.stop
    }

    fn write(&mut self, out: &[u8]) -> std::io::Result<()> {
        if self.nonblocking {
            self.nonblocking = self.stream.socket().set_nonblocking(false).is_err();
        }
        self.stream.write_all(out).and_then(|()| self.stream.flush())
    }

    fn read_queued(&mut self, session: &mut Session) {
        if !self.nonblocking {
            self.nonblocking = self.stream.socket().set_nonblocking(true).is_ok();
        }
        let input = match self.read() {
            Ok(n) if n > 0 && self.nonblocking => self.bytes(n),
            _ => Input::Eof,
        };
        session.handle(Instant::now(), input);
    }

    fn signal(&self) -> Option<Input<'static>> {
        if self.conn.guard.slot.close.load(Ordering::Acquire) {
            Some(Input::Evict)
        } else {
            self.handle().is_stopping().then_some(Input::Stop)
        }
    }

    /// Sleeps in slices of at most `poll_interval`, so an eviction cuts it short too.
    fn sleep(&self, d: Duration) {
        let poll = self.conn.config.poll_interval.max(Duration::from_millis(1));
        let start = Instant::now();
        loop {
            let left = d.saturating_sub(start.elapsed());
            if self.signal().is_some() || left.is_zero() || self.handle().sleep_unless_stopped(left.min(poll)) {
                return;
            }
        }
    }

    /// One blocking read, announced to the watchdog and the wakers with the
    /// session's closing deadline; what it brought goes to the session.
    fn wait(&mut self, session: &mut Session, _deadline: Option<Instant>) {
        let (slot, table) = (&*self.conn.guard.slot, &*self.conn.guard.table);
        let deadline = session.next_closing_deadline().map_or(NO_DEADLINE, |d| table.nanos(d));
        // Announce the read, then look at the flags again: whoever raises
        // one after this sees the read and wakes it (SeqCst on both sides).
        slot.state.store(deadline, Ordering::SeqCst);
        if slot.close.load(Ordering::SeqCst) || table.stopping.load(Ordering::SeqCst) {
            slot.state.store(BUSY, Ordering::SeqCst);
            return;
        }
        let read = self.read();
        // From here the watchdog and the wakers leave this connection alone.
        let fired = slot.state.swap(BUSY, Ordering::SeqCst) == FIRED;
        let now = Instant::now();
        // No timer wakes this thread but for a closing deadline: the
        // deadlines passed by now (a buffer release among them) count
        // first. Only input read before a passed closing deadline was acted
        // on (a write to a slow reader took that long) is served first, as
        // the session serves it from every adapter.
        let read_in_time = matches!(read, Ok(n) if n > 0) && !fired;
        if !(read_in_time && session.next_closing_deadline().is_some_and(|d| d <= now)) {
            session.handle(now, Input::Timeout);
        }
        match read {
            Ok(n) if n > 0 => session.handle(now, self.bytes(n)),
            Err(e) if e.kind() == ErrorKind::Interrupted && !fired => {}
            // End of stream or an error: an eviction, a stop or a deadline
            // may have woken the thread; else the peer closed or the read failed.
            other => match self.signal() {
                Some(input) => session.handle(now, input),
                None if session.close_cause().is_none() => {
                    session.handle(now, if other.is_ok() { Input::Eof } else { Input::Failed });
                }
                None => {}
            },
        }
    }
}
