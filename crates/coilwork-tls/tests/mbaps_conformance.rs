//! Modbus/TCP Security (MB-TCP-Security v2.1) requirements that the TLS layer
//! decides, checked on in-memory handshakes (no sockets) with certificates
//! made by rcgen; docs/mbaps.md names these tests per requirement. Hand-made
//! ClientHello records show what a peer offering old versions, the spec's
//! RSA-key-exchange suites or compression gets.

mod common;

use coilwork_tls::rustls::pki_types::ServerName;
use coilwork_tls::rustls::{self, ClientConfig, ClientConnection, HandshakeKind, ServerConnection};
use coilwork_tls::{MBAPS_PORT, TlsClientAuth, TlsConfig, peer_role};
use common::pki::Identity;
use common::{cert, key, pki, roots};
use std::sync::Arc;

fn server_config() -> TlsConfig {
    TlsConfig::new(
        vec![cert(&pki().server)],
        key(&pki().server),
        TlsClientAuth::Required(roots()),
    )
    .unwrap()
}

fn client_config(id: &Identity, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(coilwork_tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots())
        .with_client_auth_cert(vec![cert(id)], key(id))
        .unwrap();
    Arc::new(config)
}

fn connect(config: &Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(Arc::clone(config), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Runs the handshake in memory; the server's error, if it refused.
fn handshake(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), rustls::Error> {
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        feed_server(s, &buf)?;
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets().unwrap();
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

fn feed_server(s: &mut ServerConnection, bytes: &[u8]) -> Result<(), rustls::Error> {
    let mut rd = bytes;
    while !rd.is_empty() {
        s.read_tls(&mut rd).unwrap();
    }
    s.process_new_packets().map(|_| ())
}

/// A TLS 1.2-style ClientHello record: `version`, cipher `suites`,
/// `compression` methods, and the given extensions (type, body).
fn client_hello(version: u16, suites: &[u16], compression: &[u8], extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend([0x5A; 32]); // random
    body.push(0); // no session id
    body.extend(u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
    suites.iter().for_each(|s| body.extend(s.to_be_bytes()));
    body.push(u8::try_from(compression.len()).unwrap());
    body.extend(compression);
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend(kind.to_be_bytes());
        ext.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
        ext.extend(data);
    }
    body.extend(u16::try_from(ext.len()).unwrap().to_be_bytes());
    body.extend(ext);
    let mut hs = vec![0x01, 0];
    hs.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(u16::try_from(hs.len()).unwrap().to_be_bytes());
    record.extend(hs);
    record
}

/// Extensions a TLS 1.2 ECDHE client sends: groups x25519/P-256, point
/// formats, signature algorithms (ECDSA P-256 SHA-256, RSA-PSS, RSA PKCS#1).
fn tls12_extensions() -> Vec<(u16, Vec<u8>)> {
    vec![
        (0x000A, vec![0x00, 0x04, 0x00, 0x1D, 0x00, 0x17]),
        (0x000B, vec![0x01, 0x00]),
        (0x000D, vec![0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]),
        (0xFF01, vec![0x00]),
    ]
}

/// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: a suite rustls serves.
const ECDHE_ECDSA_AES128_GCM: u16 = 0xC02B;
/// The suites the spec names, RSA key exchange.
const RSA_WITH_NULL_SHA256: u16 = 0x003B;
const RSA_WITH_AES_128_CBC_SHA256: u16 = 0x003C;

fn offer(hello: &[u8]) -> Result<(), rustls::Error> {
    let mut s = ServerConnection::new(Arc::clone(server_config().rustls())).unwrap();
    feed_server(&mut s, hello)
}

#[test]
fn mbaps_port_is_802() {
    assert_eq!(MBAPS_PORT, 802);
}

#[test]
fn tls_1_2_and_1_3_are_served_and_older_versions_refused() {
    for versions in [&[&rustls::version::TLS12][..], &[&rustls::version::TLS13][..]] {
        let mut c = connect(&client_config(&pki().operator, versions));
        let mut s = ServerConnection::new(Arc::clone(server_config().rustls())).unwrap();
        handshake(&mut c, &mut s).unwrap();
        assert_eq!(peer_role(&s), Ok(Some("operator".to_owned())));
    }
    // The hand-made hello is good enough to be answered as TLS 1.2 ...
    assert!(
        offer(&client_hello(
            0x0303,
            &[ECDHE_ECDSA_AES128_GCM],
            &[0],
            &tls12_extensions()
        ))
        .is_ok()
    );
    // ... and refused as TLS 1.1 and TLS 1.0.
    for old in [0x0302, 0x0301] {
        let result = offer(&client_hello(old, &[ECDHE_ECDSA_AES128_GCM], &[0], &tls12_extensions()));
        assert!(result.is_err(), "version {old:#06x} was accepted");
    }
}

#[test]
fn the_spec_rsa_key_exchange_suites_are_not_offered() {
    // rustls has neither TLS_RSA_WITH_NULL_SHA256 nor
    // TLS_RSA_WITH_AES_128_CBC_SHA256: a client offering only
    // those gets no handshake.
    let suites = [RSA_WITH_NULL_SHA256, RSA_WITH_AES_128_CBC_SHA256];
    let result = offer(&client_hello(0x0303, &suites, &[0], &tls12_extensions()));
    assert!(result.is_err(), "a server accepted only RSA key exchange suites");
    let provider = coilwork_tls::provider();
    for suite in &provider.cipher_suites {
        let name = format!("{:?}", suite.suite());
        assert!(!name.contains("NULL") && !name.contains("CBC"), "{name}");
    }
}

#[test]
fn compression_is_never_used() {
    // Offering only DEFLATE is refused; null compression is what is served.
    let result = offer(&client_hello(
        0x0303,
        &[ECDHE_ECDSA_AES128_GCM],
        &[1],
        &tls12_extensions(),
    ));
    assert!(result.is_err(), "a server accepted DEFLATE-only compression");
    assert!(
        offer(&client_hello(
            0x0303,
            &[ECDHE_ECDSA_AES128_GCM],
            &[1, 0],
            &tls12_extensions()
        ))
        .is_ok()
    );
}

#[test]
fn client_certificates_are_required_and_must_chain_to_the_ca() {
    let no_cert = ClientConfig::builder_with_provider(coilwork_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots())
        .with_no_client_auth();
    let mut s = ServerConnection::new(Arc::clone(server_config().rustls())).unwrap();
    assert!(handshake(&mut connect(&Arc::new(no_cert)), &mut s).is_err());
    let foreign = client_config(&pki().other_ca, &[&rustls::version::TLS13]);
    let mut s = ServerConnection::new(Arc::clone(server_config().rustls())).unwrap();
    assert!(handshake(&mut connect(&foreign), &mut s).is_err());
}

#[test]
fn a_resumed_session_keeps_the_client_role() {
    for versions in [&[&rustls::version::TLS12][..], &[&rustls::version::TLS13][..]] {
        let server = server_config();
        let client = client_config(&pki().viewer, versions);
        let mut c = connect(&client);
        let mut s = ServerConnection::new(Arc::clone(server.rustls())).unwrap();
        handshake(&mut c, &mut s).unwrap();
        // Deliver the server's last flight (TLS 1.3 tickets) to the client.
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets().unwrap();

        let mut c = connect(&client);
        let mut s = ServerConnection::new(Arc::clone(server.rustls())).unwrap();
        handshake(&mut c, &mut s).unwrap();
        assert_eq!(s.handshake_kind(), Some(HandshakeKind::Resumed), "{versions:?}");
        assert_eq!(peer_role(&s), Ok(Some("viewer".to_owned())), "{versions:?}");
    }
}
