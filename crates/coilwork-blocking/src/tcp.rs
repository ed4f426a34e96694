//! Modbus/TCP server: one OS thread per connection.
//!
//! # Model
//!
//! [`TcpServer::serve_forever`] runs the accept loop on the calling thread.
//! On Linux the accept blocks, bounded by the listener's receive timeout of
//! [`TcpServerConfig::poll_interval`], so the loop sees a stop within that
//! long and costs nothing between clients; elsewhere the listener is
//! non-blocking and polled every [`ACCEPT_POLL`] (the wait is cut short by a
//! stop). Each accepted
//! connection gets its own thread (`coilwork-tcp-<n>`), up to
//! [`TcpServerConfig::max_connections`] (default 1000) at once; past it the
//! new connection is refused or the oldest one evicted
//! ([`OverflowPolicy`]). Each thread uses one stack
//! ([`TcpServerConfig::thread_stack_size`], the std default of 2 MiB of
//! address space, touched lazily, if unset), one socket and no other
//! descriptor: serving 1000 clients needs a descriptor limit (`ulimit -n`)
//! above 1000. Threads suit tens to a few thousand clients; for more, use
//! the tokio adapter.
//!
//! A connection thread reads into a reused buffer (allocated on the first
//! read), feeds the bytes to its
//! [`Session`] with `Instant::now()`, and writes everything the
//! session queued in one write: several requests in one read are answered
//! in one write (pipelining). Only a hook's [`Delivery`](coilwork_core::Delivery)
//! (delay, split: fault injection) cuts the output into pieces with pauses
//! between them, which the thread sleeps in slices of at most `poll_interval`:
//! a stop cuts a pause short and the rest is written at once (the stop drains
//! the answers), an eviction or the cut at shutdown drops the rest.
//!
//! Reads block with no read timeout, so a request costs no kernel timer; a
//! thread is woken from outside by a `shutdown(Shutdown::Read)` of its
//! socket, after which its read returns at once:
//! - a stop or an eviction raises a flag, then shuts down the socket of a
//!   thread that is in a read (an eviction at once, a stop once the accept
//!   loop has seen it, within one [`TcpServerConfig::poll_interval`]); a
//!   thread out of a read (handling input, writing) sees the flag before its
//!   next read, so a write blocked on a client that does not read is not
//!   disturbed;
//! - one watchdog thread per server, awake every `poll_interval` (default
//!   100 ms) or at the next deadline, shuts down the socket of each
//!   connection whose partial-frame or idle deadline has passed (each thread
//!   publishes its next such deadline before it reads); the thread then
//!   closes with that reason. The watchdog runs only when one of those
//!   timeouts is set.
//!
//! # Shutdown
//!
//! A stop ([`ServerHandle::stop`], [`TcpServer::shutdown`]) closes the
//! listener; each connection then reads what is already in its socket
//! (without waiting for more: the accept loop shuts the reading side of
//! each connection's socket down, which wakes a thread blocked in its read
//! and leaves what was already received readable), answers it, and closes.
//! `serve_forever` returns once every connection thread is done, normally
//! within one `poll_interval`; connections that are still open after
//! `shutdown_timeout` (a client that does not read its answers) are cut
//! (their socket is shut down both ways).

use crate::ServerError;
use crate::drive::{Link, drive, in_background};
use crate::handle::{Lifecycle, ServerHandle};
use coilwork_core::{
    Admission, AdmissionOptions, CloseCause, Engine, Input, Overflow, ServerStats, Session, SessionConfig, SessionKind,
    StreamTimeoutConfig, Transport, Verdict,
};
use coilwork_net::SocketOptions;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How often the accept loop polls its non-blocking listener where the
/// accept cannot block with a timeout (not Linux; a stop wakes it at once).
pub const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// What to do with a new client when `max_connections` are open.
pub type OverflowPolicy = Overflow;

/// Settings of a [`TcpServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::TcpServerConfig;

/// Counters of a [`TcpServer`] (and of a TLS server, with its handshake failures).
pub type TcpStats = ServerStats;

