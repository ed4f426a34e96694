//! Modbus/TCP Security (mbaps): Modbus/TCP over TLS 1.2 or newer.
//!
//! [`TlsServer`] is a [`TcpServer`] whose accepted connections first go
//! through a TLS handshake (rustls, through tokio-rustls, with the `ring`
//! provider); after it, the same per-connection loop serves them, with the
//! same options, limits, stop handle and graceful shutdown.
//!
//! By default ([`TlsClientAuth::Required`]) this is mbaps: a client must
//! present a certificate that chains to the configured CA, or the handshake
//! fails and the engine never sees it. The client's role is read from its
//! certificate (extension OID 1.3.6.1.4.1.50316.802.1, one `UTF8String`,
//! see [`coilwork_core::security`]) and reaches every request as
//! [`RequestContext::tls_role`](coilwork_core::RequestContext::tls_role), so
//! an [`Authorizer`](coilwork_core::engine::Authorizer) can decide. A
//! certificate with the role extension twice, or with a value that is not
//! exactly one `UTF8String`, is refused (the connection is closed).
//!
//! Server-only TLS (no client certificate, like pymodbus's TLS server) is
//! available only when asked for with [`TlsClientAuth::None`]; it logs a
//! warning when the server starts.
//!
//! The configuration types and PEM loaders come from `coilwork-tls`, shared
//! with the async-std and blocking adapters, and are re-exported here.

use crate::ServerError;
use crate::handle::ServerHandle;
use crate::rt::{Tcp, tokio_io};
use crate::tcp::{TcpServer, TcpServerConfig, TcpStats};
use coilwork_core::{Engine, Transport};
use coilwork_driver::{ByteStream, Upgrade};
use std::future::Future;
use std::io::{self, ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
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
            let tls = match tokio::time::timeout(limit, accept).await {
                Err(_) => {
                    debug!(%peer, "refused: TLS handshake timed out");
                    return None;
                }
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "refused: TLS handshake failed");
                    return None;
                }
                Ok(Ok(tls)) => tls,
            };
            let role = coilwork_tls::session_role(tls.get_ref().1, peer)?;
            Some((Tls(tls), role))
        }
    }
}

/// A TLS connection after its handshake.
struct Tls(TlsStream<TcpStream>);

impl ByteStream for Tls {
    tokio_io!();

    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Plaintext, end of stream or an error is ready once rustls has it;
        // it stays buffered in rustls for the read that follows.
        Pin::new(&mut self.0).poll_fill_buf(cx).map_ok(|_| ())
    }

    fn read_received(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (tcp, tls) = self.0.get_mut();
        // Bounded: plaintext already decrypted, then a few socket reads.
        for _ in 0..8 {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Read the socket itself: tokio's cached readiness may not know
            // of bytes that already arrived.
            let socket = socket2::SockRef::from(&*tcp);
            let mut raw: &socket2::Socket = &socket;
            if tls.read_tls(&mut raw)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets().map_err(io::Error::other)?;
        }
        Err(ErrorKind::WouldBlock.into())
    }
}

/// A Modbus/TCP Security server over an [`Engine`].
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

    /// The engine served.
    pub fn engine(&self) -> &Arc<Engine> {
        self.tcp.engine()
    }

    /// Binds if needed and serves until stopped; returns once every
    /// connection is closed (at once, with `Ok`, if a stop came first).
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

/// Binds `config.tcp.address` and serves `engine` over TLS on a spawned
/// task; returns the handle to stop it (the bind error, if any, is returned
/// here).
pub async fn start_tls_server(
    engine: Arc<Engine>,
    config: TlsServerConfig,
    tls: TlsConfig,
) -> Result<ServerHandle, ServerError> {
    let server = TlsServer::new(engine, config, tls);
    server.bind()?;
    let handle = server.handle();
    tokio::spawn(async move {
        if let Err(e) = server.serve_forever().await {
            warn!(error = %e, "modbus tls server failed");
        }
    });
    Ok(handle)
}
