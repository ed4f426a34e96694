//! Modbus/TCP Security (mbaps): Modbus/TCP over TLS 1.2 or newer.
//!
//! [`TlsServer`] is a [`TcpServer`](crate::TcpServer) whose accepted connections first go
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
use crate::ServerHandle;
use crate::rt::{Tcp, Tokio, tokio_io};
use coilwork_core::{Engine, Transport};
use coilwork_driver::tls::{TlsAdapter, handshake};
use coilwork_driver::{ByteStream, Upgrade};
use std::future::Future;
use std::io::{self, ErrorKind, Read};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub use coilwork_driver::tls::TlsServerConfig;
pub use coilwork_tls::{
    MBAPS_PORT, TlsClientAuth, TlsConfig, TlsError, load_ca_roots, load_certificates, load_private_key,
};

/// A Modbus/TCP Security server over an [`Engine`], on tokio (the driver's
/// server type). [`TlsServer::new`] does not bind: [`TlsServer::bind`] or
/// [`TlsServer::serve_forever`] does.
pub type TlsServer = coilwork_driver::tls::TlsServer<Tokio>;

/// The TLS handshake and role check, run on each accepted connection.
pub struct TlsUpgrade {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl TlsAdapter for Tokio {
    type Upgrade = TlsUpgrade;
    fn tls_upgrade(tls: &TlsConfig, handshake_timeout: Duration) -> TlsUpgrade {
        TlsUpgrade {
            acceptor: TlsAcceptor::from(Arc::clone(tls.rustls())),
            handshake_timeout,
        }
    }
}

impl Upgrade<Tcp> for TlsUpgrade {
    type Stream = Tls;
    const TRANSPORT: Transport = Transport::Tls;
    const NAME: &'static str = "modbus tls";

    fn upgrade(&self, stream: Tcp, peer: SocketAddr) -> impl Future<Output = Option<(Tls, Option<String>)>> + Send {
        let accept = self.acceptor.accept(stream.0);
        let up = handshake::<Tokio, _, _>(accept, self.handshake_timeout, peer, |s| s.get_ref().1);
        async move { up.await.map(|(s, role)| (Tls(s), role)) }
    }
}

/// A TLS connection after its handshake.
pub struct Tls(TlsStream<TcpStream>);

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
    crate::rt::spawn_server("modbus tls server", async move { server.serve_forever().await });
    Ok(handle)
}
