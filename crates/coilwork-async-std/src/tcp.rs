//! Modbus/TCP server, driven without spawning.
//!
//! [`TcpServer::serve_forever`] runs the accept loop and every connection
//! future itself (in a [`FuturesUnordered`]), so it needs no executor and no
//! spawner: any `block_on` or task of async-std, smol or `futures-lite` can
//! drive it. Sockets and timers come from [`async_io`]; the connection loop is
//! generic over the `futures-io` [`AsyncRead`] + [`AsyncWrite`] traits, so the
//! TLS server (`tls` module) serves its streams with the same loop after a
//! handshake step (`Upgrade`) that plain TCP does not need.
//!
//! Each connection reads into a reused buffer (allocated when a large read
//! needs it, freed again after a quiet spell), feeds the bytes to its
//! [`Session`] with the current time, and writes everything the session
//! queued in one write: several requests in one read are answered in one
//! write (pipelining). Only a hook's [`Delivery`](coilwork_core::Delivery)
//! (delay, split: fault injection) cuts the output into pieces with pauses
//! between them, made by a boxed writer on an async-io timer while the close
//! signal and the idle and partial-frame deadlines are still watched: a stop
//! cuts a pause short and the drain writes the rest at once; an eviction or a
//! timeout closes the connection and drops the rest.

use crate::ServerError;
use crate::handle::ServerHandle;
use async_io::{Async, Timer};
use coilwork_core::close::{CloseReason, CloseSignal};
use coilwork_core::{
    Admission, AdmissionOptions, CloseCause, Engine, Input, Output, Overflow, ServerStats, Session, SessionConfig,
    SessionKind, StreamTimeoutConfig, Transport, Verdict,
};
use coilwork_net::SocketOptions;
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// What to do with a new client when `max_connections` are open.
pub type OverflowPolicy = Overflow;

/// Settings of a [`TcpServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::TcpServerConfig;

/// Counters of a [`TcpServer`] (and of a TLS server, with its handshake failures).
pub type TcpStats = ServerStats;

/// The step between accept and serving: nothing for TCP, the handshake
/// and role check for TLS.
pub(crate) trait Upgrade: Sync {
    /// The stream served after the step.
    type Stream: ServedStream;
    /// The transport the engine is told about.
    const TRANSPORT: Transport;
    /// The server's name in logs.
    const NAME: &'static str;
    /// The served stream and the client's role, or `None` to close the
    /// connection (counted as a handshake failure).
    fn upgrade(
        &self,
        stream: Async<TcpStream>,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<(Self::Stream, Option<String>)>> + Send;
}

/// Plain Modbus/TCP: served as accepted.
struct PlainTcp;

impl Upgrade for PlainTcp {
    type Stream = Async<TcpStream>;
    const TRANSPORT: Transport = Transport::Tcp;
    const NAME: &'static str = "modbus tcp";

    fn upgrade(
        &self,
        stream: Async<TcpStream>,
        _peer: SocketAddr,
    ) -> impl Future<Output = Option<(Self::Stream, Option<String>)>> + Send {
        future::ready(Some((stream, None)))
    }
}

/// A byte stream a connection loop serves.
pub(crate) trait ServedStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Polls until the stream may have bytes to read. The loop calls it
    /// before reading once a read came back short (the socket is drained),
    /// so it does not pay a read that only says "would block". Streams that
    /// cannot tell (TLS) are always ready: the read itself waits.
    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl ServedStream for Async<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_readable(cx)
    }
}

/// Open connections by id (ids grow, so the first is the oldest), each with
/// the signal that closes it. A map: a close removes in O(log n). Per
/// connection, so a waiting connection loads an atomic of its own, not a
/// lock every connection shares.
type ConnTable = Mutex<Admission<Arc<CloseSignal>>>;

