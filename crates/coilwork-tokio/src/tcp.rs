//! Modbus/TCP server: one task per connection.
//!
//! Each connection task reads into a reused buffer (allocated on the first
//! read, freed again after a quiet spell), feeds the bytes to its
//! [`Session`] with the current time, and writes everything the session
//! queued in one write: several requests in one read are answered in one
//! write (pipelining). Timeouts (partial frame, idle) run on tokio timers.
//!
//! The per-connection loop is generic over the stream (`ConnStream`): the
//! TLS server ([`crate::tls`]) runs the same loop over a TLS stream, after an
//! `Upgrade` step (the handshake) that plain TCP does not need.

use crate::ServerError;
use crate::handle::ServerHandle;
use coilwork_core::{
    Admission, AdmissionOptions, CloseCause, CloseReason, CloseSignal, Engine, Input, Output, Overflow, ServerStats,
    Session, SessionConfig, SessionKind, StreamTimeoutConfig, Transport, Verdict,
};
use coilwork_net::SocketOptions;
use std::future::Future;
use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

/// What to do with a new client when `max_connections` are open.
pub type OverflowPolicy = Overflow;

/// Settings of a [`TcpServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::TcpServerConfig;

/// Counters of a [`TcpServer`] (and of a TLS server, with its handshake failures).
pub type TcpStats = ServerStats;

