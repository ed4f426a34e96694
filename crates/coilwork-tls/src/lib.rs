//! # coilwork-tls: Modbus/TCP Security setup shared by the coilwork adapters
//!
//! The runtime-independent half of Modbus/TCP Security (mbaps): building the
//! rustls [`ServerConfig`](rustls::ServerConfig) from PEM files or DER
//! material ([`TlsConfig`]), the client-authentication mode
//! ([`TlsClientAuth`]), and reading a client's role from the certificate it
//! presented ([`session_role`]). The adapters (`coilwork-tokio`,
//! `coilwork-async-std`, `coilwork-blocking`) only add the handshake on
//! their own streams and hand the role to
//! [`ConnectionConfig::tls_role`](coilwork_core::ConnectionConfig::tls_role);
//! authorization is the engine's
//! [`Authorizer`](coilwork_core::engine::Authorizer).
//!
//! The rules, the same in every adapter:
//!
//! - By default ([`TlsClientAuth::Required`]) a client must present a
//!   certificate chaining to the configured CA (rustls
//!   [`WebPkiClientVerifier`]), or the handshake fails and the engine never
//!   sees the client.
//! - The role is read from the client certificate (extension OID
//!   1.3.6.1.4.1.50316.802.1, one `UTF8String`, see
//!   [`coilwork_core::security`]); a certificate with the extension twice, or
//!   with a value that is not exactly one `UTF8String`, is refused.
//! - Server-only TLS (no client certificate) only when asked for with
//!   [`TlsClientAuth::None`]; [`TlsConfig::warn_if_server_only`] logs a
//!   warning when a server starts.
//! - TLS 1.2 and 1.3 only, with the `ring` provider given to each
//!   configuration (`builder_with_provider`): no process-wide default
//!   provider is installed or needed.
#![forbid(unsafe_code)]

use coilwork_core::options::TcpServerConfig;
use coilwork_core::security::{RoleError, role_from_certificate};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

pub use rustls;

/// The Modbus/TCP Security port (IANA "mbap-s").
pub const MBAPS_PORT: u16 = 802;

/// Default time a client gets to finish its TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a TLS server: those of a TCP server plus the handshake
/// timeout, the same for every adapter. `Default` listens on `127.0.0.1:802`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerConfig {
    /// Socket, limits and timeouts (and, blocking, threads), as for TCP.
    pub tcp: TcpServerConfig,
    /// Close a connection whose TLS handshake has not finished within this
    /// long (default 10 s).
    pub handshake_timeout: Duration,
}

impl Default for TlsServerConfig {
    fn default() -> Self {
        Self {
            tcp: TcpServerConfig::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), MBAPS_PORT)),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
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

/// The TLS side of a TLS server: a rustls server configuration.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    rustls: Arc<rustls::ServerConfig>,
    server_only: bool,
}

/// The crypto provider used for configurations built here (`ring`), so no
/// process-wide default needs to be installed.
pub fn provider() -> Arc<CryptoProvider> {
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

    /// Logs a warning if this is server-only TLS (call when a server starts).
    pub fn warn_if_server_only(&self) {
        if self.server_only {
            warn!(
                "TLS server without client certificates: this is not Modbus/TCP Security; \
                 any client is served, and none has a role"
            );
        }
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

/// The role of the client of an established session: `Ok(None)` without a
/// client certificate or without a role in it; an error (refuse the
/// connection) if the certificate's role extension is invalid.
pub fn peer_role(session: &rustls::ServerConnection) -> Result<Option<String>, RoleError> {
    match session.peer_certificates().and_then(|c| c.first()) {
        None => Ok(None),
        Some(cert) => role_from_certificate(cert.as_ref()),
    }
}

/// [`peer_role`] for a session just established with `peer`, logged:
/// `None` means refuse the connection (warned), `Some(role)` serve it.
pub fn session_role(session: &rustls::ServerConnection, peer: SocketAddr) -> Option<Option<String>> {
    match peer_role(session) {
        Ok(role) => {
            debug!(%peer, role = role.as_deref().unwrap_or("-"), "TLS session established");
            Some(role)
        }
        Err(e) => {
            warn!(%peer, error = %e, "refused: client certificate has an invalid role");
            None
        }
    }
}