/// A Modbus/TCP server over an [`Engine`], for async-std, smol or any executor.
///
/// [`TcpServer::new`] does not bind (pymodbus `defer_start`):
/// [`TcpServer::bind`] or [`TcpServer::serve_forever`] does.
#[derive(Debug)]
pub struct TcpServer {
    engine: Arc<Engine>,
    config: Arc<TcpServerConfig>,
    listener: Mutex<Option<std::net::TcpListener>>,
    serving: AtomicBool,
    handle: ServerHandle,
    stats: Arc<TcpStats>,
}

impl TcpServer {
    /// A server for `engine`; nothing is bound yet.
    pub fn new(engine: Arc<Engine>, config: TcpServerConfig) -> Self {
        Self {
            engine,
            config: Arc::new(config),
            listener: Mutex::new(None),
            serving: AtomicBool::new(false),
            handle: ServerHandle::new(),
            stats: Arc::new(TcpStats::default()),
        }
    }

    /// Binds and listens now (idempotent); returns the address bound (useful with port 0).
    pub fn bind(&self) -> Result<SocketAddr, ServerError> {
        if self.handle.is_stopping() {
            return Err(ServerError::Closed);
        }
        if let Some(addr) = self.handle.local_addr() {
            return Ok(addr);
        }
        let opts = SocketOptions {
            addr: self.config.address,
            reuse_address: self.config.allow_reuse_address,
            reuse_port: self.config.allow_reuse_port,
        };
        let listener = coilwork_net::tcp_listener(&opts, self.config.backlog)?;
        let addr = listener.local_addr()?;
        *self.listener.lock().unwrap_or_else(PoisonError::into_inner) = Some(listener);
        self.handle.set_local_addr(addr);
        Ok(addr)
    }