/// [`Slot::state`] while the thread is not in a read (setting up, handling input, writing).
const BUSY: u64 = u64::MAX;
/// [`Slot::state`] once the watchdog has shut the socket down at the thread's deadline.
const FIRED: u64 = u64::MAX - 1;
/// [`Slot::state`] while the thread reads, with no closing deadline.
const NO_DEADLINE: u64 = u64::MAX - 2;
/// The latest deadline a slot can hold.
const LAST_DEADLINE: u64 = u64::MAX - 3;

/// One open connection as the accept loop and the watchdog see it.
#[derive(Debug)]
struct Slot {
    id: u64,
    /// Set to make the connection's thread close it (eviction, or a cut at shutdown).
    close: AtomicBool,
    /// The connection's socket, shared with its thread: shutting its reading
    /// side down wakes the thread from a blocking read.
    socket: Arc<TcpStream>,
    /// While the thread reads: its earliest closing deadline (partial frame,
    /// idle) in nanoseconds since [`ConnTable::epoch`], or [`NO_DEADLINE`];
    /// [`FIRED`] once the watchdog woke it for that deadline; [`BUSY`] out of a read.
    state: AtomicU64,
}

impl Slot {
    /// Wakes the connection's thread from its read: the read returns what is
    /// already queued, then end of stream.
    fn wake(&self) {
        let _ = self.socket.shutdown(Shutdown::Read);
    }

    /// Wakes the thread if it is in (or about to enter) a read; call after
    /// raising the flag it checks once it has announced the read. A thread
    /// out of a read sees the flag before its next read. (A shutdown also
    /// wakes a write waiting for buffer space, which may then go on: a
    /// thread stuck writing to a client that does not read is left alone.)
    fn wake_if_reading(&self) {
        if self.state.load(Ordering::SeqCst) != BUSY {
            self.wake();
        }
    }
}

/// Open connections, oldest first; `changed` is signalled when one closes.
#[derive(Debug)]
struct ConnTable {
    open: Mutex<Admission<Arc<Slot>>>,
    changed: Condvar,
    /// Origin of the deadlines held in the slots.
    epoch: Instant,
    /// Set by the accept loop once it has stopped (before it wakes the readers).
    stopping: AtomicBool,
}

impl ConnTable {
    fn new(options: AdmissionOptions) -> Self {
        Self {
            open: Mutex::new(Admission::new(options)),
            changed: Condvar::new(),
            epoch: Instant::now(),
            stopping: AtomicBool::new(false),
        }
    }

    /// `t` as a slot deadline: nanoseconds since the epoch.
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(LAST_DEADLINE)
            .min(LAST_DEADLINE)
    }

    /// Raises `stopping` and wakes every connection thread blocked in a read
    /// (they see the stop).
    fn wake_for_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for slot in self.lock().open() {
            slot.wake_if_reading();
        }
    }

    /// The watchdog: until `done`, shuts down the socket of each connection
    /// whose closing deadline passed, once; wakes every `poll` or at the next deadline.
    fn watch(&self, poll: Duration, done: &AtomicBool) {
        while !done.load(Ordering::Acquire) {
            let now = self.nanos(Instant::now());
            let mut next = NO_DEADLINE;
            for slot in self.lock().open() {
                let d = slot.state.load(Ordering::Acquire);
                if d > LAST_DEADLINE {
                    continue;
                }
                if d > now {
                    next = next.min(d);
                } else if slot
                    .state
                    .compare_exchange(d, FIRED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    // Fails when the thread woke first: it then left its read (BUSY).
                    slot.wake();
                }
            }
            let sleep = Duration::from_nanos(next.saturating_sub(now))
                .min(poll)
                .max(Duration::from_millis(1));
            std::thread::park_timeout(sleep);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Admission<Arc<Slot>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no connection is open or `timeout` passed; true if none is open.
    fn wait_empty(&self, timeout: Duration) -> bool {
        let open = self.lock();
        let (open, _) = self
            .changed
            .wait_timeout_while(open, timeout, |o| !o.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        open.is_empty()
    }
}

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
pub(crate) struct SharedStream(Arc<TcpStream>);

impl SharedStream {
    /// The TCP socket.
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.0
    }
}

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
}

