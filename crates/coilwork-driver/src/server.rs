//! The TCP and UDP server types, written once for every async adapter:
//! bind (deferred, like pymodbus's `defer_start`), serve until stopped,
//! stop gracefully. An adapter names its runtime, stop handle and socket
//! conversions in an [`Adapter`] and re-exports `TcpServer<ItsAdapter>`.

use crate::seam::{Datagram, Listener, Runtime, Stop, Upgrade};
use crate::{Plain, TcpServe};
use coilwork_core::options::{TcpServerConfig, UdpServerConfig};
use coilwork_core::{Engine, ServerError, ServerStats};
use coilwork_net::SocketOptions;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::debug;

/// A server's stop handle, as the server types use it.
pub trait Handle: Stop + Clone + Default + core::fmt::Debug + Send + Sync + 'static {
    /// Asks for a graceful stop.
    fn stop(&self);
    /// Waits until the server has stopped serving.
    fn stopped(&self) -> impl Future<Output = ()> + Send + '_;
    /// Records the bound address.
    fn set_local_addr(&self, addr: SocketAddr);
    /// The bound address, once bound.
    fn local_addr(&self) -> Option<SocketAddr>;
    /// Marks the server stopped (wakes `stopped`).
    fn mark_stopped(&self);
}

/// An async adapter: its runtime, stop handle and sockets.
pub trait Adapter: Runtime {
    /// The stop handle its servers hand out.
    type Handle: Handle;
    /// A listening TCP socket on the runtime.
    type Listener: Listener<Stream: crate::ByteStream>;
    /// A UDP socket on the runtime.
    type Udp: Datagram;
    /// Registers a bound listener with the runtime.
    fn listener(listener: std::net::TcpListener) -> std::io::Result<Self::Listener>;
    /// Registers a bound UDP socket with the runtime.
    fn udp(socket: std::net::UdpSocket) -> std::io::Result<Self::Udp>;
}

/// What a TCP and a UDP server share: the socket until served, the
/// serving flag, the handle.
#[derive(Debug)]
struct Lifecycle<A: Adapter, S> {
    socket: Mutex<Option<S>>,
    serving: AtomicBool,
    handle: A::Handle,
}

impl<A: Adapter, S> Lifecycle<A, S> {
    fn new() -> Self {
        Self {
            socket: Mutex::new(None),
            serving: AtomicBool::new(false),
            handle: A::Handle::default(),
        }
    }

    /// Binds with `bind` unless stopping or bound already.
    fn bind(&self, bind: impl FnOnce() -> Result<(S, SocketAddr), ServerError>) -> Result<SocketAddr, ServerError> {
        if self.handle.is_raised() {
            return Err(ServerError::Closed);
        }
        if let Some(addr) = self.handle.local_addr() {
            return Ok(addr);
        }
        let (socket, addr) = bind()?;
        *self.socket.lock().unwrap_or_else(PoisonError::into_inner) = Some(socket);
        self.handle.set_local_addr(addr);
        Ok(addr)
    }

    /// Runs `serve` on the bound socket once (binding first if needed);
    /// marks the server stopped when it returns.
    async fn serve<F: Future<Output = Result<(), ServerError>>>(
        &self,
        bind: impl FnOnce() -> Result<SocketAddr, ServerError>,
        serve: impl FnOnce(S) -> F,
    ) -> Result<(), ServerError> {
        if self.serving.swap(true, Ordering::AcqRel) {
            return Err(ServerError::AlreadyServing);
        }
        let result = match (self.handle.is_raised(), bind()) {
            // Stopped before it started, or `server_close` raced us: nothing to serve.
            (true, _) | (_, Err(ServerError::Closed)) => Ok(()),
            (false, Err(e)) => Err(e),
            (false, Ok(_)) => {
                let socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner).take();
                match socket {
                    Some(socket) => serve(socket).await,
                    // `server_close` took it: closed before serving.
                    None => Ok(()),
                }
            }
        };
        self.handle.mark_stopped();
        result
    }

    async fn shutdown(&self) {
        self.handle.stop();
        if self.serving.load(Ordering::Acquire) {
            self.handle.stopped().await;
        } else {
            self.close();
        }
    }

    fn close(&self) {
        self.handle.stop();
        drop(self.socket.lock().unwrap_or_else(PoisonError::into_inner).take());
        if !self.serving.load(Ordering::Acquire) {
            self.handle.mark_stopped();
        }
    }
}

/// A Modbus/TCP server over an [`Engine`].
///
/// `new` does not bind (pymodbus `defer_start`): `bind` or `serve_forever` does.
#[derive(Debug)]
pub struct TcpServer<A: Adapter> {
    engine: Arc<Engine>,
    config: TcpServerConfig,
    life: Lifecycle<A, std::net::TcpListener>,
    stats: Arc<ServerStats>,
}