    /// The bound address, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.handle.local_addr()
    }

    /// A handle to stop this server from anywhere.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
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

    /// Binds if needed and serves until stopped; returns once every
    /// connection is closed (at once, with `Ok`, if a stop came first).
    ///
    /// This future drives the listener and all connections itself; it is
    /// `Send`, so it can also be handed to `smol::spawn` or
    /// `async_std::task::spawn` (inside an `Arc<TcpServer>`).
    pub async fn serve_forever(&self) -> Result<(), ServerError> {
        self.serve_with(&PlainTcp).await
    }

    /// `serve_forever` with an upgrade step on each accepted connection.
    pub(crate) async fn serve_with<U: Upgrade>(&self, upgrade: &U) -> Result<(), ServerError> {
        if self.serving.swap(true, Ordering::AcqRel) {
            return Err(ServerError::AlreadyServing);
        }
        let result = self.run(upgrade).await;
        self.handle.mark_stopped();
        result
    }

    /// Graceful stop: stops accepting, answers requests already received,
    /// closes the connections, and returns once `serve_forever` has returned.
    pub async fn shutdown(&self) {
        self.handle.stop();
        if self.serving.load(Ordering::Acquire) {
            self.handle.stopped().await;
        } else {
            self.server_close();
        }
    }

    /// Stops the server and releases the listening socket if it is not serving yet.
    pub fn server_close(&self) {
        self.handle.stop();
        let listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(listener);
        if !self.serving.load(Ordering::Acquire) {
            self.handle.mark_stopped();
        }
    }

    async fn run<U: Upgrade>(&self, upgrade: &U) -> Result<(), ServerError> {
        if self.handle.is_stopping() {
            // Stopped before it started: nothing to serve.
            return Ok(());
        }
        match self.bind() {
            // `server_close` raced us: closed before serving.
            Err(ServerError::Closed) => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let Some(std_listener) = self.listener.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            // `server_close` took it: closed before serving.
            return Ok(());
        };
        let listener = Async::new(std_listener)?;
        let stop = self.handle.stop_signal();
        let c = &*self.config;
        let table: ConnTable = Mutex::new(Admission::new(AdmissionOptions {
            max_connections: c.max_connections,
            overflow: c.overflow,
            allow_list: c.allow_list.clone(),
        }));
        let shared = Arc::new(self.session_config(U::TRANSPORT));
        // Declared after `table`, so dropped before it: the futures borrow it.
        let mut conns = FuturesUnordered::new();
        debug!(addr = ?self.handle.local_addr(), "{} server listening", U::NAME);

        enum Event {
            Stop,
            Accepted(std::io::Result<(Async<TcpStream>, SocketAddr)>),
        }
        loop {
            // Connections first, so a stream of new clients cannot starve them.
            let drive = async {
                while conns.next().await.is_some() {}
                future::pending::<Event>().await
            };
            let stopped = async {
                stop.raised().await;
                Event::Stop
            };
            let accept = async { Event::Accepted(listener.accept().await) };
            match future::or(drive, future::or(stopped, accept)).await {
                Event::Stop => {
                    // Every open connection drains and closes (admitted ones only: no more accepts).
                    for signal in table.lock().unwrap_or_else(PoisonError::into_inner).open() {
                        signal.raise(CloseReason::Stop);
                    }
                    break;
                }
                Event::Accepted(Ok((stream, peer))) => {
                    if let Some((id, signal)) = self.admit(&table, peer) {
                        let ctx = ConnCtx {
                            table: &table,
                            shared: &shared,
                            id,
                            peer,
                            signal,
                        };
                        conns.push(self.connection(ctx, stream, upgrade));
                    }
                }
                Event::Accepted(Err(e)) => {
                    warn!(error = %e, "accept failed");
                    if !is_per_connection_error(&e) {
                        // Out of descriptors or memory: do not spin (connections go on meanwhile).
                        let pause = Timer::after(Duration::from_millis(50));
                        let drive = async {
                            while conns.next().await.is_some() {}
                            future::pending::<()>().await
                        };
                        future::or(drive, async {
                            pause.await;
                        })
                        .await;
                    }
                }
            }
        }
        drop(listener);
        let drained = future::or(
            async {
                while conns.next().await.is_some() {}
                true
            },
            async {
                Timer::after(self.config.shutdown_timeout).await;
                false
            },
        )
        .await;
        if !drained {
            warn!(open = conns.len(), "connections did not close in time; cutting them");
        }
        drop(conns);
        debug!("{} server stopped", U::NAME);
        Ok(())
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

    /// Asks the admission whether a new client is served; returns its id
    /// and close signal if so (raised by a stop or by its own eviction).
    fn admit(&self, table: &ConnTable, peer: SocketAddr) -> Option<(u64, Arc<CloseSignal>)> {
        let signal = Arc::new(CloseSignal::new());
        let verdict = table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(peer.ip(), &self.stats, |_| Arc::clone(&signal));
        match verdict {
            Verdict::Admit { id, evict } => {
                if let Some(oldest) = evict {
                    oldest.raise(CloseReason::Evict);
                }
                Some((id, signal))
            }
            Verdict::Refuse(why) => {
                debug!(%peer, ?why, "refused");
                None
            }
        }
    }

    /// One accepted TCP connection, from accept to close.
    async fn connection<U: Upgrade>(&self, ctx: ConnCtx<'_>, stream: Async<TcpStream>, upgrade: &U) {
        let ConnCtx {
            table,
            shared,
            id,
            peer,
            signal,
        } = ctx;
        // Leaves the table and the `active` count however the future ends (even when cut).
        let _entry = Entry {
            table,
            id,
            stats: &self.stats,
        };
        debug!(%peer, "connection opened");
        if self.config.nodelay {
            let _ = stream.get_ref().set_nodelay(true);
        }
        // The upgrade first: plain TCP's is ready at once, so a stop that
        // comes now still drains (in `serve_stream`), as for any open connection.
        let upgraded = future::or(
            async { upgrade.upgrade(stream, peer).await.ok_or(Close::Refused) },
            async { Err(Close::from(future::poll_fn(|cx| signal.poll(cx)).await)) },
        )
        .await;
        let reason = match upgraded {
            Ok((mut stream, role)) => {
                let ctx = StreamCtx {
                    shared,
                    config: &self.config,
                    signal: &signal,
                    id,
                    peer,
                };
                serve_stream(&ctx, &mut stream, role).await
            }
            Err(reason) => {
                if reason == Close::Refused {
                    self.stats.count_handshake_failure();
                }
                reason
            }
        };
        debug!(%peer, ?reason, "connection closed");
    }
}

