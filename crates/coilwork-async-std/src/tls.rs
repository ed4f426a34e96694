//! Modbus/TCP Security (mbaps): Modbus/TCP over TLS 1.2 or newer, for
//! async-std, smol or any executor.
//!
//! [`TlsServer`] is a [`TcpServer`](crate::TcpServer) whose accepted connections first go
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
use crate::ServerHandle;
use crate::rt::{AsyncIo, Tcp, futures_io};
use async_io::Async;
use coilwork_core::{Engine, Transport};
use coilwork_driver::tls::{TlsAdapter, handshake};
use coilwork_driver::{ByteStream, Upgrade};
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::warn;

pub use coilwork_driver::tls::TlsServerConfig;
pub use coilwork_tls::{
    MBAPS_PORT, TlsClientAuth, TlsConfig, TlsError, load_ca_roots, load_certificates, load_private_key,
};

/// A Modbus/TCP Security server over an [`Engine`], for async-std, smol or
/// any executor (it spawns nothing, like [`TcpServer`](crate::TcpServer)).
/// [`TlsServer::new`] does not bind: [`TlsServer::bind`] or
/// [`TlsServer::serve_forever`] does.
pub type TlsServer = coilwork_driver::tls::TlsServer<AsyncIo>;

/// A TLS connection after its handshake. TLS cannot tell from the socket
/// whether a record is complete: it is always "readable", the read waits.
pub struct Tls(TlsStream<Async<TcpStream>>);

impl ByteStream for Tls {
    futures_io!();
}

/// The TLS handshake and role check, run on each accepted connection.
pub struct TlsUpgrade {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl TlsAdapter for AsyncIo {
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
        let up = handshake::<AsyncIo, _, _>(accept, self.handshake_timeout, peer, |s| s.get_ref().1);
        async move { up.await.map(|(s, role)| (Tls(s), role)) }
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
