//! Modbus over UDP: each datagram is one ADU, answered to its sender.

use crate::ServerError;
use crate::handle::{ServerHandle, pause_unless_stopped};
use crate::net::{self, SocketOptions};
use coilwork_core::{Connection, ConnectionConfig, Engine, Framing, Transport};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::UdpSocket;
use tracing::{debug, warn};

/// Settings of a [`UdpServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpServerConfig {
    /// Address to listen on (default `127.0.0.1:502`).
    pub address: SocketAddr,
    /// Framing of each datagram: MBAP (default), RTU or ASCII.
    pub framing: Framing,
    /// Set `SO_REUSEADDR` (default on).
    pub allow_reuse_address: bool,
    /// Set `SO_REUSEPORT` where the OS has it (default off).
    pub allow_reuse_port: bool,
    /// If set, only datagrams from these IPs are served; others are dropped.
    pub allow_list: Option<Vec<IpAddr>>,
}

impl Default for UdpServerConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), crate::MODBUS_PORT),
            framing: Framing::Mbap,
            allow_reuse_address: true,
            allow_reuse_port: false,
            allow_list: None,
        }
    }
}

impl UdpServerConfig {
    /// Defaults, listening on `address`.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            ..Self::default()
        }
    }
}

/// Counters of a [`UdpServer`].
#[derive(Debug, Default)]
pub struct UdpStats {
    received: AtomicU64,
    answered: AtomicU64,
    malformed: AtomicU64,
    refused: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl UdpStats {
    /// Datagrams received.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
    /// Answers sent.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
    /// Datagrams dropped because they were not exactly one valid ADU.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
    /// Datagrams dropped by the allow-list.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Bytes received.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }
    /// Bytes sent.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }
}

/// Largest datagram read; anything longer is no Modbus ADU (an ASCII ADU is at most 513 bytes).
const MAX_DATAGRAM: usize = 1024;

/// A Modbus/UDP server over an [`Engine`]. [`UdpServer::new`] does not bind.
#[derive(Debug)]
pub struct UdpServer {
    engine: Arc<Engine>,
    config: UdpServerConfig,
    socket: Mutex<Option<std::net::UdpSocket>>,
    serving: AtomicBool,
    handle: ServerHandle,
    stats: Arc<UdpStats>,
}

impl UdpServer {
    /// A server for `engine`; nothing is bound yet.
    pub fn new(engine: Arc<Engine>, config: UdpServerConfig) -> Self {
        Self {
            engine,
            config,
            socket: Mutex::new(None),
            serving: AtomicBool::new(false),
            handle: ServerHandle::new(),
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
        let socket = net::udp_socket(&opts)?;
        let addr = socket.local_addr()?;
        *self.socket.lock().unwrap_or_else(PoisonError::into_inner) = Some(socket);
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

    /// The counters (malformed datagrams among them).
    pub fn stats(&self) -> &Arc<UdpStats> {
        &self.stats
    }

    /// Datagrams dropped as malformed so far.
    pub fn malformed_count(&self) -> u64 {
        self.stats.malformed()
    }

    /// Binds if needed and serves until stopped (returns `Ok` at once if a stop came first).
    pub async fn serve_forever(&self) -> Result<(), ServerError> {
        if self.serving.swap(true, Ordering::AcqRel) {
            return Err(ServerError::AlreadyServing);
        }
        let result = self.run().await;
        self.handle.mark_stopped();
        result
    }

    /// Stops and waits until `serve_forever` has returned.
    pub async fn shutdown(&self) {
        self.handle.stop();
        if self.serving.load(Ordering::Acquire) {
            self.handle.stopped().await;
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

    async fn run(&self) -> Result<(), ServerError> {
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
        let Some(std_socket) = self.socket.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            // `server_close` took it: closed before serving.
            return Ok(());
        };
        let socket = UdpSocket::from_std(std_socket)?;
        let stop = self.handle.token().clone();
        let mut conn = Connection::new(
            Arc::clone(&self.engine),
            ConnectionConfig::stream(self.config.framing, Transport::Udp, None),
        );
        // One byte more than the largest ADU read, so an oversized datagram is seen as such.
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        debug!(addr = ?self.handle.local_addr(), "modbus udp server listening");
        // Registered once and polled only while the socket has nothing: a
        // stop future made per datagram locks the token's waiter list twice.
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            if stop.is_cancelled() {
                break;
            }
            let (n, peer) = tokio::select! {
                biased;
                received = socket.recv_from(&mut buf) => match received {
                    Ok(r) => r,
                    Err(e) if is_transient(&e) => continue,
                    Err(e) => {
                        warn!(error = %e, "udp receive failed");
                        return Err(e.into());
                    }
                },
                () = &mut stopped => break,
            };
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            if !net::allowed(self.config.allow_list.as_deref(), peer.ip()) {
                debug!(%peer, "datagram dropped: not in the allow-list");
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if n > MAX_DATAGRAM {
                debug!(%peer, "datagram dropped: too long");
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            conn.set_peer(Some(peer));
            if let Err(e) = conn.handle_datagram(buf.get(..n).unwrap_or(&[])) {
                debug!(%peer, error = %e, "malformed datagram dropped");
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            }
            if !conn.has_output() {
                continue;
            }
            // One datagram, unless a hook's delivery asked for pauses (delay,
            // split): then one datagram per piece, after its pause. A stop
            // ends a pause: the rest goes out at once.
            let mut sent = true;
            while conn.has_output() {
                let (pause, _) = conn.next_output();
                pause_unless_stopped(pause, &stop).await;
                let (_, out) = conn.next_output();
                let len = out.len();
                match socket.send_to(out, peer).await {
                    Ok(_) => {
                        self.stats.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        debug!(%peer, error = %e, "udp send failed");
                        sent = false;
                    }
                }
                conn.consume_output(len);
            }
            if sent {
                self.stats.answered.fetch_add(1, Ordering::Relaxed);
            }
        }
        debug!("modbus udp server stopped");
        Ok(())
    }
}

/// Receive errors that concern one datagram only (ICMP port unreachable and the like).
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused | ErrorKind::Interrupted | ErrorKind::WouldBlock
    )
}

/// Binds `config.address` and serves `engine` on a spawned task; returns the handle to stop it.
pub async fn start_udp_server(engine: Arc<Engine>, config: UdpServerConfig) -> Result<ServerHandle, ServerError> {
    let server = UdpServer::new(engine, config);
    server.bind()?;
    let handle = server.handle();
    tokio::spawn(async move {
        if let Err(e) = server.serve_forever().await {
            warn!(error = %e, "modbus udp server failed");
        }
    });
    Ok(handle)
}