/// Plain Modbus/TCP: served as accepted.
struct PlainTcp;

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

/// A blocking Modbus/TCP server over an [`Engine`]; see the [module docs](self)
/// for the thread-per-connection model.
///
/// [`TcpServer::new`] does not bind (pymodbus `defer_start`):
/// [`TcpServer::bind`] or [`TcpServer::serve_forever`] does.
#[derive(Debug)]
pub struct TcpServer {
    engine: Arc<Engine>,
    config: Arc<TcpServerConfig>,
    life: Lifecycle<TcpListener>,
    stats: Arc<TcpStats>,
}

impl TcpServer {
    /// A server for `engine`; nothing is bound yet.
    pub fn new(engine: Arc<Engine>, config: TcpServerConfig) -> Self {
        Self::with_handle(engine, config, ServerHandle::new())
    }

    /// A server stopped by `handle` (keep a clone to stop a server that
    /// blocks its thread). Use a fresh handle for each server.
    pub fn with_handle(engine: Arc<Engine>, config: TcpServerConfig, handle: ServerHandle) -> Self {
        Self {
            engine,
            config: Arc::new(config),
            life: Lifecycle::new(handle),
            stats: Arc::new(TcpStats::default()),
        }
    }

    /// Binds and listens now (idempotent); returns the address bound (useful with port 0).
    pub fn bind(&self) -> Result<SocketAddr, ServerError> {
        self.life.bind(|| self.listen())
    }

    fn listen(&self) -> Result<(TcpListener, SocketAddr), ServerError> {
        let opts = SocketOptions {
            addr: self.config.address,
            reuse_address: self.config.allow_reuse_address,
            reuse_port: self.config.allow_reuse_port,
        };
        let listener = coilwork_net::tcp_listener(&opts, self.config.backlog)?;
        let addr = listener.local_addr()?;
        Ok((listener, addr))
    }

