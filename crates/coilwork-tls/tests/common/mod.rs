//! What the in-memory handshake tests share: the test PKI (made once per
//! process) and its certificates and keys in rustls's types.

#[path = "../../../coilwork-tokio/tests/pki/mod.rs"]
pub mod pki;

use coilwork_tls::rustls::RootCertStore;
use coilwork_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use pki::{Identity, Pki};
use std::sync::{Arc, OnceLock};

/// The test PKI, made once.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(Pki::new)
}

/// `id`'s certificate.
pub fn cert(id: &Identity) -> CertificateDer<'static> {
    CertificateDer::from(id.cert_der.clone())
}

/// `id`'s private key.
pub fn key(id: &Identity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(id.key_der.clone().into())
}

/// A root store holding the test CA.
pub fn roots() -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(cert(&pki().ca)).unwrap();
    Arc::new(roots)
}