/// What the accept loop hands a new connection.
struct ConnCtx<'a> {
    table: &'a ConnTable,
    shared: &'a Arc<SessionConfig>,
    id: u64,
    peer: SocketAddr,
    signal: Arc<CloseSignal>,
}

/// Removes a connection from the table when its future ends.
struct Entry<'a> {
    table: &'a ConnTable,
    id: u64,
    stats: &'a TcpStats,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(self.id, self.stats);
    }
}

/// Accept errors that concern one would-be connection only.
fn is_per_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted | ErrorKind::WouldBlock
    )
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    PeerClosed,
    Shutdown,
    Evicted,
    BadFrame,
    PartialTimeout,
    IdleTimeout,
    IoError,
    /// The upgrade (TLS handshake, role check) refused the connection.
    Refused,
}

impl From<CloseReason> for Close {
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::Stop => Self::Shutdown,
            CloseReason::Evict => Self::Evicted,
        }
    }
}

/// What a connection loop needs from its server.
struct StreamCtx<'a> {
    /// The server's settings for every session, with its engine and counters.
    shared: &'a Arc<SessionConfig>,
    config: &'a TcpServerConfig,
    signal: &'a CloseSignal,
    id: u64,
    peer: SocketAddr,
}

/// First size of a connection's read buffer (grown to `read_buffer_size`
/// when a read fills it).
const SMALL_READ: usize = 512;

/// Serves one byte stream (TCP or TLS) until it closes; on a graceful
/// stop, answers what already arrived and closes the write side (for TLS:
/// `close_notify`, then the socket's write side).
async fn serve_stream<S: ServedStream>(ctx: &StreamCtx<'_>, stream: &mut S, tls_role: Option<String>) -> Close {
    let reason = serve_loop(ctx, stream, tls_role).await;
    if matches!(reason, Close::Shutdown) {
        let _ = stream.close().await;
    }
    reason
}

/// What ended a wait of the connection loop.
enum Event {
    Close(CloseReason),
    Read(std::io::Result<usize>),
    Timer,
}

