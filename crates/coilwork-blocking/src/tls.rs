//! Modbus/TCP Security (mbaps): Modbus/TCP over TLS 1.2 or newer, on
//! `std::net` and `std::thread` (rustls [`StreamOwned`], no async runtime).
//!
//! [`TlsServer`] is a [`TcpServer`](crate::TcpServer) whose connection threads first run a
//! TLS handshake (rustls, `ring` provider); after it, the same connection
//! loop serves them, with the same options, limits, stop handle and
//! graceful shutdown (requests already received are answered, then
//! `close_notify` is sent and the write side closed). The handshake runs on
//! the connection's own thread, bounded by
//! [`TlsServerConfig::handshake_timeout`], and is cut by a stop or an
//! eviction within one `poll_interval`.
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
use crate::conn::{SharedStream, StreamSocket, Upgrade};
use crate::handle::ServerHandle;
use crate::server::Server;
use coilwork_core::{Engine, Transport};
use coilwork_tls::rustls::{ServerConnection, StreamOwned};
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

pub use coilwork_tls::{
    MBAPS_PORT, TlsClientAuth, TlsConfig, TlsError, load_ca_roots, load_certificates, load_private_key,
};

/// Settings of a [`TlsServer`] (`coilwork-tls`'s, shared by every adapter).
pub use coilwork_tls::TlsServerConfig;

/// A TLS session over a blocking socket (shared with the server's table,
/// which wakes the connection's thread by shutting its reading side down).
type TlsStream = StreamOwned<ServerConnection, SharedStream>;

impl StreamSocket for TlsStream {
    fn socket(&self) -> &TcpStream {
        self.sock.socket()
    }

    fn close_write(&mut self) {
        self.conn.send_close_notify();
        // Bounded by the socket's write timeout.
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = self.sock.flush();
        let _ = self.sock.socket().shutdown(Shutdown::Write);
    }
}

/// The TLS handshake and role check, run on each connection thread: the
/// service of a [`TlsServer`].
#[derive(Debug)]
pub struct Tls {
    tls: TlsConfig,
    handshake_timeout: Duration,
}

/// Runs the handshake to its end, bounded by `limit`, polling `cancelled`
/// at least every `poll`; says why it did not finish.
fn handshake(
    conn: &mut ServerConnection,
    sock: &mut SharedStream,
    limit: Duration,
    cancelled: &dyn Fn() -> bool,
    poll: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    let mut timeout_set: Option<Duration> = None;
    while conn.is_handshaking() {
        if cancelled() {
            return Err("cut by a stop or an eviction".into());
        }
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err("timed out".into());
        }
        let timeout = left.min(poll).max(Duration::from_millis(1));
        if timeout_set != Some(timeout) {
            sock.socket()
                .set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            timeout_set = Some(timeout);
        }
        match conn.complete_io(sock) {
            // Partial records stay buffered in rustls: go on reading.
            Err(e) if !crate::drive::is_timeout(&e) => return Err(e.to_string()),
            _ => {}
        }
    }
    Ok(())
}

impl Upgrade for Tls {
    type Stream = TlsStream;
    const TRANSPORT: Transport = Transport::Tls;
    const NAME: &'static str = "modbus tls";

    fn upgrade(
        &self,
        mut stream: SharedStream,
        peer: SocketAddr,
        cancelled: &dyn Fn() -> bool,
        poll: Duration,
    ) -> Option<(TlsStream, Option<String>)> {
        let mut conn = match ServerConnection::new(Arc::clone(self.tls.rustls())) {
            Ok(conn) => conn,
            Err(e) => {
                warn!(%peer, error = %e, "cannot start a TLS session");
                return None;
            }
        };
        if let Err(why) = handshake(&mut conn, &mut stream, self.handshake_timeout, cancelled, poll) {
            debug!(%peer, %why, "TLS handshake did not finish");
            return None;
        }
        let role = coilwork_tls::session_role(&conn, peer)?;
        Some((StreamOwned::new(conn, stream), role))
    }

    fn starting(&self) {
        self.tls.warn_if_server_only();
    }
}

/// A blocking Modbus/TCP Security server over an [`Engine`]: one thread per
/// connection, like [`TcpServer`](crate::TcpServer).
///
/// `TlsServer::new` does not bind: `bind` or `serve_forever` does.
pub type TlsServer = Server<Tls>;

impl TlsServer {
    /// A server for `engine`; nothing is bound yet.
    pub fn new(engine: Arc<Engine>, config: TlsServerConfig, tls: TlsConfig) -> Self {
        Self::with_handle(engine, config, tls, ServerHandle::new())
    }

    /// A server stopped by `handle` (keep a clone to stop a server that
    /// blocks its thread). Use a fresh handle for each server.
    pub fn with_handle(engine: Arc<Engine>, config: TlsServerConfig, tls: TlsConfig, handle: ServerHandle) -> Self {
        let handshake_timeout = config.handshake_timeout;
        Self::with_service(engine, config.tcp, handle, Tls { tls, handshake_timeout })
    }

    /// The TLS configuration.
    pub fn tls_config(&self) -> &TlsConfig {
        &self.service.tls
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.service.handshake_timeout
    }
}

/// Binds `config.tcp.address` and serves `engine` over TLS on the calling
/// thread until the process ends or the server fails. To stop it from
/// elsewhere, build a [`TlsServer::with_handle`] and keep the handle, or use
/// [`start_tls_server_in_background`].
pub fn start_tls_server(engine: Arc<Engine>, config: TlsServerConfig, tls: TlsConfig) -> Result<(), ServerError> {
    TlsServer::new(engine, config, tls).serve_forever()
}

/// Binds `config.tcp.address` (the bind error, if any, is returned here)
/// and serves `engine` over TLS on a new thread; returns the handle that
/// stops it.
pub fn start_tls_server_in_background(
    engine: Arc<Engine>,
    config: TlsServerConfig,
    tls: TlsConfig,
) -> Result<ServerHandle, ServerError> {
    TlsServer::new(engine, config, tls).start_in_background("coilwork-tls-accept")
}