/// A stream one connection task serves: plain TCP, or TLS over TCP.
///
/// Requests are read with `AsyncRead::read`: on a socket, tokio takes a short
/// read as proof the socket is drained, so a request costs one `recv`, not a
/// second one that only says `EAGAIN`.
pub(crate) trait ConnStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Ready once a read can make progress (data, end of stream or an
    /// error), without a buffer: how a connection whose buffers were released
    /// waits.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
    /// After `poll_readable`: whether a read would really return something
    /// (bytes, end of stream or an error) without taking it; `WouldBlock`
    /// (readiness cleared) if the stream only looked readable.
    fn has_input(&mut self) -> std::io::Result<()>;
    /// On graceful shutdown: reads bytes that already reached the socket,
    /// without waiting; `Ok(0)` or an error when there is nothing more.
    fn read_received(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// True when a write needs no flush after it (a plain socket): answers
    /// are then first tried in one `poll_write` ([`write_now`]).
    const WRITES_THROUGH: bool = false;
}

impl ConnStream for TcpStream {
    const WRITES_THROUGH: bool = true;

    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn has_input(&mut self) -> std::io::Result<()> {
        // tokio reports a freshly registered socket readable before any byte
        // arrived; peek one byte so an idle connection gets no buffer.
        self.try_io(tokio::io::Interest::READABLE, || {
            let socket = socket2::SockRef::from(&*self);
            socket.peek(&mut [std::mem::MaybeUninit::uninit(); 1]).map(drop)
        })
    }

    fn read_received(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Read the socket directly: tokio's `try_read` trusts its cached
        // readiness and would skip bytes the reactor has not reported yet.
        let socket = socket2::SockRef::from(&*self);
        (&*socket).read(buf)
    }
}

/// Turns an accepted TCP stream into the stream a connection task serves.
pub(crate) trait Upgrade: Send + Sync + 'static {
    /// The stream served.
    type Stream: ConnStream + 'static;
    /// The transport the engine is told.
    const TRANSPORT: Transport;
    /// The server's name in log lines.
    const NAME: &'static str;
    /// The stream to serve and the client's TLS role, or `None` to close the
    /// connection (counted as a handshake failure).
    fn upgrade(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<(Self::Stream, Option<String>)>> + Send;
}

/// Plain Modbus/TCP: the accepted stream as it is.
struct PlainTcp;

impl Upgrade for PlainTcp {
    type Stream = TcpStream;
    const TRANSPORT: Transport = Transport::Tcp;
    const NAME: &'static str = "modbus tcp";

    fn upgrade(
        &self,
        stream: TcpStream,
        _peer: SocketAddr,
    ) -> impl Future<Output = Option<(TcpStream, Option<String>)>> + Send {
        std::future::ready(Some((stream, None)))
    }
}

/// Open connections, oldest first, each with the signal that closes it
/// (eviction or stop); the core's admission decides who is served.
type ConnTable = Mutex<Admission<Arc<CloseSignal>>>;

/// A Modbus/TCP server over an [`Engine`].
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
    pub async fn serve_forever(&self) -> Result<(), ServerError> {
        self.serve_with(Arc::new(PlainTcp)).await
    }

    /// `serve_forever` with each accepted stream passed through `upgrade`.
    pub(crate) async fn serve_with<U: Upgrade>(&self, upgrade: Arc<U>) -> Result<(), ServerError> {
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

    async fn run<U: Upgrade>(&self, upgrade: Arc<U>) -> Result<(), ServerError> {
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
        let listener = TcpListener::from_std(std_listener)?;
        let stop = self.handle.token().clone();
        let c = &*self.config;
        let table: Arc<ConnTable> = Arc::new(Mutex::new(Admission::new(AdmissionOptions {
            max_connections: c.max_connections,
            overflow: c.overflow,
            allow_list: c.allow_list.clone(),
        })));
        let shared = Arc::new(SessionConfig {
            timeouts: StreamTimeoutConfig {
                partial_frame: c.partial_frame_timeout,
                idle: c.idle_timeout,
                release_buffers_after: c.release_buffers_after,
            },
            max_buffered: c.max_buffered,
            stats: Arc::clone(&self.stats),
            ..SessionConfig::new(Arc::clone(&self.engine), SessionKind::Stream, c.framing, U::TRANSPORT)
        });
        let mut tasks = JoinSet::new();
        debug!(addr = ?self.handle.local_addr(), "{} server listening", U::NAME);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if let Some((id, signal)) = self.admit(&table, peer) {
                            let conn = ConnTask {
                                id,
                                peer,
                                shared: Arc::clone(&shared),
                                config: Arc::clone(&self.config),
                                table: Arc::clone(&table),
                                signal,
                            };
                            tasks.spawn(conn.run(stream, Arc::clone(&upgrade)));
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        if !is_per_connection_error(&e) {
                            // Out of descriptors or memory: do not spin.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                },
            }
        }
        drop(listener);
        // Every open connection drains and closes (admitted ones only: no more accepts).
        for signal in table.lock().unwrap_or_else(PoisonError::into_inner).open() {
            signal.raise(CloseReason::Stop);
        }
        let drained = tokio::time::timeout(self.config.shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(open = tasks.len(), "connections did not close in time; cutting them");
            tasks.shutdown().await;
        }
        debug!("{} server stopped", U::NAME);
        Ok(())
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

/// Everything one connection task owns.
struct ConnTask {
    id: u64,
    peer: SocketAddr,
    /// The server's settings for every session, with its engine and counters.
    shared: Arc<SessionConfig>,
    config: Arc<TcpServerConfig>,
    table: Arc<ConnTable>,
    /// Raised by the server to close this connection (stop or eviction).
    signal: Arc<CloseSignal>,
}

impl ConnTask {
    async fn run<U: Upgrade>(self, stream: TcpStream, upgrade: Arc<U>) {
        let peer = self.peer;
        debug!(%peer, "connection opened");
        let _ = stream.set_nodelay(self.config.nodelay);
        // The upgrade first: plain TCP's is ready at once, so a stop that
        // comes now still drains (in `serve`), as for any open connection.
        let upgraded = tokio::select! {
            biased;
            up = upgrade.upgrade(stream, peer) => up.ok_or(Close::Refused),
            why = std::future::poll_fn(|cx| self.signal.poll(cx)) => Err(close_for(why)),
        };
        let reason = match upgraded {
            Ok((mut stream, role)) => {
                let reason = self.serve(&mut stream, role).await;
                if matches!(reason, Close::Shutdown) {
                    let _ = stream.shutdown().await;
                }
                reason
            }
            Err(reason) => {
                if reason == Close::Refused {
                    self.shared.stats.count_handshake_failure();
                }
                reason
            }
        };
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(self.id, &self.shared.stats);
        debug!(%peer, ?reason, "connection closed");
    }

    async fn serve<S: ConnStream>(&self, stream: &mut S, tls_role: Option<String>) -> Close {
        let now = Instant::now().into_std();
        // The session boxes its connection state on the first byte: a client
        // that connects and stays silent costs only this task.
        let mut session = Session::new(Arc::clone(&self.shared), now, self.id, Some(self.peer), tls_role);
        let mut buf: Vec<u8> = Vec::new();
        // One timer for the whole connection, moved lazily: it stays armed at
        // or before the earliest deadline and is re-armed when it fires early,
        // so a busy connection touches the timer wheel about once a second,
        // not once per request.
        // Boxed and made when first armed, like the connection state.
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        let mut armed: Option<std::time::Instant> = None;
        // Poll the timer in the next wait even on its first poll: it was
        // (re)armed since it was last polled, or its wake may have been taken
        // by a read or a write.
        let mut timer_unpolled = false;
        // The waker the close signal and the timer were last given. While a
        // wait's waker is the same (a tokio task's always is), neither needs
        // polling again: a pending future keeps its last waker.
        let mut registered: Option<Waker> = None;
        loop {
            let now = Instant::now().into_std();
            let deadline = match session.poll(now) {
                Output::Wait(deadline) => deadline,
                Output::Transmit(out) => {
                    match self.transmit(stream, out).await {
                        Ok((n, waited)) => {
                            // A write that had to wait may have taken the timer's wake.
                            timer_unpolled |= waited;
                            session.handle(Instant::now().into_std(), Input::Sent(n));
                        }
                        Err(_) => session.handle(now, Input::Failed),
                    }
                    continue;
                }
                Output::Pause(until) => {
                    // Boxed: only fault injection pauses, and an inline timer
                    // would grow every connection's task.
                    let cut = Box::pin(async {
                        tokio::select! {
                            () = tokio::time::sleep_until(Instant::from_std(until)) => None,
                            why = std::future::poll_fn(|cx| self.signal.poll(cx)) => Some(why),
                        }
                    })
                    .await;
                    if let Some(why) = cut {
                        session.handle(Instant::now().into_std(), input_for(why));
                    }
                    continue;
                }
                Output::ReleaseBuffers => {
                    buf = Vec::new();
                    continue;
                }
                Output::Discarded => continue,
                Output::ReadQueued => {
                    if buf.is_empty() {
                        buf.resize(self.config.read_buffer_size.max(1), 0);
                    }
                    match stream.read_received(&mut buf) {
                        Ok(n) if n > 0 => session.handle(now, Input::Bytes(buf.get(..n).unwrap_or(&[]))),
                        _ => session.handle(now, Input::Eof),
                    }
                    continue;
                }
                Output::Close(cause) => return close_of(cause),
            };
            if let Some(d) = deadline
                && armed.is_none_or(|a| a > d)
            {
                let at = Instant::from_std(d);
                match timer.as_mut() {
                    Some(t) => t.as_mut().reset(at),
                    None => timer = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                armed = Some(d);
                timer_unpolled = true;
            }
            // One wait: a read, the close signal or the timer. The read is
            // polled first; the signal costs an atomic load. The timer is
            // polled when it has no waker yet, when the waker changed, and on
            // every poll of a wait but its first: a wait is polled again only
            // after a wake, and the timer firing is one (a fire while the task
            // ran also makes the scheduler poll it again).
            let mut first_poll = true;
            let size = self.config.read_buffer_size;
            let event = std::future::poll_fn(|cx| {
                if let Some(why) = self.signal.get() {
                    return Poll::Ready(Event::Close(why));
                }
                if let Poll::Ready(read) = poll_read_some(stream, &mut buf, size, cx) {
                    return Poll::Ready(Event::Read(read));
                }
                let fresh = registered.as_ref().is_none_or(|w| !w.will_wake(cx.waker()));
                if fresh {
                    if let Some(why) = self.signal.register(cx.waker()) {
                        return Poll::Ready(Event::Close(why));
                    }
                    registered = Some(cx.waker().clone());
                }
                let poll_timer = fresh || timer_unpolled || !first_poll;
                first_poll = false;
                if poll_timer
                    && armed.is_some()
                    && let Some(t) = timer.as_mut()
                {
                    timer_unpolled = false;
                    if t.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Timer);
                    }
                }
                Poll::Pending
            })
            .await;
            let now = Instant::now().into_std();
            match event {
                Event::Close(why) => session.handle(now, input_for(why)),
                Event::Read(Ok(0)) => session.handle(now, Input::Eof),
                Event::Read(Ok(n)) => {
                    // The timer may have fired and its wake gone to the poll
                    // that returned this read: look at it in the next wait.
                    if armed.is_some_and(|a| a <= now) {
                        timer_unpolled = true;
                    }
                    session.handle(now, Input::Bytes(buf.get(..n).unwrap_or(&[])));
                }
                Event::Read(Err(e)) => {
                    debug!(peer = %self.peer, error = %e, "read failed");
                    session.handle(now, Input::Failed);
                }
                Event::Timer => {
                    armed = None;
                    session.handle(now, Input::Timeout);
                }
            }
        }
    }

    /// Writes one piece of output: on a plain socket first in one
    /// `poll_write` (the whole answer usually goes out there, without the
    /// general path's future), else with `write_all` and a flush (a no-op
    /// on TCP; pushes out what TLS still holds). Returns the bytes written
    /// and whether the write had to wait.
    async fn transmit<S: ConnStream>(&self, stream: &mut S, out: &[u8]) -> std::io::Result<(usize, bool)> {
        if S::WRITES_THROUGH {
            let now = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *stream).poll_write(cx, out))).await;
            match now {
                Poll::Ready(Ok(0)) => return Err(ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => return Ok((n, false)),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        let mut waited = false;
        let write = async {
            stream.write_all(out).await?;
            stream.flush().await
        };
        tokio::pin!(write);
        std::future::poll_fn(|cx| {
            let poll = write.as_mut().poll(cx);
            waited |= poll.is_pending();
            poll
        })
        .await?;
        Ok((out.len(), waited))
    }
}

/// Reads what has arrived into `buf`, first waiting (without a buffer) if
/// the buffers were released; `Ok(0)` at the end of the stream.
fn poll_read_some<S: ConnStream>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    size: usize,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    while buf.is_empty() {
        ready!(stream.poll_readable(cx))?;
        match stream.has_input() {
            Ok(()) => buf.resize(size.max(1), 0),
            // Readiness cleared: poll again to wait for the next.
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    let mut read = ReadBuf::new(buf);
    ready!(Pin::new(stream).poll_read(cx, &mut read))?;
    Poll::Ready(Ok(read.filled().len()))
}

/// What ended one wait of a connection.
enum Event {
    Read(std::io::Result<usize>),
    Close(CloseReason),
    Timer,
}

/// How a connection closed by its server's signal ends.
fn close_for(why: CloseReason) -> Close {
    match why {
        CloseReason::Stop => Close::Shutdown,
        CloseReason::Evict => Close::Evicted,
    }
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

/// Binds `config.address` and serves `engine` on a spawned task; returns
/// the handle to stop it (pymodbus `StartAsyncTcpServer` with a stop
/// handle; the bind error, if any, is returned here).
pub async fn start_tcp_server(engine: Arc<Engine>, config: TcpServerConfig) -> Result<ServerHandle, ServerError> {
    let server = TcpServer::new(engine, config);
    server.bind()?;
    let handle = server.handle();
    tokio::spawn(async move {
        if let Err(e) = server.serve_forever().await {
            warn!(error = %e, "modbus tcp server failed");
        }
    });
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coilwork_core::storage::{DeviceContext, ServerContext};
    use std::net::{IpAddr, Ipv4Addr};

    /// A connection task as the accept loop makes it, for `config`.
    fn task(engine: Arc<Engine>, config: TcpServerConfig, stats: Arc<TcpStats>) -> ConnTask {
        let shared = SessionConfig {
            timeouts: StreamTimeoutConfig {
                partial_frame: config.partial_frame_timeout,
                idle: config.idle_timeout,
                release_buffers_after: config.release_buffers_after,
            },
            max_buffered: config.max_buffered,
            stats,
            ..SessionConfig::new(engine, SessionKind::Stream, config.framing, Transport::Tcp)
        };
        ConnTask {
            id: 0,
            peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1),
            shared: Arc::new(shared),
            config: Arc::new(config),
            table: Arc::new(Mutex::new(Admission::new(AdmissionOptions::default()))),
            signal: Arc::new(CloseSignal::new()),
        }
    }

    /// Every open connection holds its task whether it talks or not; the
    /// connection state, buffers and timer are boxed on first use so that an
    /// idle connection costs little more than this future (with tokio's task
    /// header, ScheduledIo and token: under 2 KiB in all).
    #[tokio::test]
    async fn an_idle_connection_task_stays_small() {
        let device = DeviceContext::with_sizes(10, 10, 10, 10).expect("device");
        let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
        let task = task(engine, TcpServerConfig::default(), Arc::new(TcpStats::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let future = task.run(stream, Arc::new(PlainTcp));
        let size = std::mem::size_of_val(&future);
        println!("connection task future: {size} bytes");
        assert!(size <= 1024, "connection task future grew to {size} bytes");
    }

    // The timer rule of `ConnTask::serve`: a wait polls the timer on its first
    // poll only when `timer_unpolled` says the timer's wake may have gone to
    // another poll. These tests hand the timer's wake to a read and to a
    // blocked write, on a mock stream and tokio's paused clock, and then send
    // no wake at all: the connection must still see the deadline.

    /// A stream the test feeds and blocks by hand; it records who waits on it.
    #[derive(Default)]
    struct Pipe {
        input: Vec<u8>,
        write_blocked: bool,
        written: Vec<u8>,
        reader: Option<Waker>,
        writer: Option<Waker>,
        /// Polls of `poll_readable`: a wait without a buffer (the start, or
        /// after the buffers were released).
        readable_polls: usize,
        write_polls: usize,
        /// At most this many bytes taken per `poll_write` (0: all).
        max_write: usize,
    }

    #[derive(Clone, Default)]
    struct MockStream(Arc<Mutex<Pipe>>);

    impl MockStream {
        fn pipe(&self) -> std::sync::MutexGuard<'_, Pipe> {
            self.0.lock().expect("pipe")
        }

        /// Adds input and wakes the reader.
        fn feed(&self, bytes: &[u8]) {
            let mut pipe = self.pipe();
            pipe.input.extend_from_slice(bytes);
            if let Some(w) = pipe.reader.take() {
                w.wake();
            }
        }

        /// Adds input without waking the reader: only a poll that comes for
        /// another reason finds it.
        fn feed_quietly(&self, bytes: &[u8]) {
            self.pipe().input.extend_from_slice(bytes);
        }

        fn set_write_blocked(&self, blocked: bool) {
            let mut pipe = self.pipe();
            pipe.write_blocked = blocked;
            if let Some(w) = pipe.writer.take() {
                w.wake();
            }
        }

        fn take_input(&self, buf: &mut [u8]) -> usize {
            let mut pipe = self.pipe();
            let n = pipe.input.len().min(buf.len());
            buf[..n].copy_from_slice(&pipe.input[..n]);
            pipe.input.drain(..n);
            n
        }
    }

    impl AsyncRead for MockStream {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            let mut pipe = self.pipe();
            if pipe.input.is_empty() {
                pipe.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = pipe.input.len().min(buf.remaining());
            buf.put_slice(&pipe.input[..n]);
            pipe.input.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for MockStream {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let mut pipe = self.pipe();
            pipe.write_polls += 1;
            if pipe.write_blocked {
                pipe.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = match pipe.max_write {
                0 => buf.len(),
                max => buf.len().min(max),
            };
            pipe.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl ConnStream for MockStream {
        // Its flush does nothing, as a socket's: answers take the `write_now` path first.
        const WRITES_THROUGH: bool = true;

        fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            let mut pipe = self.pipe();
            pipe.readable_polls += 1;
            if pipe.input.is_empty() {
                pipe.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }
        fn has_input(&mut self) -> std::io::Result<()> {
            if self.pipe().input.is_empty() {
                return Err(ErrorKind::WouldBlock.into());
            }
            Ok(())
        }
        fn read_received(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            Ok(self.take_input(buf))
        }
    }

    /// FC3, one register at 0, unit 1, and its answer.
    const READ_ONE: [u8; 12] = [0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1];
    const READ_ONE_ANSWER: [u8; 11] = [0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 0];
    const IDLE: Duration = Duration::from_millis(100);
    const STEP: Duration = Duration::from_millis(10);

    fn idle_config() -> TcpServerConfig {
        TcpServerConfig {
            idle_timeout: Some(IDLE),
            partial_frame_timeout: None,
            release_buffers_after: Duration::from_secs(60),
            ..TcpServerConfig::default()
        }
    }

    /// Spawns `serve` on `stream` as a task of its own: the task's waker is
    /// the only one the connection sees, and nothing the test awaits wakes it.
    fn spawn_serve(config: TcpServerConfig, stream: MockStream) -> (tokio::task::JoinHandle<Close>, Arc<TcpStats>) {
        let device = DeviceContext::with_sizes(10, 10, 10, 10).expect("device");
        let stats = Arc::new(TcpStats::default());
        let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
        let task = task(engine, config, Arc::clone(&stats));
        let served = tokio::spawn(async move {
            let mut stream = stream;
            task.serve(&mut stream, None).await
        });
        (served, stats)
    }

    /// Lets the connection task run until `done` holds. Yields only: on a
    /// paused clock a yield does not move time (time moves by `advance`, or
    /// by itself once every task waits).
    async fn settle(what: &str, done: impl Fn() -> bool) {
        for _ in 0..100 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the connection never got to: {what}");
    }

    /// The connection's end, or a failure if it is still open long after
    /// its last deadline (the paused clock gets there at once).
    async fn closed(served: tokio::task::JoinHandle<Close>, what: &str) -> Close {
        tokio::time::timeout(100 * IDLE, served)
            .await
            .unwrap_or_else(|_| panic!("{what}"))
            .expect("join")
    }

    /// A socket that takes an answer in part: `write_now` writes what it
    /// takes and the general write path the rest, in order, nothing twice.
    #[tokio::test(start_paused = true)]
    async fn an_answer_written_in_part_goes_out_whole() {
        let stream = MockStream::default();
        stream.pipe().max_write = 4;
        let (served, _stats) = spawn_serve(idle_config(), stream.clone());
        settle("the first wait", || stream.pipe().reader.is_some()).await;
        let two = [READ_ONE, READ_ONE].concat();
        stream.feed(&two);
        let answers = [READ_ONE_ANSWER, READ_ONE_ANSWER].concat();
        settle("both answers", || stream.pipe().written == answers).await;
        // 22 bytes, 4 at a time: one poll of `write_now`, five of the general path.
        assert_eq!(stream.pipe().write_polls, 6);
        assert_eq!(closed(served, "the idle timeout never fired").await, Close::IdleTimeout);
    }

    /// Flag (b): the timer fires while the connection waits, and the poll its
    /// wake brings finds a request (which came without a wake of its own) and
    /// returns the read. The wait after the answer must still look at the
    /// fired timer: it re-arms at the new idle deadline, which then closes.
    #[tokio::test(start_paused = true)]
    async fn a_timer_wake_taken_by_a_read_is_not_lost() {
        let stream = MockStream::default();
        let start = Instant::now();
        let (served, stats) = spawn_serve(idle_config(), stream.clone());
        // The first wait polled the read and the timer (armed at start + IDLE).
        settle("the first wait", || stream.pipe().reader.is_some()).await;
        stream.feed_quietly(&READ_ONE);
        // Past the deadline: the timer's wake is the only one, and its poll returns the read.
        tokio::time::advance(IDLE + STEP).await;
        settle("the answer", || stream.pipe().written == READ_ONE_ANSWER).await;
        assert_eq!(stream.pipe().write_polls, 1, "the answer's write did not wait");
        let close = closed(
            served,
            "the idle timeout never fired: the timer's wake went to the read",
        )
        .await;
        assert_eq!(close, Close::IdleTimeout);
        assert_eq!(stats.idle_timeouts(), 1);
        // The idle deadline of the request (read at IDLE + STEP), not an earlier one.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= 2 * IDLE + STEP && elapsed <= 2 * IDLE + 2 * STEP,
            "closed {elapsed:?} after the start"
        );
    }

    /// Flag (b) again, with the buffer release as the deadline (no idle
    /// timeout): after a timer wake taken by a read, the buffers must still
    /// be released, the connection going back to waiting without a buffer.
    #[tokio::test(start_paused = true)]
    async fn a_buffer_release_after_a_timer_wake_taken_by_a_read_is_not_lost() {
        const RELEASE: Duration = Duration::from_millis(100);
        let stream = MockStream::default();
        let (served, stats) = spawn_serve(
            TcpServerConfig {
                idle_timeout: None,
                release_buffers_after: RELEASE,
                ..idle_config()
            },
            stream.clone(),
        );
        // A first request arms the timer at its release deadline.
        settle("the first wait", || stream.pipe().reader.is_some()).await;
        stream.feed(&READ_ONE);
        settle("the first answer", || stream.pipe().written.len() == 11).await;
        // The next request comes without a wake; the release deadline's wake returns it.
        stream.feed_quietly(&READ_ONE);
        tokio::time::advance(RELEASE + STEP).await;
        settle("the second answer", || stream.pipe().written.len() == 22).await;
        let readable = stream.pipe().readable_polls;
        // Every task waits now: the paused clock runs to the next timer, if the connection looks at it.
        tokio::time::sleep(10 * RELEASE).await;
        assert!(
            stream.pipe().readable_polls > readable,
            "the buffers were never released: the timer's wake went to the read"
        );
        assert!(!served.is_finished());
        assert_eq!(stats.bytes_out(), 22);
        served.abort();
    }

    /// Flag (c): the answer's write waits, and the timer fires meanwhile: its
    /// wake polls the blocked write. The write then completes on its own
    /// wake, and nothing wakes the connection after: the wait after the write
    /// must still look at the fired timer.
    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fires_during_a_blocked_write_still_closes() {
        let stream = MockStream::default();
        stream.set_write_blocked(true);
        let start = Instant::now();
        let (served, stats) = spawn_serve(idle_config(), stream.clone());
        settle("the first wait", || stream.pipe().reader.is_some()).await;
        // A request half-way to the first idle deadline: the timer stays armed at start + IDLE.
        tokio::time::advance(IDLE / 2).await;
        stream.feed(&READ_ONE);
        settle("the blocked write", || stream.pipe().writer.is_some()).await;
        let write_polls = stream.pipe().write_polls;
        // The timer fires during the write: its wake polls the write, which still waits.
        tokio::time::advance(IDLE / 2 + STEP).await;
        settle("the write polled by the timer's wake", || {
            stream.pipe().write_polls > write_polls
        })
        .await;
        stream.set_write_blocked(false);
        settle("the answer", || stream.pipe().written == READ_ONE_ANSWER).await;
        let close = closed(
            served,
            "the idle timeout never fired: the timer's wake went to the write",
        )
        .await;
        assert_eq!(close, Close::IdleTimeout);
        assert_eq!(stats.idle_timeouts(), 1);
        // The idle deadline of the request (read at IDLE / 2).
        let elapsed = start.elapsed();
        assert!(
            elapsed >= IDLE / 2 + IDLE && elapsed <= IDLE / 2 + IDLE + STEP,
            "closed {elapsed:?} after the start"
        );
    }
}