async fn serve_loop<S: ServedStream>(ctx: &StreamCtx<'_>, stream: &mut S, tls_role: Option<String>) -> Close {
    let cfg = ctx.config;
    // The session boxes its connection state on the first byte: an idle
    // connection does not carry it.
    let mut session = Session::new(Arc::clone(ctx.shared), Instant::now(), ctx.id, Some(ctx.peer), tls_role);
    // Boxed when first armed; `armed` is where it is set. It is kept at or
    // before the earliest deadline and re-armed only when it fires early, so
    // a request does not move it in async-io's timer queue.
    let mut timer: Option<Box<Timer>> = None;
    let mut armed: Option<Instant> = None;
    let mut buf: Vec<u8> = Vec::new();
    // The last read came back short (or would block): wait for readiness
    // before the next read. A new connection starts so, without a buffer.
    let mut drained = true;
    // The task's waker as last registered with the close signal and, through
    // a poll, with the timer: both keep it until it changes, so a wait
    // registers only on the first wait and when the waker changes.
    let mut registered: Option<Waker> = None;
    // The timer must be polled at the next wait (see the rule below).
    let mut check_timer = false;

    loop {
        let now = Instant::now();
        let deadline = match session.poll(now) {
            Output::Wait(deadline) => deadline,
            Output::Transmit(out) => {
                let written = transmit(stream, out, &mut check_timer).await;
                session.handle(Instant::now(), written.map_or(Input::Failed, Input::Sent));
                continue;
            }
            Output::Pause(until) => {
                // Boxed: only fault injection pauses; every connection's future does not grow for it.
                if let Some(why) = Box::pin(pause_until(ctx, until)).await {
                    session.handle(Instant::now(), input_for(why));
                }
                // The signal and the timer took this task's waker meanwhile.
                registered = None;
                check_timer = true;
                continue;
            }
            Output::ReleaseBuffers => {
                buf = Vec::new();
                continue;
            }
            Output::Discarded => continue,
            Output::ReadQueued => {
                if buf.is_empty() {
                    buf.resize(SMALL_READ, 0);
                }
                // `poll_once` polls the read once: async-io tries the read
                // before waiting, so this takes what is queued and never waits.
                match future::poll_once(stream.read(&mut buf)).await {
                    Some(Ok(n)) if n > 0 => session.handle(now, Input::Bytes(buf.get(..n).unwrap_or(&[]))),
                    _ => session.handle(now, Input::Eof),
                }
                continue;
            }
            Output::Close(cause) => return close_of(cause),
        };
        if arm(&mut timer, &mut armed, deadline) {
            // A fresh or fired timer is registered with no waker until polled.
            check_timer = true;
        }
        let mut woken = false;
        let event = future::poll_fn(|cx| {
            // One atomic load per poll; the raise also wakes the waker registered below.
            if let Some(reason) = ctx.signal.get() {
                return Poll::Ready(Event::Close(reason));
            }
            if registered.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
                // `register` also sees a raise that came since `get`.
                if let Some(reason) = ctx.signal.register(cx.waker()) {
                    return Poll::Ready(Event::Close(reason));
                }
                registered = Some(cx.waker().clone());
                check_timer = true;
            }
            // A second poll of this wait: something woke the task, maybe the timer.
            let repoll = std::mem::replace(&mut woken, true);
            if drained {
                match stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => drained = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::Read(Err(e))),
                    Poll::Pending => {}
                }
            }
            if !drained {
                if buf.is_empty() {
                    buf.resize(cfg.read_buffer_size.clamp(1, SMALL_READ), 0);
                }
                match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                    Poll::Ready(r) => return Poll::Ready(Event::Read(r)),
                    // The stream registered for readiness: consume it before the next read.
                    Poll::Pending => drained = true,
                }
            }
            // The timer rule. A timer that returned Pending keeps the waker of
            // that poll and wakes it when it fires, so while the waker is the
            // same it needs polling only when it may have fired and nothing
            // else noticed. It is polled when:
            // - it was just armed (async-io registers a fresh or fired timer
            //   on its next poll only) or the waker changed (above);
            // - this wait was woken and neither the signal nor the stream is
            //   ready: the wake may be the timer's;
            // - `check_timer` was left set by the last event: a read taken at
            //   or past the deadline (the timer may have fired and its wake
            //   gone to the poll that returned that read), or a write that
            //   had to wait (its polls may have taken the timer's wake).
            // Otherwise no poll (no clock read): a wait right after a request
            // costs one atomic load, one waker comparison and the stream's own poll.
            if (check_timer || repoll)
                && armed.is_some()
                && let Some(t) = timer.as_mut()
            {
                check_timer = false;
                if Pin::new(&mut **t).poll(cx).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
            }
            Poll::Pending
        })
        .await;
        let now = Instant::now();
        match event {
            Event::Close(why) => session.handle(now, input_for(why)),
            Event::Read(Ok(0)) => session.handle(now, Input::Eof),
            Event::Read(Err(e)) if e.kind() == ErrorKind::Interrupted => {
                // The wake that returned it may have been the timer's too.
                check_timer = true;
            }
            Event::Read(Err(e)) => {
                debug!(peer = %ctx.peer, error = %e, "read failed");
                session.handle(now, Input::Failed);
            }
            Event::Read(Ok(n)) => {
                if armed.is_some_and(|a| a <= now) {
                    check_timer = true;
                }
                // A short read took everything there was.
                drained = n < buf.len();
                session.handle(now, Input::Bytes(buf.get(..n).unwrap_or(&[])));
                if !drained && buf.len() < cfg.read_buffer_size {
                    // The buffer filled up: more is coming, read it in bigger gulps.
                    buf.resize(cfg.read_buffer_size, 0);
                }
            }
            Event::Timer => {
                armed = None;
                session.handle(now, Input::Timeout);
            }
        }
    }
}

