//! The one server type of the TCP, TLS and UDP servers: bind (deferred,
//! like pymodbus's `defer_start`), serve on the calling thread until
//! stopped, stop gracefully. What differs is the [`Service`]: the socket it
//! binds and the loop that serves it.

use crate::ServerError;
use crate::drive::in_background;
use crate::handle::{Lifecycle, ServerHandle};
use coilwork_core::{Engine, ServerStats};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

/// What a [`Server`] serves: plain TCP, TLS or UDP (sealed: this crate's only).
pub trait Service: Debug + Send + Sync + Sized + 'static {
    /// The server's settings.
    type Config: Debug + Send + Sync;
    /// The socket bound before serving.
    type Socket: Debug + Send;
    /// Binds the socket `config` names; returns it and its address.
    fn open(config: &Self::Config) -> Result<(Self::Socket, SocketAddr), ServerError>;
    /// Serves `socket` on the calling thread until stopped.
    fn serve(server: &Server<Self>, socket: Self::Socket) -> Result<(), ServerError>;
}

/// A blocking Modbus server over an [`Engine`]: [`TcpServer`](crate::TcpServer),
/// `TlsServer` or [`UdpServer`](crate::UdpServer).
///
/// `new` does not bind (pymodbus `defer_start`): `bind` or `serve_forever` does.
#[derive(Debug)]
pub struct Server<S: Service> {
    pub(crate) engine: Arc<Engine>,
    pub(crate) config: Arc<S::Config>,
    pub(crate) life: Lifecycle<S::Socket>,
    pub(crate) stats: Arc<ServerStats>,
    pub(crate) service: Arc<S>,
}

impl<S: Service + Default> Server<S> {
    /// A server for `engine`; nothing is bound yet.
    pub fn new(engine: Arc<Engine>, config: S::Config) -> Self {
        Self::with_handle(engine, config, ServerHandle::new())
    }

    /// A server stopped by `handle` (keep a clone to stop a server that
    /// blocks its thread). Use a fresh handle for each server.
    pub fn with_handle(engine: Arc<Engine>, config: S::Config, handle: ServerHandle) -> Self {
        Self::with_service(engine, config, handle, S::default())
    }
}

impl<S: Service> Server<S> {
    pub(crate) fn with_service(engine: Arc<Engine>, config: S::Config, handle: ServerHandle, service: S) -> Self {
        Self {
            engine,
            config: Arc::new(config),
            life: Lifecycle::new(handle),
            stats: Arc::new(ServerStats::default()),
            service: Arc::new(service),
        }
    }

    /// Binds now (idempotent); returns the address bound (useful with port 0).
    pub fn bind(&self) -> Result<SocketAddr, ServerError> {
        self.life.bind(|| S::open(&self.config))
    }

    /// The bound address, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.life.handle.local_addr()
    }

    /// A handle to stop this server from any thread.
    pub fn handle(&self) -> ServerHandle {
        self.life.handle.clone()
    }

    /// The counters (TLS refusals in [`ServerStats::handshake_failures`],
    /// malformed datagrams in [`ServerStats::malformed`]).
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &S::Config {
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
        self.life
            .serve_bound(|| S::open(&self.config), |socket| S::serve(self, socket))
    }

    /// Graceful stop from another thread: stops accepting, answers requests
    /// already received, closes the connections, and returns once
    /// `serve_forever` has returned.
    pub fn shutdown(&self) {
        self.life.shutdown();
    }

    /// Stops the server and releases the socket if it is not serving yet.
    pub fn server_close(&self) {
        self.life.close();
    }

    /// Binds (the bind error, if any, is returned here) and serves on a new
    /// thread named `name`; returns the handle that stops it.
    pub(crate) fn start_in_background(self, name: &str) -> Result<ServerHandle, ServerError> {
        self.bind()?;
        let handle = self.handle();
        in_background(name, move || self.serve_forever())?;
        Ok(handle)
    }
}
