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
//! [`Connection`] with the current time, and writes everything the connection
//! queued in one write: several requests in one read are answered in one
//! write (pipelining).

use crate::ServerError;
use crate::handle::ServerHandle;
use crate::net::{self, SocketOptions};
use async_io::{Async, Timer};
use coilwork_core::connection::DEFAULT_MAX_BUFFERED;
use coilwork_core::{
    Connection, ConnectionConfig, Engine, Expired, Framing, StreamTimeoutConfig, StreamTimeouts, Transport,
};
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// What to do with a new client when `max_connections` are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Close the new connection at once (default).
    #[default]
    RefuseNew,
    /// Close the oldest connection and take the new one.
    EvictOldest,
}

/// Settings of a [`TcpServer`]; `Default` gives pymodbus-like defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpServerConfig {
    /// Address to listen on (default `127.0.0.1:502`).
    pub address: SocketAddr,
    /// Framing on the stream: MBAP (default), or RTU / ASCII over TCP.
    pub framing: Framing,
    /// Listen backlog (default 20).
    pub backlog: u32,
    /// Set `SO_REUSEADDR` (default on, so a restart can bind at once).
    pub allow_reuse_address: bool,
    /// Set `SO_REUSEPORT` where the OS has it (default off).
    pub allow_reuse_port: bool,
    /// Most connections open at once (default 1000).
    pub max_connections: usize,
    /// What happens to a client past `max_connections`.
    pub overflow: OverflowPolicy,
    /// If set, only these client IPs are served; others are closed at once.
    pub allow_list: Option<Vec<IpAddr>>,
    /// Close a connection that sent nothing for this long (default: never).
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose partial frame is not completed within this
    /// long of its first byte (default 5 s).
    pub partial_frame_timeout: Option<Duration>,
    /// Cap on unframed bytes held per connection; past it the connection is closed.
    pub max_buffered: usize,
    /// Size of the per-connection read buffer (default 4 KiB).
    pub read_buffer_size: usize,
    /// Free a connection's buffers after it was quiet this long (default 1 s).
    pub release_buffers_after: Duration,
    /// On shutdown, how long connections get to finish before they are cut (default 5 s).
    pub shutdown_timeout: Duration,
    /// Set `TCP_NODELAY` on accepted connections (default on: answers go out at once).
    pub nodelay: bool,
}

impl Default for TcpServerConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), crate::MODBUS_PORT),
            framing: Framing::Mbap,
            backlog: 20,
            allow_reuse_address: true,
            allow_reuse_port: false,
            max_connections: 1000,
            overflow: OverflowPolicy::RefuseNew,
            allow_list: None,
            idle_timeout: None,
            partial_frame_timeout: Some(Duration::from_secs(5)),
            max_buffered: DEFAULT_MAX_BUFFERED,
            read_buffer_size: 4096,
            release_buffers_after: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(5),
            nodelay: true,
        }
    }
}

impl TcpServerConfig {
    /// Defaults, listening on `address`.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            ..Self::default()
        }
    }
}

/// Counters of a [`TcpServer`].
#[derive(Debug, Default)]
pub struct TcpStats {
    accepted: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    bad_frames: AtomicU64,
    partial_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    active: AtomicU64,
    handshake_failures: AtomicU64,
}

impl TcpStats {
    /// Connections accepted and served.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Connections closed at once (allow-list, `max_connections` with `RefuseNew`).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Connections closed to make room (`EvictOldest`).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
    /// Connections closed because the stream could never be valid again.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.load(Ordering::Relaxed)
    }
    /// Connections closed by the partial-frame timeout.
    pub fn partial_timeouts(&self) -> u64 {
        self.partial_timeouts.load(Ordering::Relaxed)
    }
    /// Connections closed by the idle timeout.
    pub fn idle_timeouts(&self) -> u64 {
        self.idle_timeouts.load(Ordering::Relaxed)
    }
    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
    /// TLS only: connections closed before serving because the handshake
    /// failed, timed out, or the client certificate's role was invalid.
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }
}

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

/// Asks one connection to close: eviction or server stop (raised once).
///
/// Per connection, so a connection polls a cache line of its own (an atomic
/// and an [`AtomicWaker`]), not a lock every connection shares.
#[derive(Debug, Default)]
struct Cut {
    why: AtomicU8,
    waker: AtomicWaker,
}

impl Cut {
    const EVICT: u8 = 1;
    const STOP: u8 = 2;

    /// Raises the request (the first reason wins) and wakes the connection.
    fn raise(&self, why: u8) {
        let _ = self.why.compare_exchange(0, why, Ordering::AcqRel, Ordering::Acquire);
        self.waker.wake();
    }

    /// The reason, once raised.
    fn get(&self) -> Option<Close> {
        match self.why.load(Ordering::Acquire) {
            Self::EVICT => Some(Close::Evicted),
            Self::STOP => Some(Close::Shutdown),
            _ => None,
        }
    }