/// Writes one piece of output and flushes it; the bytes written. Sets
/// `check_timer` if the write had to wait (its polls may have taken the
/// timer's wake).
async fn transmit<S: AsyncWrite + Unpin>(stream: &mut S, out: &[u8], check_timer: &mut bool) -> Option<usize> {
    let written = future::poll_fn(|cx| {
        loop {
            let poll = match Pin::new(&mut *stream).poll_write(cx, out) {
                Poll::Ready(Err(e)) if e.kind() == ErrorKind::Interrupted => continue,
                Poll::Ready(Ok(0)) => Poll::Ready(Err(ErrorKind::WriteZero.into())),
                other => other,
            };
            *check_timer |= poll.is_pending();
            return poll;
        }
    })
    .await
    .ok()?;
    let flushed = future::poll_fn(|cx| {
        let poll = Pin::new(&mut *stream).poll_flush(cx);
        *check_timer |= poll.is_pending();
        poll
    })
    .await;
    flushed.ok().map(|()| written)
}

/// Makes a pause a hook's delivery asked for: `None` once it is over, else
/// the signal that cut it short. Only the close signal ends it early: the
/// connection's deadlines wait for the answer (the server owes it).
async fn pause_until(ctx: &StreamCtx<'_>, until: Instant) -> Option<CloseReason> {
    let mut timer = Timer::at(until);
    future::poll_fn(|cx| {
        if let Poll::Ready(reason) = ctx.signal.poll(cx) {
            return Poll::Ready(Some(reason));
        }
        Pin::new(&mut timer).poll(cx).map(|_| None)
    })
    .await
}

/// Arms the connection's timer at `deadline` if it is not armed at or
/// before it (a fresh or fired timer registers on its next poll).
fn arm(timer: &mut Option<Box<Timer>>, armed: &mut Option<Instant>, deadline: Option<Instant>) -> bool {
    if let Some(d) = deadline
        && armed.is_none_or(|a| a > d)
    {
        timer.get_or_insert_with(|| Box::new(Timer::never())).set_at(d);
        *armed = Some(d);
        return true;
    }
    false
}

/// What the server's signal tells the session.
fn input_for(why: CloseReason) -> Input<'static> {
    match why {
        CloseReason::Stop => Input::Stop,
        CloseReason::Evict => Input::Evict,
    }
}

/// The adapter's name for the session's close.
fn close_of(cause: CloseCause) -> Close {
    match cause {
        CloseCause::PeerClosed => Close::PeerClosed,
        CloseCause::Stopped => Close::Shutdown,
        CloseCause::Evicted => Close::Evicted,
        CloseCause::BadFrame => Close::BadFrame,
        CloseCause::PartialTimeout => Close::PartialTimeout,
        CloseCause::IdleTimeout => Close::IdleTimeout,
        CloseCause::IoError => Close::IoError,
    }
}

