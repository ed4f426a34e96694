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

use crate::ServerError;
use crate::handle::ServerHandle;
use crate::tcp::{ConnStream, TcpServer, TcpServerConfig, TcpStats, Upgrade};
use coilwork_core::{Engine, Transport};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::future::Future;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// The Modbus/TCP Security port (IANA "mbap-s").
pub const MBAPS_PORT: u16 = 802;

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("{}: not valid PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A certificate file holds no certificate.
    #[error("{}: no PEM certificate in the file", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key.
    #[error("{}: no PEM private key in the file", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A CA file holds a certificate that cannot be a trust anchor.
    #[error("{}: not a usable CA certificate: {source}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The certificate and key files do not fit together or cannot be used.
    #[error("certificate {} and key {} cannot be used together: {source}", cert.display(), key.display())]
    CertKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The certificate chain and key cannot be used.
    #[error("server certificate and key cannot be used: {0}")]
    Config(#[source] rustls::Error),
    /// The client certificate verifier could not be built (no CA, bad CRL).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Whether clients must present a certificate.
#[derive(Debug, Clone)]
pub enum TlsClientAuth {
    /// Modbus/TCP Security (mbaps): a client certificate chaining to one of
    /// these roots is required; its role is read.
    Required(Arc<RootCertStore>),
    /// Server-only TLS: no client certificate is asked for and no client
    /// has a role. Not Modbus/TCP Security; logs a warning at start.
    None,
}

impl TlsClientAuth {
    /// mbaps with the CA certificates of a PEM file.
    pub fn ca_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        Ok(Self::Required(Arc::new(load_ca_roots(path)?)))
    }
}

/// The TLS side of a [`TlsServer`]: a rustls server configuration.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    rustls: Arc<rustls::ServerConfig>,
    server_only: bool,
}

/// The crypto provider used for configurations built here (`ring`), so no
/// process-wide default needs to be installed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// TLS 1.2 and 1.3 with this certificate chain (server certificate
    /// first) and key.
    pub fn new(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_auth: TlsClientAuth,
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?;
        let server_only = matches!(client_auth, TlsClientAuth::None);
        let builder = match client_auth {
            TlsClientAuth::Required(roots) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider).build()?;
                builder.with_client_cert_verifier(verifier)
            }
            TlsClientAuth::None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(cert_chain, key).map_err(TlsError::Config)?;
        Ok(Self {
            rustls: Arc::new(config),
            server_only,
        })
    }

    /// As [`TlsConfig::new`], from a PEM certificate chain file and a PEM
    /// private key file (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        client_auth: TlsClientAuth,
    ) -> Result<Self, TlsError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let chain = load_certificates(cert)?;
        let private = load_private_key(key)?;
        Self::new(chain, private, client_auth).map_err(|e| match e {
            TlsError::Config(source) => TlsError::CertKey {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// A ready rustls configuration, used as it is: its client certificate
    /// verifier decides whether this is mbaps; a role is read from any
    /// client certificate it accepted.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            rustls: config,
            server_only: false,
        }
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        &self.rustls
    }

    /// True if built with [`TlsClientAuth::None`].
    pub fn is_server_only(&self) -> bool {
        self.server_only
    }
}

/// Every certificate in a PEM file (at least one).
pub fn load_certificates(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let path = path.as_ref();
    let data = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let path = path.as_ref();
    let data = read(path)?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        other => pem_error(path, other),
    })
}

/// The CA certificates of a PEM file, as trust anchors.
pub fn load_ca_roots(path: impl AsRef<Path>) -> Result<RootCertStore, TlsError> {
    let path = path.as_ref();
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(path)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

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
            handshake_timeout: Duration::from_secs(10),
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

impl Upgrade for TlsUpgrade {
    type Stream = TlsStream<TcpStream>;
    const TRANSPORT: Transport = Transport::Tls;
    const NAME: &'static str = "modbus tls";

    fn upgrade(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<(Self::Stream, Option<String>)>> + Send {
        let accept = self.acceptor.accept(stream);
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
            let role = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                None => None,
                Some(cert) => match coilwork_core::security::role_from_certificate(cert.as_ref()) {
                    Ok(role) => role,
                    Err(e) => {
                        warn!(%peer, error = %e, "refused: client certificate has an invalid role");
                        return None;
                    }
                },
            };
            debug!(%peer, role = role.as_deref().unwrap_or("-"), "TLS session established");
            Some((tls, role))
        }
    }
}

impl ConnStream for TlsStream<TcpStream> {
    fn readable(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
        // Plaintext, end of stream or an error is ready once rustls has it;
        // it stays buffered in rustls for `try_read`.
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_fill_buf(cx).map_ok(|_| ()))
    }

    fn try_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut read = ReadBuf::new(buf);
        match Pin::new(self).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) => Ok(read.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(ErrorKind::WouldBlock.into()),
        }
    }

    fn read_received(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (tcp, tls) = self.get_mut();
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
            tls.process_new_packets().map_err(std::io::Error::other)?;
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
        if self.tls.server_only {
            warn!(
                "TLS server without client certificates: this is not Modbus/TCP Security; \
                 any client is served, and none has a role"
            );
        }
        let upgrade = TlsUpgrade {
            acceptor: TlsAcceptor::from(Arc::clone(&self.tls.rustls)),
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