    /// Ready with the reason once raised.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<Close> {
        if let Some(why) = self.get() {
            return Poll::Ready(why);
        }
        self.waker.register(cx.waker());
        self.get().map_or(Poll::Pending, Poll::Ready)
    }
}

/// Open connections by id (ids grow, so the first is the oldest), each with
/// the switch that closes it. A map: a close removes in O(log n).
type ConnTable = Mutex<BTreeMap<u64, Arc<Cut>>>;

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
        let listener = net::tcp_listener(&opts, self.config.backlog)?;
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
        let table: ConnTable = Mutex::new(BTreeMap::new());
        // Declared after `table`, so dropped before it: the futures borrow it.
        let mut conns = FuturesUnordered::new();
        let mut next_id: u64 = 0;
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
                    for cut in table.lock().unwrap_or_else(PoisonError::into_inner).values() {
                        cut.raise(Cut::STOP);
                    }
                    break;
                }
                Event::Accepted(Ok((stream, peer))) => {
                    if let Some(cut) = self.admit(&table, next_id, peer) {
                        conns.push(self.connection(&table, next_id, peer, stream, cut, upgrade));
                    }
                    next_id = next_id.wrapping_add(1);
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

    /// Decides whether a new client is served; returns its close switch if so.
    fn admit(&self, table: &ConnTable, id: u64, peer: SocketAddr) -> Option<Arc<Cut>> {
        if !net::allowed(self.config.allow_list.as_deref(), peer.ip()) {
            debug!(%peer, "refused: not in the allow-list");
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut open = table.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.config.max_connections {
            match self.config.overflow {
                OverflowPolicy::RefuseNew => {
                    debug!(%peer, max = self.config.max_connections, "refused: too many connections");
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                OverflowPolicy::EvictOldest => {
                    if let Some((_, oldest)) = open.pop_first() {
                        oldest.raise(Cut::EVICT);
                        self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    if open.len() >= self.config.max_connections {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                }
            }
        }
        let cut = Arc::new(Cut::default());
        open.insert(id, Arc::clone(&cut));
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        Some(cut)
    }

    /// One accepted TCP connection, from accept to close.
    async fn connection<U: Upgrade>(
        &self,
        table: &ConnTable,
        id: u64,
        peer: SocketAddr,
        stream: Async<TcpStream>,
        cut: Arc<Cut>,
        upgrade: &U,
    ) {
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
            async { Err(future::poll_fn(|cx| cut.poll(cx)).await) },
        )
        .await;
        let reason = match upgraded {
            Ok((mut stream, role)) => {
                let ctx = StreamCtx {
                    engine: &self.engine,
                    config: &self.config,
                    stats: &self.stats,
                    cut: &cut,
                    peer,
                    transport: U::TRANSPORT,
                };
                serve_stream(&ctx, &mut stream, role).await
            }
            Err(reason) => {
                if reason == Close::Refused {
                    self.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                }
                reason
            }
        };
        debug!(%peer, ?reason, "connection closed");
    }
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
            .remove(&self.id);
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
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

/// What a connection loop needs from its server.
struct StreamCtx<'a> {
    engine: &'a Arc<Engine>,
    config: &'a TcpServerConfig,
    stats: &'a TcpStats,
    cut: &'a Cut,
    peer: SocketAddr,
    transport: Transport,
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

/// A connection's protocol state: made (boxed) on its first byte, so an
/// idle connection does not carry it.
fn new_connection(ctx: &StreamCtx<'_>, tls_role: &mut Option<String>) -> Box<Connection> {
    Box::new(Connection::new(
        Arc::clone(ctx.engine),
        ConnectionConfig {
            max_buffered: ctx.config.max_buffered,
            tls_role: tls_role.take(),
            ..ConnectionConfig::stream(ctx.config.framing, ctx.transport, Some(ctx.peer))
        },
    ))
}

/// What ended a wait of the connection loop.
enum Event {
    Cut(Close),
    Read(std::io::Result<usize>),
    Timer,
}

async fn serve_loop<S: ServedStream>(ctx: &StreamCtx<'_>, stream: &mut S, mut tls_role: Option<String>) -> Close {
    let cfg = ctx.config;
    let mut conn: Option<Box<Connection>> = None;
    // Boxed when first armed; `armed` is where it is set. It is kept at or
    // before the earliest deadline and re-armed only when it fires early, so
    // a request does not move it in async-io's timer queue.
    let mut timer: Option<Box<Timer>> = None;
    let mut armed: Option<Instant> = None;
    let mut buf: Vec<u8> = Vec::new();
    // The last read came back short (or would block): wait for readiness
    // before the next read. A new connection starts so, without a buffer.
    let mut drained = true;
    let mut timeouts = StreamTimeouts::new(
        StreamTimeoutConfig {
            partial_frame: cfg.partial_frame_timeout,
            idle: cfg.idle_timeout,
            release_buffers_after: cfg.release_buffers_after,
        },
        Instant::now(),
    );

    loop {
        if let Some(d) = timeouts.next_deadline()
            && armed.is_none_or(|a| a > d)
        {
            timer.get_or_insert_with(|| Box::new(Timer::never())).set_at(d);
            armed = Some(d);
        }
        let event = future::poll_fn(|cx| {
            if let Some(why) = ctx.cut.get() {
                return Poll::Ready(Event::Cut(why));
            }
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
            if let Poll::Ready(why) = ctx.cut.poll(cx) {
                return Poll::Ready(Event::Cut(why));
            }
            if armed.is_some()
                && let Some(t) = timer.as_mut()
                && Pin::new(&mut **t).poll(cx).is_ready()
            {
                return Poll::Ready(Event::Timer);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Cut(Close::Shutdown) => {
                drain(ctx, stream, &mut conn, &mut tls_role).await;
                return Close::Shutdown;
            }
            Event::Cut(why) => return why,
            Event::Read(Ok(0)) => return Close::PeerClosed,
            Event::Read(Err(e)) => {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                debug!(peer = %ctx.peer, error = %e, "read failed");
                return Close::IoError;
            }
            Event::Read(Ok(n)) => {
                let now = Instant::now();
                // A short read took everything there was.
                drained = n < buf.len();
                let conn = conn.get_or_insert_with(|| new_connection(ctx, &mut tls_role));
                let before = conn.buffered_len();
                let input = conn.handle_input(now, buf.get(..n).unwrap_or(&[]));
                timeouts.on_input(now, conn, before, n);
                if !drained && buf.len() < cfg.read_buffer_size {
                    // The buffer filled up: more is coming, read it in bigger gulps.
                    buf.resize(cfg.read_buffer_size, 0);
                }
                if conn.has_output() && write_output(stream, conn).await.is_err() {
                    return Close::IoError;
                }
                if let Err(e) = input {
                    debug!(peer = %ctx.peer, error = %e, "closing connection: bad frame");
                    ctx.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    return Close::BadFrame;
                }
            }
            Event::Timer => {
                armed = None;
                match timeouts.on_deadline(Instant::now()) {
                    Some(Expired::PartialFrame) => {
                        if let Some(conn) = conn.as_mut() {
                            debug!(peer = %ctx.peer, buffered = conn.buffered_len(), "partial frame timed out");
                            conn.discard_partial_frame();
                        }
                        ctx.stats.partial_timeouts.fetch_add(1, Ordering::Relaxed);
                        return Close::PartialTimeout;
                    }
                    Some(Expired::Idle) => {
                        ctx.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                        return Close::IdleTimeout;
                    }
                    Some(Expired::ReleaseBuffers) => {
                        if let Some(conn) = conn.as_mut() {
                            conn.release_idle_buffers();
                        }
                        buf = Vec::new();
                    }
                    // Fired early (re-armed at the next deadline).
                    None => {}
                }
            }
        }
    }
}

/// On graceful shutdown: answers what already reached the stream, without waiting for more.
async fn drain<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &StreamCtx<'_>,
    stream: &mut S,
    conn: &mut Option<Box<Connection>>,
    tls_role: &mut Option<String>,
) {
    // On the heap: this future is part of every connection's.
    let mut buf = vec![0u8; SMALL_READ];
    // Bounded: at most this many reads of what is already there. `poll_once`
    // polls the read once: async-io tries the read before waiting, so this
    // takes what is queued and never waits for more.
    for _ in 0..64 {
        match future::poll_once(stream.read(&mut buf)).await {
            Some(Ok(n)) if n > 0 => {
                let conn = conn.get_or_insert_with(|| new_connection(ctx, tls_role));
                let input = conn.handle_input(Instant::now(), buf.get(..n).unwrap_or(&[]));
                if input.is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
    if let Some(conn) = conn.as_mut()
        && conn.has_output()
        && write_output(stream, conn).await.is_err()
    {
        debug!(peer = %ctx.peer, "could not write the last answers");
    }
}

/// Writes everything queued in one write call.
async fn write_output<S: AsyncWrite + Unpin>(stream: &mut S, conn: &mut Connection) -> std::io::Result<()> {
    let out = conn.output();
    let n = out.len();
    stream.write_all(out).await?;
    stream.flush().await?;
    conn.consume_output(n);
    Ok(())
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
        let table: ConnTable = Mutex::new(BTreeMap::new());
        let cut = Arc::new(Cut::default());
        let fut = server.connection(&table, 0, peer, stream, cut, &PlainTcp);
        let size = std::mem::size_of_val(&fut);
        println!("connection future: {size} bytes");
        assert!(size <= 1024, "connection future is {size} bytes");
        drop(fut);
        drop(client);
    }

    #[test]
    fn a_cut_keeps_its_first_reason() {
        let cut = Cut::default();
        assert_eq!(cut.get(), None);
        cut.raise(Cut::EVICT);
        cut.raise(Cut::STOP);
        assert_eq!(cut.get(), Some(Close::Evicted));
        let waker = futures_util::task::noop_waker();
        assert_eq!(cut.poll(&mut Context::from_waker(&waker)), Poll::Ready(Close::Evicted));
    }
}