/// Binds `config.address` now and serves `engine` on a thread of its own
/// (driven by `async_io::block_on`, so no runtime is needed); returns the
/// handle to stop it. The bind error, if any, is returned here.
pub fn start_tcp_server(engine: Arc<Engine>, config: TcpServerConfig) -> Result<ServerHandle, ServerError> {
    let server = TcpServer::new(engine, config);
    server.bind()?;
    let handle = server.handle();
    std::thread::Builder::new().name("coilwork-tcp".into()).spawn(move || {
        if let Err(e) = async_io::block_on(server.serve_forever()) {
            warn!(error = %e, "modbus tcp server failed");
        }
    })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coilwork_core::storage::{DeviceContext, ServerContext};

    /// Every open connection is one such future: idle, it must stay small
    /// (the per-connection memory goal is 2 KiB, socket and reactor entry included).
    #[test]
    fn an_idle_connection_future_stays_small() {
        let device = DeviceContext::with_sizes(10, 10, 10, 10).unwrap();
        let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
        let server = TcpServer::new(engine, TcpServerConfig::new("127.0.0.1:0".parse().unwrap()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let stream = Async::new(accepted).unwrap();
        let table: ConnTable = Mutex::new(Admission::new(AdmissionOptions::default()));
        let shared = Arc::new(server.session_config(Transport::Tcp));
        let signal = Arc::new(CloseSignal::new());
        let ctx = ConnCtx {
            table: &table,
            shared: &shared,
            id: 0,
            peer,
            signal,
        };
        let fut = server.connection(ctx, stream, &PlainTcp);
        let size = std::mem::size_of_val(&fut);
        println!("connection future: {size} bytes");
        assert!(size <= 1024, "connection future is {size} bytes");
        drop(fut);
        drop(client);
    }

    /// A stream the test feeds and blocks by hand.
    #[derive(Default)]
    struct Pipe {
        input: Vec<u8>,
        write_blocked: bool,
        written: Vec<u8>,
        reader: Option<Waker>,
        writer: Option<Waker>,
    }

    #[derive(Clone, Default)]
    struct MockStream(Arc<Mutex<Pipe>>);

    impl MockStream {
        fn feed(&self, bytes: &[u8]) {
            let mut pipe = self.0.lock().unwrap();
            pipe.input.extend_from_slice(bytes);
            if let Some(w) = pipe.reader.take() {
                w.wake();
            }
        }
        fn set_write_blocked(&self, blocked: bool) {
            let mut pipe = self.0.lock().unwrap();
            pipe.write_blocked = blocked;
            if let Some(w) = pipe.writer.take() {
                w.wake();
            }
        }
    }

    impl AsyncRead for MockStream {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
            let mut pipe = self.0.lock().unwrap();
            if pipe.input.is_empty() {
                pipe.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = pipe.input.len().min(buf.len());
            buf[..n].copy_from_slice(&pipe.input[..n]);
            pipe.input.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for MockStream {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let mut pipe = self.0.lock().unwrap();
            if pipe.write_blocked {
                pipe.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            pipe.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl ServedStream for MockStream {}

    struct ThreadWaker(std::thread::Thread, Arc<AtomicBool>);
    impl std::task::Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.1.store(true, Ordering::SeqCst);
            self.0.unpark();
        }
    }

    /// FC3, one register at 0, unit 1.
    const READ_ONE: [u8; 12] = [0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1];
    const IDLE: Duration = Duration::from_millis(100);

    fn engine() -> Arc<Engine> {
        let device = DeviceContext::with_sizes(10, 10, 10, 10).unwrap();
        Arc::new(Engine::builder(ServerContext::single(device)).build())
    }

    /// What a connection loop borrows, owned by the test.
    struct Fixture {
        shared: Arc<SessionConfig>,
        config: TcpServerConfig,
        signal: CloseSignal,
    }

    impl Fixture {
        fn new(config: TcpServerConfig) -> Self {
            let server = TcpServer::new(engine(), config.clone());
            Self {
                shared: Arc::new(server.session_config(Transport::Tcp)),
                config,
                signal: CloseSignal::new(),
            }
        }

        fn ctx(&self) -> StreamCtx<'_> {
            StreamCtx {
                shared: &self.shared,
                config: &self.config,
                signal: &self.signal,
                id: 0,
                peer: "127.0.0.1:1".parse().unwrap(),
            }
        }
    }

    fn idle_config() -> TcpServerConfig {
        TcpServerConfig {
            idle_timeout: Some(IDLE),
            partial_frame_timeout: None,
            release_buffers_after: Duration::from_secs(60),
            ..TcpServerConfig::new("127.0.0.1:0".parse().unwrap())
        }
    }

    /// Polls `fut` with one waker (the same on every poll, as an executor's
    /// task has) until ready or `limit` passes; `between` runs after each
    /// pending poll, with that poll's number.
    fn run_with_one_waker<F: Future>(fut: F, limit: Duration, mut between: impl FnMut(usize)) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let woken = Arc::new(AtomicBool::new(false));
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current(), Arc::clone(&woken))));
        let mut cx = Context::from_waker(&waker);
        let end = Instant::now() + limit;
        for polls in 1.. {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return Some(out);
            }
            between(polls);
            // A poll only after a wake: `park` can return without one.
            while !woken.swap(false, Ordering::SeqCst) {
                let now = Instant::now();
                if now >= end {
                    return None;
                }
                std::thread::park_timeout(end - now);
            }
        }
        None
    }

    /// The idle timer fires while an answer's write waits: the wake goes to
    /// the write, and the wait after it must still see the timer.
    #[test]
    fn a_timer_that_fires_during_a_blocked_write_still_closes() {
        let fixture = Fixture::new(idle_config());
        let (ctx, stats) = (fixture.ctx(), &*fixture.shared.stats);
        let stream = MockStream::default();
        stream.set_write_blocked(true);
        let mut served = stream.clone();
        let out = run_with_one_waker(serve_stream(&ctx, &mut served, None), Duration::from_secs(3), |polls| {
            match polls {
                // The first wait found nothing and polled the timer: it holds the waker.
                1 => stream.feed(&READ_ONE),
                // The answer's write waits past the idle deadline; the timer's wake polls the write.
                2 => {
                    std::thread::sleep(3 * IDLE);
                    stream.set_write_blocked(false);
                }
                _ => {}
            }
        });
        assert_eq!(out, Some(Close::IdleTimeout));
        assert_eq!(stats.idle_timeouts(), 1);
        let written = stream.0.lock().unwrap().written.clone();
        assert_eq!(written, [0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 0]);
    }

    /// The timer fires while the connection waits, but the poll its wake
    /// brings finds a request too and returns it: the wait after must still
    /// look at the (fired) timer, or the idle timeout is lost.
    #[test]
    fn a_timer_wake_taken_by_a_read_is_not_lost() {
        let fixture = Fixture::new(idle_config());
        let (ctx, stats) = (fixture.ctx(), &*fixture.shared.stats);
        let stream = MockStream::default();
        let mut served = stream.clone();
        let t0 = Instant::now();
        let out = run_with_one_waker(serve_stream(&ctx, &mut served, None), Duration::from_secs(3), |polls| {
            if polls == 1 {
                // Past the deadline (the timer fires and wakes), then a request.
                std::thread::sleep(IDLE + Duration::from_millis(50));
                stream.feed(&READ_ONE);
            }
        });
        assert_eq!(out, Some(Close::IdleTimeout));
        assert!(t0.elapsed() >= 2 * IDLE, "closed {:?} after start", t0.elapsed());
        assert_eq!(stats.idle_timeouts(), 1);
        assert_eq!(stream.0.lock().unwrap().written.len(), 11);
    }

    #[test]
    fn a_raise_wakes_a_waiting_connection_that_registered_once() {
        let fixture = Fixture::new(TcpServerConfig {
            idle_timeout: None,
            ..idle_config()
        });
        let (ctx, signal) = (fixture.ctx(), &fixture.signal);
        let stream = MockStream::default();
        let mut served = stream.clone();
        let out = run_with_one_waker(
            serve_stream(&ctx, &mut served, None),
            Duration::from_secs(3),
            |polls| match polls {
                1 => stream.feed(&READ_ONE),
                _ => signal.raise(CloseReason::Evict),
            },
        );
        assert_eq!(out, Some(Close::Evicted));
        assert_eq!(stream.0.lock().unwrap().written.len(), 11);
    }

    #[test]
    fn close_reasons_map_to_stop_and_eviction() {
        assert_eq!(Close::from(CloseReason::Stop), Close::Shutdown);
        assert_eq!(Close::from(CloseReason::Evict), Close::Evicted);
    }
}
