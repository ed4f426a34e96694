//! Test certificates, made fresh with rcgen: a CA, a server certificate for
//! 127.0.0.1 / localhost, and client certificates with and without the
//! Modbus/TCP Security role extension (OID 1.3.6.1.4.1.50316.802.1).
//!
//! Shared by coilwork-tokio's TLS tests and coilwork-cli's TLS interop test.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The role extension's OID.
pub const ROLE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 50316, 802, 1];

/// A certificate and its key, DER and PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// PKCS#8.
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

/// Everything the tests need.
pub struct Pki {
    pub ca: Identity,
    pub server: Identity,
    /// Role "operator".
    pub operator: Identity,
    /// Role "viewer".
    pub viewer: Identity,
    /// Signed by the CA, no role extension.
    pub no_role: Identity,
    /// Role "operator", but signed by another CA.
    pub other_ca: Identity,
    /// The role extension twice ("operator", "viewer").
    pub two_roles: Identity,
    /// The role extension holding a PrintableString, not a UTF8String.
    pub bad_role: Identity,
}

/// DER UTF8String (short form length).
pub fn utf8_string(s: &str) -> Vec<u8> {
    assert!(s.len() < 128);
    let mut v = vec![0x0C, s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

fn role_ext(content: Vec<u8>) -> CustomExtension {
    CustomExtension::from_oid_content(ROLE_OID, content)
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn issue(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    sans: &[&str],
    server: bool,
    extensions: Vec<CustomExtension>,
) -> Identity {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    params.custom_extensions = extensions;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Identity {
        cert_der: cert.der().to_vec(),
        cert_pem: cert.pem(),
        key_der: key.serialize_der(),
        key_pem: key.serialize_pem(),
    }
}

impl Pki {
    /// A fresh set (ECDSA P-256 keys).
    pub fn new() -> Self {
        let ca = make_ca("coilwork test CA");
        let other = make_ca("some other CA");
        let ca_key = Identity {
            cert_der: ca.der().to_vec(),
            cert_pem: ca.pem(),
            key_der: Vec::new(),
            key_pem: String::new(),
        };
        Self {
            server: issue(&ca, "coilwork server", &["localhost", "127.0.0.1"], true, vec![]),
            operator: issue(&ca, "operator", &[], false, vec![role_ext(utf8_string("operator"))]),
            viewer: issue(&ca, "viewer", &[], false, vec![role_ext(utf8_string("viewer"))]),
            no_role: issue(&ca, "nobody", &[], false, vec![]),
            other_ca: issue(&other, "intruder", &[], false, vec![role_ext(utf8_string("operator"))]),
            two_roles: issue(
                &ca,
                "two roles",
                &[],
                false,
                vec![role_ext(utf8_string("operator")), role_ext(utf8_string("viewer"))],
            ),
            bad_role: issue(
                &ca,
                "bad role",
                &[],
                false,
                vec![role_ext(vec![0x13, 0x02, b'o', b'p'])],
            ),
            ca: ca_key,
        }
    }
}
