//! Modbus over UDP: each datagram is one ADU, answered to its sender.
//!
//! The socket is an [`async_io::Async`] `UdpSocket`, so the server runs under
//! any executor (async-std, smol, `futures_lite::future::block_on`).

use crate::ServerError;
use crate::handle::ServerHandle;
use crate::rt::{AsyncIo, Udp};
use async_io::Async;
use coilwork_core::{Engine, ServerStats, SessionConfig, SessionKind, Transport};
use coilwork_net::SocketOptions;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{debug, warn};

/// Settings of a [`UdpServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::UdpServerConfig;

/// Counters of a [`UdpServer`]: datagrams received, answered, malformed
/// (not exactly one valid ADU) and refused (allow-list), bytes in and out.
pub type UdpStats = ServerStats;

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
        let socket = coilwork_net::udp_socket(&opts)?;
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
        let socket = Udp(Async::new(std_socket)?);
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
        debug!(addr = ?self.handle.local_addr(), "modbus udp server listening");
        coilwork_driver::serve_datagrams::<AsyncIo>(&socket, shared, &self.handle).await?;
        debug!("modbus udp server stopped");
        Ok(())
    }
}

/// Binds `config.address` now and serves `engine` on a thread of its own
/// (driven by `async_io::block_on`, so no runtime is needed); returns the
/// handle to stop it.
pub fn start_udp_server(engine: Arc<Engine>, config: UdpServerConfig) -> Result<ServerHandle, ServerError> {
    let server = UdpServer::new(engine, config);
    server.bind()?;
    let handle = server.handle();
    std::thread::Builder::new().name("coilwork-udp".into()).spawn(move || {
        if let Err(e) = async_io::block_on(server.serve_forever()) {
            warn!(error = %e, "modbus udp server failed");
        }
    })?;
    Ok(handle)
}
