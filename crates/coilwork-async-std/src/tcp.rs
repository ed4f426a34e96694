//! Modbus/TCP server, driven without spawning.
//!
//! [`TcpServer::serve_forever`] runs `coilwork-driver`'s accept loop
//! ([`coilwork_driver::serve_listener`]) with every connection future held
//! in place (a `FuturesUnordered`), so it needs no executor and no spawner:
//! any `block_on` or task of async-std, smol or `futures-lite` can drive it.
//! Sockets and timers come from [`async_io`]; the TLS server (`tls` module)
//! serves its streams with the same loop after a handshake step.

use crate::ServerError;
use crate::handle::ServerHandle;
use crate::rt::{Accept, AsyncIo, Tcp};
use async_io::Async;
use coilwork_core::{Engine, Overflow, ServerStats};
use coilwork_driver::{Plain, TcpServe, Upgrade};
use coilwork_net::SocketOptions;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::warn;

/// What to do with a new client when `max_connections` are open.
pub type OverflowPolicy = Overflow;

/// Settings of a [`TcpServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::TcpServerConfig;

/// Counters of a [`TcpServer`] (and of a TLS server, with its handshake failures).
pub type TcpStats = ServerStats;

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
        self.serve_with(Arc::new(Plain)).await
    }

    /// `serve_forever` with an upgrade step on each accepted connection.
    pub(crate) async fn serve_with<U: Upgrade<Tcp>>(&self, upgrade: Arc<U>) -> Result<(), ServerError> {
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

    async fn run<U: Upgrade<Tcp>>(&self, upgrade: Arc<U>) -> Result<(), ServerError> {
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
        let listener = Accept(Async::new(std_listener)?);
        let serve = TcpServe {
            engine: Arc::clone(&self.engine),
            config: &self.config,
            stats: Arc::clone(&self.stats),
        };
        coilwork_driver::serve_listener::<AsyncIo, _, _>(listener, upgrade, &self.handle, serve).await;
        Ok(())
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
