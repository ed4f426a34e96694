//! Modbus/TCP Security (mbaps): Modbus/TCP over TLS 1.2 or newer, for
//! async-std, smol or any executor.
//!
//! [`TlsServer`] is a [`TcpServer`] whose accepted connections first go
//! through a TLS handshake (rustls through futures-rustls, `ring`
//! provider); after it, the same connection loop serves them, with the same
//! options, limits, stop handle and graceful shutdown (requests already
//! received are answered, then `close_notify` is sent and the connection
//! closed).
//!
//! The rules are those of `coilwork-tokio`'s TLS server, from the shared
//! `coilwork-tls` crate (whose types are re-exported here): by default
//! ([`TlsClientAuth::Required`]) a client must present a certificate that
//! chains to the configured CA, or the handshake fails and the engine never
//! sees it; the client's role is read from its certificate (extension OID
//! 1.3.6.1.4.1.50316.802.1, see [`coilwork_core::security`]) and reaches
//! every request as
//! [`RequestContext::tls_role`](coilwork_core::RequestContext::tls_role), so
//! an [`Authorizer`](coilwork_core::engine::Authorizer) can decide; a
//! certificate with an invalid role extension is refused. Server-only TLS
//! only with [`TlsClientAuth::None`], with a warning when the server starts.

use crate::ServerError;
use crate::handle::ServerHandle;
use crate::rt::{AsyncIo, Tcp, futures_io};
use crate::tcp::{TcpServer, TcpServerConfig, TcpStats};
use async_io::Async;
use coilwork_core::{Engine, Transport};
use coilwork_driver::{ByteStream, Upgrade};
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::{debug, warn};

pub use coilwork_tls::{
    MBAPS_PORT, TlsClientAuth, TlsConfig, TlsError, load_ca_roots, load_certificates, load_private_key,
};

/// Settings of a [`TlsServer`]: those of a [`TcpServer`] plus the handshake
/// timeout. `Default` listens on `127.0.0.1:802`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerConfig {
    /// Socket, limits and timeouts, as for TCP.
    pub tcp: TcpServerConfig,
    /// Close a connection whose TLS handshake has not finished within this
    /// long (default 10 s).
    pub handshake_timeout: Duration,
}

impl Default for TlsServerConfig {
    fn default() -> Self {
        Self {
            tcp: TcpServerConfig::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), MBAPS_PORT)),
            handshake_timeout: coilwork_tls::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl TlsServerConfig {
    /// Defaults, listening on `address`.
    pub fn new(address: SocketAddr) -> Self {
        let mut config = Self::default();
        config.tcp.address = address;
        config
    }
}

/// A TLS connection after its handshake. TLS cannot tell from the socket
/// whether a record is complete: it is always "readable", the read waits.
struct Tls(TlsStream<Async<TcpStream>>);

impl ByteStream for Tls {
    futures_io!();
}

/// The TLS handshake and role check, run on each accepted connection.
struct TlsUpgrade {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl Upgrade<Tcp> for TlsUpgrade {
    type Stream = Tls;
    const TRANSPORT: Transport = Transport::Tls;
    const NAME: &'static str = "modbus tls";

    fn upgrade(&self, stream: Tcp, peer: SocketAddr) -> impl Future<Output = Option<(Tls, Option<String>)>> + Send {
        let accept = self.acceptor.accept(stream.0);
        let limit = self.handshake_timeout;
        async move {
            let tls = match coilwork_driver::time::timeout::<AsyncIo, _>(limit, accept).await {
                None => {
                    debug!(%peer, "refused: TLS handshake timed out");
                    return None;
                }
                Some(Err(e)) => {
                    debug!(%peer, error = %e, "refused: TLS handshake failed");
                    return None;
                }
                Some(Ok(tls)) => tls,
            };
            let role = coilwork_tls::session_role(tls.get_ref().1, peer)?;
            Some((Tls(tls), role))
        }
    }
}

/// A Modbus/TCP Security server over an [`Engine`], for async-std, smol or
/// any executor (it spawns nothing, like [`TcpServer`]).
///
/// [`TlsServer::new`] does not bind: [`TlsServer::bind`] or
/// [`TlsServer::serve_forever`] does.
#[derive(Debug)]
pub struct TlsServer {
    tcp: TcpServer,
    tls: TlsConfig,
    handshake_timeout: Duration,
}

impl TlsServer {
    /// A server for `engine`; nothing is bound yet.
    pub fn new(engine: Arc<Engine>, config: TlsServerConfig, tls: TlsConfig) -> Self {
        Self {
            tcp: TcpServer::new(engine, config.tcp),
            tls,
            handshake_timeout: config.handshake_timeout,
        }
    }

    /// Binds and listens now (idempotent); returns the address bound (useful with port 0).
    pub fn bind(&self) -> Result<SocketAddr, ServerError> {
        self.tcp.bind()
    }

    /// The bound address, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.local_addr()
    }

    /// A handle to stop this server from anywhere.
    pub fn handle(&self) -> ServerHandle {
        self.tcp.handle()
    }

    /// The counters (TLS refusals in [`TcpStats::handshake_failures`]).
    pub fn stats(&self) -> &Arc<TcpStats> {
        self.tcp.stats()
    }

    /// The socket and connection settings.
    pub fn config(&self) -> &TcpServerConfig {
        self.tcp.config()
    }

    /// The TLS configuration.
    pub fn tls_config(&self) -> &TlsConfig {
        &self.tls
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The engine served.
    pub fn engine(&self) -> &Arc<Engine> {
        self.tcp.engine()
    }

    /// Binds if needed and serves until stopped; returns once every
    /// connection is closed (at once, with `Ok`, if a stop came first).
    /// Drives every connection itself, like [`TcpServer::serve_forever`].
    pub async fn serve_forever(&self) -> Result<(), ServerError> {
        self.tls.warn_if_server_only();
        let upgrade = TlsUpgrade {
            acceptor: TlsAcceptor::from(Arc::clone(self.tls.rustls())),
            handshake_timeout: self.handshake_timeout,
        };
        self.tcp.serve_with(Arc::new(upgrade)).await
    }

    /// Graceful stop: stops accepting, answers requests already received,
    /// closes the connections, and returns once `serve_forever` has returned.
    pub async fn shutdown(&self) {
        self.tcp.shutdown().await;
    }

    /// Stops the server and releases the listening socket if it is not serving yet.
    pub fn server_close(&self) {
        self.tcp.server_close();
    }
}

/// Binds `config.tcp.address` now and serves `engine` over TLS on a thread
/// of its own (driven by `async_io::block_on`, so no runtime is needed);
/// returns the handle to stop it. The bind error, if any, is returned here.
pub fn start_tls_server(
    engine: Arc<Engine>,
    config: TlsServerConfig,
    tls: TlsConfig,
) -> Result<ServerHandle, ServerError> {
    let server = TlsServer::new(engine, config, tls);
    server.bind()?;
    let handle = server.handle();
    std::thread::Builder::new().name("coilwork-tls".into()).spawn(move || {
        if let Err(e) = async_io::block_on(server.serve_forever()) {
            warn!(error = %e, "modbus tls server failed");
        }
    })?;
    Ok(handle)
}