impl<A: Adapter> TcpServer<A> {
    /// A server for `engine`; nothing is bound yet.
    pub fn new(engine: Arc<Engine>, config: TcpServerConfig) -> Self {
        Self {
            engine,
            config,
            life: Lifecycle::new(),
            stats: Arc::new(ServerStats::default()),
        }
    }

    /// Binds and listens now (idempotent); returns the address bound (useful with port 0).
    pub fn bind(&self) -> Result<SocketAddr, ServerError> {
        let c = &self.config;
        self.life.bind(|| {
            let listener = coilwork_net::tcp_listener(&SocketOptions::from(c), c.backlog)?;
            let addr = listener.local_addr()?;
            Ok((listener, addr))
        })
    }

    /// The bound address, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.life.handle.local_addr()
    }

    /// A handle to stop this server from anywhere.
    pub fn handle(&self) -> A::Handle {
        self.life.handle.clone()
    }

    /// The counters (TLS handshake failures among them).
    pub fn stats(&self) -> &Arc<ServerStats> {
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
        self.serve_with(Arc::new(Plain)).await
    }

    /// `serve_forever` with each accepted stream passed through `upgrade`
    /// (a TLS handshake).
    pub async fn serve_with<U>(&self, upgrade: Arc<U>) -> Result<(), ServerError>
    where
        U: Upgrade<<A::Listener as Listener>::Stream>,
    {
        let serve = |listener| async move {
            let listener = A::listener(listener)?;
            let serve = TcpServe {
                engine: Arc::clone(&self.engine),
                config: &self.config,
                stats: Arc::clone(&self.stats),
            };
            debug!(addr = ?self.local_addr(), "{} server listening", U::NAME);
            crate::serve_listener::<A, _, _>(listener, upgrade, &self.life.handle, serve).await;
            Ok(())
        };
        self.life.serve(|| self.bind(), serve).await
    }

    /// Graceful stop: stops accepting, answers requests already received,
    /// closes the connections, and returns once `serve_forever` has returned.
    pub async fn shutdown(&self) {
        self.life.shutdown().await;
    }

    /// Stops the server and releases the listening socket if it is not serving yet.
    pub fn server_close(&self) {
        self.life.close();
    }
}

/// A Modbus/UDP server over an [`Engine`]: each datagram is one ADU,
/// answered to its sender. `new` does not bind.
#[derive(Debug)]
pub struct UdpServer<A: Adapter> {
    engine: Arc<Engine>,
    config: UdpServerConfig,
    life: Lifecycle<A, std::net::UdpSocket>,
    stats: Arc<ServerStats>,
}

impl<A: Adapter> UdpServer<A> {
    /// A server for `engine`; nothing is bound yet.
    pub fn new(engine: Arc<Engine>, config: UdpServerConfig) -> Self {
        Self {
            engine,
            config,
            life: Lifecycle::new(),
            stats: Arc::new(ServerStats::default()),
        }
    }

    /// Binds now (idempotent); returns the address bound.
    pub fn bind(&self) -> Result<SocketAddr, ServerError> {
        let c = &self.config;
        self.life.bind(|| {
            let socket = coilwork_net::udp_socket(&SocketOptions::from(c))?;
            let addr = socket.local_addr()?;
            Ok((socket, addr))
        })
    }

    /// The bound address, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.life.handle.local_addr()
    }

    /// A handle to stop this server from anywhere.
    pub fn handle(&self) -> A::Handle {
        self.life.handle.clone()
    }

    /// The counters (datagrams received, answered, malformed, refused; bytes).
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// Datagrams dropped as malformed so far.
    pub fn malformed_count(&self) -> u64 {
        self.stats.malformed()
    }

    /// Binds if needed and serves until stopped (returns `Ok` at once if a stop came first).
    pub async fn serve_forever(&self) -> Result<(), ServerError> {
        let serve = |socket| async move {
            let socket = A::udp(socket)?;
            let shared = self.config.session(Arc::clone(&self.engine), Arc::clone(&self.stats));
            debug!(addr = ?self.local_addr(), "modbus udp server listening");
            crate::serve_datagrams::<A>(&socket, shared, &self.life.handle).await?;
            debug!("modbus udp server stopped");
            Ok(())
        };
        self.life.serve(|| self.bind(), serve).await
    }

    /// Stops and waits until `serve_forever` has returned.
    pub async fn shutdown(&self) {
        self.life.shutdown().await;
    }

    /// Stops the server and releases the socket if it is not serving yet.
    pub fn server_close(&self) {
        self.life.close();
    }
}