    /// The bound address, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.life.handle.local_addr()
    }

    /// A handle to stop this server from any thread.
    pub fn handle(&self) -> ServerHandle {
        self.life.handle.clone()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<TcpStats> {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &TcpServerConfig {
        &self.config
    }

    /// The engine served.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Binds if needed and serves on the calling thread until stopped;
    /// returns once every connection is closed (at once, with `Ok`, if a
    /// stop came first).
    pub fn serve_forever(&self) -> Result<(), ServerError> {
        self.serve_with(Arc::new(PlainTcp))
    }

    /// `serve_forever` with an upgrade step on each accepted connection.
    pub(crate) fn serve_with<U: Upgrade>(&self, upgrade: Arc<U>) -> Result<(), ServerError> {
        self.life
            .serve_bound(|| self.listen(), |listener| self.run(listener, &upgrade))
    }

    /// Graceful stop from another thread: stops accepting, answers requests
    /// already received, closes the connections, and returns once
    /// `serve_forever` has returned.
    pub fn shutdown(&self) {
        self.life.shutdown();
    }

    /// Stops the server and releases the listening socket if it is not serving yet.
    pub fn server_close(&self) {
        self.life.close();
    }

    fn run<U: Upgrade>(&self, listener: TcpListener, upgrade: &Arc<U>) -> Result<(), ServerError> {
        let handle = &self.life.handle;
        let c = &*self.config;
        let table = Arc::new(ConnTable::new(AdmissionOptions {
            max_connections: c.max_connections,
            overflow: c.overflow,
            allow_list: c.allow_list.clone(),
        }));
        let shared = Arc::new(self.session_config(U::TRANSPORT));
        let watchdog = self.start_watchdog(&table);
        // Linux: a blocking accept bounded by the listener's receive timeout
        // wakes only for a client or every `poll_interval`. A failed
        // non-blocking accept costs a socket allocation and free in the
        // kernel, and polling it every ACCEPT_POLL took the served CPU away
        // from the connection threads 200 times a second.
        let blocking_accept = cfg!(target_os = "linux")
            && listener.set_nonblocking(false).is_ok()
            && socket2::SockRef::from(&listener)
                .set_read_timeout(Some(self.config.poll_interval.max(Duration::from_millis(1))))
                .is_ok();
        if !blocking_accept {
            listener.set_nonblocking(true)?;
        }
        debug!(addr = ?handle.local_addr(), "{} server listening", U::NAME);
        while !handle.is_stopping() {
            match listener.accept() {
                Ok((stream, peer)) => {
                    if handle.is_stopping() {
                        break;
                    }
                    self.spawn_connection(&table, &shared, stream, peer, upgrade);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if !blocking_accept && handle.sleep_unless_stopped(ACCEPT_POLL) {
                        break;
                    }
                }
                Err(e) if is_per_connection_error(&e) => {}
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    // Out of descriptors or memory: do not spin.
                    handle.sleep_unless_stopped(Duration::from_millis(50));
                }
            }
        }
        drop(listener);
        // Threads blocked in a read wake, see the stop, and drain.
        table.wake_for_stop();
        if !table.wait_empty(self.config.shutdown_timeout) {
            let open = table.lock();
            warn!(open = open.len(), "connections did not close in time; cutting them");
            for slot in open.open() {
                slot.close.store(true, Ordering::Release);
                // Also ends a write blocked on a client that does not read.
                let _ = slot.socket.shutdown(Shutdown::Both);
            }
            drop(open);
            let grace = self.config.poll_interval.saturating_mul(3);
            if !table.wait_empty(grace) {
                // Each is blocked in a write bounded by `write_timeout`, if any.
                warn!("connection threads still writing; leaving them to end on their own");
            }
        }
        if let Some((done, thread)) = watchdog {
            done.store(true, Ordering::Release);
            thread.thread().unpark();
            let _ = thread.join();
        }
        debug!("{} server stopped", U::NAME);
        Ok(())
    }

    /// Starts the thread that wakes connections at their partial-frame and
    /// idle deadlines, if either timeout is set; stop it by raising the flag
    /// and unparking it.
    fn start_watchdog(&self, table: &Arc<ConnTable>) -> Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
        if self.config.partial_frame_timeout.is_none() && self.config.idle_timeout.is_none() {
            return None;
        }
        let done = Arc::new(AtomicBool::new(false));
        let (t, d) = (Arc::clone(table), Arc::clone(&done));
        let poll = self.config.poll_interval.max(Duration::from_millis(1));
        match std::thread::Builder::new()
            .name("coilwork-tcp-watchdog".into())
            .spawn(move || t.watch(poll, &d))
        {
            Ok(thread) => Some((done, thread)),
            Err(e) => {
                warn!(error = %e, "cannot start the timeout watchdog; idle and partial-frame timeouts are off");
                None
            }
        }
    }

    /// Admits (or refuses) a new client and starts its thread.
    fn spawn_connection<U: Upgrade>(
        &self,
        table: &Arc<ConnTable>,
        shared: &Arc<SessionConfig>,
        stream: TcpStream,
        peer: SocketAddr,
        upgrade: &Arc<U>,
    ) {
        let stream = Arc::new(stream);
        let Some(slot) = self.admit(table, peer, &stream) else {
            drop(stream);
            return;
        };
        let id = slot.id;
        let guard = SlotGuard {
            slot,
            table: Arc::clone(table),
            stats: Arc::clone(&self.stats),
        };
        let conn = ConnThread {
            peer,
            shared: Arc::clone(shared),
            config: Arc::clone(&self.config),
            stop: self.life.handle.clone(),
            guard,
        };
        let mut builder = std::thread::Builder::new().name(format!("coilwork-tcp-{id}"));
        if let Some(size) = self.config.thread_stack_size {
            builder = builder.stack_size(size);
        }
        // On failure the closure, and with it the guard, is dropped: the slot is freed.
        let upgrade = Arc::clone(upgrade);
        if let Err(e) = builder.spawn(move || conn.run(SharedStream(stream), &*upgrade)) {
            warn!(%peer, error = %e, "cannot start a connection thread; closing the connection");
        }
    }

    /// The settings every session of this server shares.
    fn session_config(&self, transport: Transport) -> SessionConfig {
        let c = &*self.config;
        SessionConfig {
            timeouts: StreamTimeoutConfig {
                partial_frame: c.partial_frame_timeout,
                idle: c.idle_timeout,
                release_buffers_after: c.release_buffers_after,
            },
            max_buffered: c.max_buffered,
            stats: Arc::clone(&self.stats),
            ..SessionConfig::new(Arc::clone(&self.engine), SessionKind::Stream, c.framing, transport)
        }
    }

    /// Asks the admission whether a new client is served; returns its slot
    /// if so, after waking the connection it evicts, if any.
    fn admit(&self, table: &ConnTable, peer: SocketAddr, socket: &Arc<TcpStream>) -> Option<Arc<Slot>> {
        let mut slot = None;
        let verdict = table.lock().admit(peer.ip(), &self.stats, |id| {
            let new = Arc::new(Slot {
                id,
                close: AtomicBool::new(false),
                socket: Arc::clone(socket),
                state: AtomicU64::new(BUSY),
            });
            slot = Some(Arc::clone(&new));
            new
        });
        match verdict {
            Verdict::Admit { evict, .. } => {
                if let Some(oldest) = evict {
                    oldest.close.store(true, Ordering::SeqCst);
                    oldest.wake_if_reading();
                }
                slot
            }
            Verdict::Refuse(why) => {
                debug!(%peer, ?why, "refused");
                None
            }
        }
    }
}

