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
use crate::handle::{ServerHandle, Signal};
use crate::net::{self, SocketOptions};
use async_io::{Async, Timer};
use coilwork_core::connection::DEFAULT_MAX_BUFFERED;
use coilwork_core::{Connection, ConnectionConfig, Engine, Framing, Transport};
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use std::future::Future;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
    type Stream: AsyncRead + AsyncWrite + Unpin + Send;
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

/// Open connections, oldest first, each with the signal that evicts it.
type ConnTable = Mutex<VecDeque<(u64, Arc<Signal>)>>;

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
        let table: ConnTable = Mutex::new(VecDeque::new());
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
                Event::Stop => break,
                Event::Accepted(Ok((stream, peer))) => {
                    if let Some(evict) = self.admit(&table, next_id, peer) {
                        conns.push(self.connection(&table, next_id, peer, stream, evict, upgrade));
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

    /// Decides whether a new client is served; returns its eviction signal if so.
    fn admit(&self, table: &ConnTable, id: u64, peer: SocketAddr) -> Option<Arc<Signal>> {
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
                    if let Some((_, oldest)) = open.pop_front() {
                        oldest.raise();
                        self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    if open.len() >= self.config.max_connections {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                }
            }
        }
        let evict = Arc::new(Signal::default());
        open.push_back((id, Arc::clone(&evict)));
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        Some(evict)
    }

    /// One accepted TCP connection, from accept to close.
    async fn connection<U: Upgrade>(
        &self,
        table: &ConnTable,
        id: u64,
        peer: SocketAddr,
        stream: Async<TcpStream>,
        evict: Arc<Signal>,
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
        let stop = self.handle.stop_signal();
        // The upgrade first: plain TCP's is ready at once, so a stop that
        // comes now still drains (in `serve_stream`), as for any open connection.
        let upgraded = future::or(
            async { upgrade.upgrade(stream, peer).await.ok_or(Close::Refused) },
            future::or(
                async {
                    evict.raised().await;
                    Err(Close::Evicted)
                },
                async {
                    stop.raised().await;
                    Err(Close::Shutdown)
                },
            ),
        )
        .await;
        let reason = match upgraded {
            Ok((mut stream, role)) => {
                let ctx = StreamCtx {
                    engine: &self.engine,
                    config: &self.config,
                    stats: &self.stats,
                    stop,
                    evict: &evict,
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
            .retain(|(id, _)| *id != self.id);
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
    stop: &'a Signal,
    evict: &'a Signal,
    peer: SocketAddr,
    transport: Transport,
}

/// Reads at most this much into the stack buffer used while no heap buffer is held.
const SMALL_READ: usize = 512;

/// Serves one byte stream (TCP or TLS) until it closes; on a graceful
/// stop, answers what already arrived and closes the write side (for TLS:
/// `close_notify`, then the socket's write side).
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &StreamCtx<'_>,
    stream: &mut S,
    tls_role: Option<String>,
) -> Close {
    let reason = serve_loop(ctx, stream, tls_role).await;
    if matches!(reason, Close::Shutdown) {
        let _ = stream.close().await;
    }
    reason
}

async fn serve_loop<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &StreamCtx<'_>,
    stream: &mut S,
    tls_role: Option<String>,
) -> Close {
    let cfg = ctx.config;
    let mut conn = Connection::new(
        Arc::clone(ctx.engine),
        ConnectionConfig {
            max_buffered: cfg.max_buffered,
            tls_role,
            ..ConnectionConfig::stream(cfg.framing, ctx.transport, Some(ctx.peer))
        },
    );
    // Taken once: the signals are one-shot, so these stay valid for the whole connection.
    let Some(mut evict_l) = ctx.evict.listener() else {
        return Close::Evicted;
    };
    let Some(mut stop_l) = ctx.stop.listener() else {
        drain(ctx, stream, &mut conn).await;
        return Close::Shutdown;
    };
    let mut timer = Timer::never();
    let mut buf: Vec<u8> = Vec::new();
    let mut small = [0u8; SMALL_READ];
    let mut last_rx = Instant::now();
    let mut partial_since: Option<Instant> = None;
    let mut holding = false;

    enum Event {
        Evict,
        Stop,
        Read(std::io::Result<usize>),
        Timer,
    }
    loop {
        let partial_deadline = partial_since.zip(cfg.partial_frame_timeout).map(|(t, d)| t + d);
        let idle_deadline = cfg.idle_timeout.map(|d| last_rx + d);
        let release_deadline = holding.then(|| last_rx + cfg.release_buffers_after);
        let deadline = [partial_deadline, idle_deadline, release_deadline]
            .into_iter()
            .flatten()
            .min();
        if let Some(d) = deadline {
            timer.set_at(d);
        }
        let target: &mut [u8] = if buf.is_empty() { &mut small } else { &mut buf };
        let target_len = target.len();
        let event = future::or(
            async {
                (&mut evict_l).await;
                Event::Evict
            },
            future::or(
                async {
                    (&mut stop_l).await;
                    Event::Stop
                },
                future::or(async { Event::Read(stream.read(target).await) }, async {
                    if deadline.is_some() {
                        (&mut timer).await;
                        Event::Timer
                    } else {
                        future::pending().await
                    }
                }),
            ),
        )
        .await;
        match event {
            Event::Evict => return Close::Evicted,
            Event::Stop => {
                drain(ctx, stream, &mut conn).await;
                return Close::Shutdown;
            }
            Event::Read(Ok(0)) => return Close::PeerClosed,
            Event::Read(Err(e)) => {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                debug!(peer = %ctx.peer, error = %e, "read failed");
                return Close::IoError;
            }
            Event::Read(Ok(n)) => {
                last_rx = Instant::now();
                holding = true;
                let before = conn.buffered_len();
                let data = if buf.is_empty() { small.get(..n) } else { buf.get(..n) };
                let input = conn.handle_input(last_rx, data.unwrap_or(&[]));
                if buf.is_empty() && n == target_len {
                    // The stack buffer filled up: more is coming, read it in bigger gulps.
                    buf.resize(cfg.read_buffer_size.max(1), 0);
                }
                let answered = conn.has_output();
                if answered && write_output(stream, &mut conn).await.is_err() {
                    return Close::IoError;
                }
                if let Err(e) = input {
                    debug!(peer = %ctx.peer, error = %e, "closing connection: bad frame");
                    ctx.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    return Close::BadFrame;
                }
                if !conn.has_partial_frame() {
                    partial_since = None;
                } else if partial_since.is_none() || answered || conn.buffered_len() < before.saturating_add(n) {
                    // A new partial frame starts (older frames were used up).
                    partial_since = Some(last_rx);
                }
            }
            Event::Timer => {
                let now = Instant::now();
                if partial_deadline.is_some_and(|d| d <= now) {
                    debug!(peer = %ctx.peer, buffered = conn.buffered_len(), "partial frame timed out");
                    conn.discard_partial_frame();
                    ctx.stats.partial_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Close::PartialTimeout;
                }
                if idle_deadline.is_some_and(|d| d <= now) {
                    ctx.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Close::IdleTimeout;
                }
                if release_deadline.is_some_and(|d| d <= now) {
                    conn.release_idle_buffers();
                    buf = Vec::new();
                    holding = false;
                }
            }
        }
    }
}

/// On graceful shutdown: answers what already reached the stream, without waiting for more.
async fn drain<S: AsyncRead + AsyncWrite + Unpin>(ctx: &StreamCtx<'_>, stream: &mut S, conn: &mut Connection) {
    let mut buf = [0u8; SMALL_READ];
    // Bounded: at most this many reads of what is already there. `poll_once`
    // polls the read once: async-io tries the read before waiting, so this
    // takes what is queued and never waits for more.
    for _ in 0..64 {
        match future::poll_once(stream.read(&mut buf)).await {
            Some(Ok(n)) if n > 0 => {
                let input = conn.handle_input(Instant::now(), buf.get(..n).unwrap_or(&[]));
                if input.is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
    if conn.has_output() && write_output(stream, conn).await.is_err() {
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
