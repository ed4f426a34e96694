//! The Modbus/TCP Security server type, written once: a [`TcpServer`] whose
//! accepted connections first go through a TLS handshake (the adapter's
//! rustls binding, fed in as an [`Upgrade`]), then the same connection loop.

use crate::seam::{Listener, Runtime, Upgrade};
use crate::server::{Adapter, TcpServer};
use coilwork_core::options::TcpServerConfig;
use coilwork_core::{Engine, ServerError, ServerStats};
use coilwork_tls::TlsConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// An adapter's TLS binding: the handshake as an upgrade of its accepted streams.
pub trait TlsAdapter: Adapter {
    /// The handshake and role check of one connection.
    type Upgrade: Upgrade<<Self::Listener as Listener>::Stream>;
    /// The upgrade for `tls`, giving up a handshake after `handshake_timeout`.
    fn tls_upgrade(tls: &TlsConfig, handshake_timeout: Duration) -> Self::Upgrade;
}

/// Runs a TLS handshake (`accept`) for at most `limit`, then reads the
/// client's role from the session (`session` of the stream): the stream and
/// role, or `None` (refused, logged).
pub async fn handshake<R: Runtime, S, E: std::fmt::Display>(
    accept: impl Future<Output = Result<S, E>>,
    limit: Duration,
    peer: SocketAddr,
    session: impl FnOnce(&S) -> &coilwork_tls::rustls::ServerConnection,
) -> Option<(S, Option<String>)> {
    let tls = match crate::time::timeout::<R, _>(limit, accept).await {
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
    let role = coilwork_tls::session_role(session(&tls), peer)?;
    Some((tls, role))
}

/// Settings of a [`TlsServer`] (`coilwork-tls`'s, shared by every adapter).
pub use coilwork_tls::TlsServerConfig;

/// A Modbus/TCP Security server over an [`Engine`].
///
/// `new` does not bind: `bind` or `serve_forever` does.
#[derive(Debug)]
pub struct TlsServer<A: TlsAdapter> {
    tcp: TcpServer<A>,
    tls: TlsConfig,
    handshake_timeout: Duration,
}

impl<A: TlsAdapter> TlsServer<A> {
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
    pub fn handle(&self) -> A::Handle {
        self.tcp.handle()
    }

    /// The counters (TLS refusals in [`ServerStats::handshake_failures`]).
    pub fn stats(&self) -> &Arc<ServerStats> {
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
    pub async fn serve_forever(&self) -> Result<(), ServerError> {
        self.tls.warn_if_server_only();
        let upgrade = A::tls_upgrade(&self.tls, self.handshake_timeout);
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