/// Accept errors that concern one would-be connection only.
fn is_per_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}

/// Removes a connection from the table when its thread ends (even by a panic).
struct SlotGuard {
    slot: Arc<Slot>,
    table: Arc<ConnTable>,
    stats: Arc<TcpStats>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.table.lock().release(self.slot.id, &self.stats);
        self.table.changed.notify_all();
    }
}

/// Everything one connection thread owns.
struct ConnThread {
    peer: SocketAddr,
    /// The server's settings for every session, with its engine and counters.
    shared: Arc<SessionConfig>,
    config: Arc<TcpServerConfig>,
    stop: ServerHandle,
    guard: SlotGuard,
}

impl ConnThread {
    fn run<U: Upgrade>(self, stream: SharedStream, upgrade: &U) {
        let peer = self.peer;
        debug!(%peer, "connection opened");
        // Accepted sockets inherit non-blocking mode from the listener on some systems.
        let tcp = stream.tcp();
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
/// timeout; the server wakes them (see [`Slot::state`]).
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
        // deadlines passed by now (a buffer release among them) count first.
        session.handle(now, Input::Timeout);
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

/// Binds `config.address` and serves `engine` on the calling thread until
/// the process ends or the server fails (pymodbus `StartTcpServer`). To stop
/// it from elsewhere, build a [`TcpServer::with_handle`] and keep the handle,
/// or use [`start_tcp_server_in_background`].
pub fn start_tcp_server(engine: Arc<Engine>, config: TcpServerConfig) -> Result<(), ServerError> {
    TcpServer::new(engine, config).serve_forever()
}

/// Binds `config.address` (the bind error, if any, is returned here) and
/// serves `engine` on a new thread; returns the handle that stops it
/// ([`ServerHandle::shutdown`] blocks until the server has returned).
pub fn start_tcp_server_in_background(
    engine: Arc<Engine>,
    config: TcpServerConfig,
) -> Result<ServerHandle, ServerError> {
    let server = TcpServer::new(engine, config);
    server.bind()?;
    let handle = server.handle();
    in_background("coilwork-tcp-accept", move || server.serve_forever())?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// A connected pair: (the server side in a slot, the client side).
    fn slot_pair(id: u64, state: u64) -> (Arc<Slot>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let slot = Arc::new(Slot {
            id,
            close: AtomicBool::new(false),
            socket: Arc::new(server),
            state: AtomicU64::new(state),
        });
        (slot, client)
    }

    /// Admits `slots` into `table`, in order.
    fn insert(table: &ConnTable, slots: [Arc<Slot>; 3]) {
        let stats = ServerStats::default();
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for slot in slots {
            let verdict = table.lock().admit(localhost, &stats, |_| slot);
            assert!(matches!(verdict, Verdict::Admit { evict: None, .. }));
        }
    }

    #[test]
    fn watchdog_wakes_only_the_reader_whose_deadline_passed_keeping_queued_bytes() {
        let table = Arc::new(ConnTable::new(AdmissionOptions::default()));
        let (due, mut due_client) = slot_pair(0, 0);
        let (later, _later_client) = slot_pair(1, table.nanos(Instant::now() + Duration::from_secs(60)));
        let (none, _none_client) = slot_pair(2, NO_DEADLINE);
        insert(&table, [Arc::clone(&due), Arc::clone(&later), Arc::clone(&none)]);
        due_client.write_all(&[7, 8, 9]).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let (t, d) = (Arc::clone(&table), Arc::clone(&done));
        let watchdog = std::thread::spawn(move || t.watch(Duration::from_millis(5), &d));
        let mut buf = [0u8; 8];
        // Blocks with no read timeout: the bytes queued first, then the wake's end of stream.
        let mut got = Vec::new();
        loop {
            let n = (&*due.socket).read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, [7, 8, 9]);
        assert_eq!(due.state.load(Ordering::Acquire), FIRED);
        std::thread::sleep(Duration::from_millis(30));
        assert_ne!(later.state.load(Ordering::Acquire), FIRED);
        assert_eq!(none.state.load(Ordering::Acquire), NO_DEADLINE);
        done.store(true, Ordering::Release);
        watchdog.thread().unpark();
        watchdog.join().unwrap();
        // The others were not shut down.
        later.socket.set_nonblocking(true).unwrap();
        let e = (&*later.socket).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
    }

    /// True if the server side of `slot` was shut for reading (a read returns 0 at once).
    fn shut_for_reading(slot: &Slot) -> bool {
        slot.socket.set_nonblocking(true).unwrap();
        let r = (&*slot.socket).read(&mut [0u8; 4]);
        slot.socket.set_nonblocking(false).unwrap();
        matches!(r, Ok(0))
    }

    #[test]
    fn stop_and_eviction_wake_only_threads_in_a_read() {
        let table = ConnTable::new(AdmissionOptions::default());
        let (reading, _c1) = slot_pair(0, NO_DEADLINE);
        let (waiting, _c2) = slot_pair(1, table.nanos(Instant::now() + Duration::from_secs(60)));
        let (busy, _c3) = slot_pair(2, BUSY);
        insert(&table, [Arc::clone(&reading), Arc::clone(&waiting), Arc::clone(&busy)]);
        table.wake_for_stop();
        assert!(table.stopping.load(Ordering::SeqCst));
        assert!(shut_for_reading(&reading));
        assert!(shut_for_reading(&waiting));
        // A thread writing (perhaps blocked on a client that does not read)
        // is not disturbed: it sees the stop before its next read.
        assert!(!shut_for_reading(&busy));
        busy.state.store(NO_DEADLINE, Ordering::SeqCst);
        busy.wake_if_reading();
        assert!(shut_for_reading(&busy));
    }

    #[test]
    fn slot_deadlines_never_collide_with_the_markers() {
        let table = ConnTable::new(AdmissionOptions::default());
        assert_eq!(table.nanos(table.epoch), 0);
        assert_eq!(table.nanos(table.epoch + Duration::from_nanos(1500)), 1500);
        // 600 years: past what u64 nanoseconds hold.
        let far = table
            .epoch
            .checked_add(Duration::from_secs(600 * 365 * 86_400))
            .unwrap();
        assert_eq!(table.nanos(far), LAST_DEADLINE);
        let earlier = table.epoch.checked_sub(Duration::from_millis(1));
        if let Some(t) = earlier {
            assert_eq!(table.nanos(t), 0);
        }
    }
}
