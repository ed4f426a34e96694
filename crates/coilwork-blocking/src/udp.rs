//! Modbus over UDP: each datagram is one ADU, answered to its sender.
//!
//! One thread (the one calling [`UdpServer::serve_forever`]) receives with a
//! socket read timeout of [`UdpServerConfig::poll_interval`], so it notices a
//! stop within that long. A hook's [`Delivery`](coilwork_core::Delivery)
//! pause (delay, split) is slept on that thread, so other clients wait for it
//! (as in the tokio adapter); a stop cuts it short.

use crate::ServerError;
use crate::handle::ServerHandle;
use crate::net;
use coilwork_core::options::MAX_DATAGRAM;
use coilwork_core::{Engine, Input, Output, ServerStats, Session, SessionConfig, SessionKind, Transport};
use coilwork_net::SocketOptions;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Settings of a [`UdpServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::UdpServerConfig;

/// Counters of a [`UdpServer`]: datagrams received, answered, malformed
/// (not exactly one valid ADU) and refused (allow-list).
pub type UdpStats = ServerStats;

/// A blocking Modbus/UDP server over an [`Engine`]. [`UdpServer::new`] does not bind.
#[derive(Debug)]
pub struct UdpServer {
    engine: Arc<Engine>,
    config: UdpServerConfig,
    socket: Mutex<Option<UdpSocket>>,
    serving: AtomicBool,
    handle: ServerHandle,
    stats: Arc<UdpStats>,
}

impl UdpServer {
    /// A server for `engine`; nothing is bound yet.
    pub fn new(engine: Arc<Engine>, config: UdpServerConfig) -> Self {
        Self::with_handle(engine, config, ServerHandle::new())
    }

    /// A server stopped by `handle` (keep a clone to stop a server that blocks its thread).
    pub fn with_handle(engine: Arc<Engine>, config: UdpServerConfig, handle: ServerHandle) -> Self {
        Self {
            engine,
            config,
            socket: Mutex::new(None),
            serving: AtomicBool::new(false),
            handle,
            stats: Arc::new(UdpStats::default()),
        }
    }

    /// Binds now (idempotent); returns the address bound.
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
        let socket = coilwork_net::udp_socket(&opts)?;
        // Blocking reads, bounded by the read timeout.
        socket.set_nonblocking(false)?;
        let addr = socket.local_addr()?;
        *self.socket.lock().unwrap_or_else(PoisonError::into_inner) = Some(socket);
        self.handle.set_local_addr(addr);
        Ok(addr)
    }

    /// The bound address, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.handle.local_addr()
    }

    /// A handle to stop this server from any thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The counters (malformed datagrams among them).
    pub fn stats(&self) -> &Arc<UdpStats> {
        &self.stats
    }

    /// Datagrams dropped as malformed so far.
    pub fn malformed_count(&self) -> u64 {
        self.stats.malformed()
    }

    /// Binds if needed and serves on the calling thread until stopped
    /// (returns `Ok` at once if a stop came first).
    pub fn serve_forever(&self) -> Result<(), ServerError> {
        if self.serving.swap(true, Ordering::AcqRel) {
            return Err(ServerError::AlreadyServing);
        }
        let result = self.run();
        self.handle.mark_stopped();
        result
    }

    /// Stops and blocks until `serve_forever` has returned.
    pub fn shutdown(&self) {
        self.handle.stop();
        if self.serving.load(Ordering::Acquire) {
            self.handle.wait_stopped();
        } else {
            self.server_close();
        }
    }

    /// Stops the server and releases the socket if it is not serving yet.
    pub fn server_close(&self) {
        self.handle.stop();
        let socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(socket);
        if !self.serving.load(Ordering::Acquire) {
            self.handle.mark_stopped();
        }
    }

    fn run(&self) -> Result<(), ServerError> {
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
        let Some(socket) = self.socket.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            // `server_close` took it: closed before serving.
            return Ok(());
        };
        socket.set_read_timeout(Some(self.config.poll_interval.max(Duration::from_millis(1))))?;
        let shared = SessionConfig {
            allow_list: self.config.allow_list.clone(),
            stats: Arc::clone(&self.stats),
            ..SessionConfig::new(
                Arc::clone(&self.engine),
                SessionKind::Datagram,
                self.config.framing,
                Transport::Udp,
            )
        };
        let mut session = Session::new(Arc::new(shared), Instant::now(), 0, None, None);
        // One byte more than the largest ADU read, so an oversized datagram is seen as such.
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        debug!(addr = ?self.handle.local_addr(), "modbus udp server listening");
        while !self.handle.is_stopping() {
            let (n, peer) = match socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if net::is_timeout(&e) || is_transient(&e) => continue,
                Err(e) => {
                    warn!(error = %e, "udp receive failed");
                    return Err(e.into());
                }
            };
            let bytes = buf.get(..n).unwrap_or(&[]);
            session.handle(
                Instant::now(),
                Input::Datagram {
                    bytes,
                    from: Some(peer),
                },
            );
            self.answer(&socket, &mut session, peer);
        }
        debug!("modbus udp server stopped");
        Ok(())
    }

    /// Sends what the session answered to `peer`: one datagram, or one per
    /// piece when a hook's delivery asked for pauses (slept here; a stop cuts
    /// a pause short and the rest is sent at once).
    fn answer(&self, socket: &UdpSocket, session: &mut Session, peer: SocketAddr) {
        loop {
            let now = Instant::now();
            match session.poll(now) {
                Output::Transmit(out) => {
                    if let Err(e) = socket.send_to(out, peer) {
                        debug!(%peer, error = %e, "udp send failed");
                    }
                    let n = out.len();
                    session.handle(Instant::now(), Input::Sent(n));
                }
                Output::Pause(until) => {
                    if self.handle.sleep_unless_stopped(until.saturating_duration_since(now)) {
                        session.handle(Instant::now(), Input::Stop);
                    }
                }
                Output::Discarded => debug!(%peer, "datagram dropped"),
                Output::ReleaseBuffers => {}
                Output::Wait(_) | Output::ReadQueued | Output::Close(_) => return,
            }
        }
    }
}

/// Receive errors that concern one datagram only (ICMP port unreachable and the like).
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused | ErrorKind::Interrupted
    )
}

/// Binds `config.address` and serves `engine` on the calling thread (pymodbus `StartUdpServer`).
pub fn start_udp_server(engine: Arc<Engine>, config: UdpServerConfig) -> Result<(), ServerError> {
    UdpServer::new(engine, config).serve_forever()
}

/// Binds `config.address` (the bind error is returned here) and serves
/// `engine` on a new thread; returns the handle that stops it.
pub fn start_udp_server_in_background(
    engine: Arc<Engine>,
    config: UdpServerConfig,
) -> Result<ServerHandle, ServerError> {
    let server = UdpServer::new(engine, config);
    server.bind()?;
    let handle = server.handle();
    std::thread::Builder::new().name("coilwork-udp".into()).spawn(move || {
        if let Err(e) = server.serve_forever() {
            warn!(error = %e, "modbus udp server failed");
        }
    })?;
    Ok(handle)
}
