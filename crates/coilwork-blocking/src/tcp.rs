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
//! - the accept loop, the server's timeout watchdog too, awake every
//!   `poll_interval` (default 100 ms) or at the next deadline, shuts down
//!   the socket of each connection whose partial-frame or idle deadline has
//!   passed (each thread publishes its next such deadline before it reads);
//!   the thread then closes with that reason. The watchdog runs only when
//!   one of those timeouts is set.
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
use crate::handle::ServerHandle;
use crate::server::{Server, Service};
use crate::table::{BUSY, ConnTable, Slot, SlotGuard};
use coilwork_core::{Engine, Overflow, ServerStats, SessionConfig, Verdict};
use coilwork_net::SocketOptions;
use std::fmt::Debug;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// A blocking Modbus/TCP server over an [`Engine`]; see the [module docs](self)
/// for the thread-per-connection model.
///
/// `TcpServer::new` does not bind (pymodbus `defer_start`): `bind` or
/// `serve_forever` does.
pub type TcpServer = Server<PlainTcp>;

/// A TCP or TLS server: its listener, served by the accept loop below,
/// each connection after the upgrade (nothing, or the TLS handshake).
impl<U: Upgrade + Debug> Service for U {
    type Config = TcpServerConfig;
    type Socket = TcpListener;

    fn open(c: &TcpServerConfig) -> Result<(TcpListener, SocketAddr), ServerError> {
        let listener = coilwork_net::tcp_listener(&SocketOptions::from(c), c.backlog)?;
        let addr = listener.local_addr()?;
        Ok((listener, addr))
    }

    fn serve(server: &Server<U>, listener: TcpListener) -> Result<(), ServerError> {
        run(server, listener)
    }
}

fn run<U: Upgrade + Debug>(server: &Server<U>, listener: TcpListener) -> Result<(), ServerError> {
    let handle = &server.life.handle;
    let c = &*server.config;
    let table = Arc::new(ConnTable::new(c.admission()));
    let shared = Arc::new(c.session(Arc::clone(&server.engine), Arc::clone(&server.stats), U::TRANSPORT));
    let poll = c.poll_interval.max(Duration::from_millis(1));
    // The accept loop is the watchdog of the partial-frame and idle
    // deadlines too, when one of those timeouts is set.
    let watched = c.partial_frame_timeout.is_some() || c.idle_timeout.is_some();
    let mut next_watch = Instant::now();
    // Linux: a blocking accept bounded by the listener's receive timeout
    // wakes only for a client, every `poll_interval` or at the watchdog's
    // next deadline. A failed non-blocking accept costs a socket allocation
    // and free in the kernel, and polling it every ACCEPT_POLL took the
    // served CPU away from the connection threads 200 times a second.
    let socket = socket2::SockRef::from(&listener);
    let blocking_accept = cfg!(target_os = "linux")
        && listener.set_nonblocking(false).is_ok()
        && socket.set_read_timeout(Some(poll)).is_ok();
    if !blocking_accept {
        listener.set_nonblocking(true)?;
    }
    server.service.starting();
    debug!(addr = ?handle.local_addr(), "{} server listening", U::NAME);
    while !handle.is_stopping() {
        let now = Instant::now();
        if watched && now >= next_watch {
            next_watch = now + table.watch(poll);
        }
        if watched && blocking_accept {
            let _ = socket.set_read_timeout(Some(
                next_watch.saturating_duration_since(now).max(Duration::from_millis(1)),
            ));
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                if handle.is_stopping() {
                    break;
                }
                spawn_connection(server, &table, &shared, stream, peer);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if !blocking_accept && handle.sleep_unless_stopped(ACCEPT_POLL) {
                    break;
                }
            }
            Err(e) if coilwork_net::is_per_connection_error(&e) => {}
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
    if !table.wait_empty(server.config.shutdown_timeout) {
        let open = table.lock();
        warn!(open = open.len(), "connections did not close in time; cutting them");
        for slot in open.open() {
            slot.close.store(true, Ordering::Release);
            // Also ends a write blocked on a client that does not read.
            let _ = slot.socket.shutdown(Shutdown::Both);
        }
        drop(open);
        let grace = server.config.poll_interval.saturating_mul(3);
        if !table.wait_empty(grace) {
            // Each is blocked in a write bounded by `write_timeout`, if any.
            warn!("connection threads still writing; leaving them to end on their own");
        }
    }
    debug!("{} server stopped", U::NAME);
    Ok(())
}

/// Admits (or refuses) a new client and starts its thread.
fn spawn_connection<U: Upgrade + Debug>(
    server: &Server<U>,
    table: &Arc<ConnTable>,
    shared: &Arc<SessionConfig>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let stream = Arc::new(stream);
    let Some(slot) = admit(server, table, peer, &stream) else {
        drop(stream);
        return;
    };
    let id = slot.id;
    let guard = SlotGuard {
        slot,
        table: Arc::clone(table),
        stats: Arc::clone(&server.stats),
    };
    let conn = ConnThread {
        peer,
        shared: Arc::clone(shared),
        config: Arc::clone(&server.config),
        stop: server.life.handle.clone(),
        guard,
    };
    let mut builder = std::thread::Builder::new().name(format!("coilwork-tcp-{id}"));
    if let Some(size) = server.config.thread_stack_size {
        builder = builder.stack_size(size);
    }
    // On failure the closure, and with it the guard, is dropped: the slot is freed.
    let upgrade = Arc::clone(&server.service);
    if let Err(e) = builder.spawn(move || conn.run(SharedStream(stream), &*upgrade)) {
        warn!(%peer, error = %e, "cannot start a connection thread; closing the connection");
    }
}

/// Asks the admission whether a new client is served; returns its slot
/// if so, after waking the connection it evicts, if any.
fn admit<U: Service>(
    server: &Server<U>,
    table: &ConnTable,
    peer: SocketAddr,
    socket: &Arc<TcpStream>,
) -> Option<Arc<Slot>> {
    let mut slot = None;
    let verdict = table.lock().admit(peer.ip(), &server.stats, |id| {
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
    TcpServer::new(engine, config).start_in_background("coilwork-tcp-accept")
}
