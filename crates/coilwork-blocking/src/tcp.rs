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
//! [`Session`](coilwork_core::Session) with `Instant::now()`, and writes everything the
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
use crate::conn::{ConnThread, PlainTcp, SharedStream, Upgrade};
use crate::drive::in_background;
use crate::handle::{Lifecycle, ServerHandle};
use crate::table::{BUSY, ConnTable, Slot, SlotGuard};
use coilwork_core::{
    AdmissionOptions, Engine, Overflow, ServerStats, SessionConfig, SessionKind, StreamTimeoutConfig, Transport,
    Verdict,
};
use coilwork_net::SocketOptions;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
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
