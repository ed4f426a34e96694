//! `TlsConfig` and `peer_role` on in-memory handshakes (no sockets), with
//! certificates made by rcgen.

mod common;

use coilwork_core::security::RoleError;
use coilwork_tls::rustls::pki_types::ServerName;
use coilwork_tls::rustls::{self, ClientConfig, ClientConnection, ServerConnection};
use coilwork_tls::{TlsClientAuth, TlsConfig, peer_role};
use common::pki::Identity;
use common::{cert, key, pki, roots};
use std::sync::Arc;

fn server(auth: TlsClientAuth) -> ServerConnection {
    let config = TlsConfig::new(vec![cert(&pki().server)], key(&pki().server), auth).unwrap();
    ServerConnection::new(Arc::clone(config.rustls())).unwrap()
}

fn client(identity: Option<&Identity>) -> ClientConnection {
    let builder = ClientConfig::builder_with_provider(coilwork_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots());
    let config = match identity {
        Some(id) => builder.with_client_auth_cert(vec![cert(id)], key(id)).unwrap(),
        None => builder.with_no_client_auth(),
    };
    ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Runs the handshake in memory; the server's error, if it refused.
fn handshake(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), rustls::Error> {
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        s.process_new_packets()?;
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

#[test]
fn role_is_read_from_the_client_certificate() {
    let mut s = server(TlsClientAuth::Required(roots()));
    handshake(&mut client(Some(&pki().operator)), &mut s).unwrap();
    assert_eq!(peer_role(&s), Ok(Some("operator".to_owned())));
    assert_eq!(
        coilwork_tls::session_role(&s, "127.0.0.1:1".parse().unwrap()),
        Some(Some("operator".to_owned()))
    );

    let mut s = server(TlsClientAuth::Required(roots()));
    handshake(&mut client(Some(&pki().no_role)), &mut s).unwrap();
    assert_eq!(peer_role(&s), Ok(None));
}

#[test]
fn invalid_role_extensions_are_errors() {
    let mut s = server(TlsClientAuth::Required(roots()));
    handshake(&mut client(Some(&pki().two_roles)), &mut s).unwrap();
    assert_eq!(peer_role(&s), Err(RoleError::Duplicate(2)));
    assert_eq!(coilwork_tls::session_role(&s, "127.0.0.1:1".parse().unwrap()), None);

    let mut s = server(TlsClientAuth::Required(roots()));
    handshake(&mut client(Some(&pki().bad_role)), &mut s).unwrap();
    assert_eq!(peer_role(&s), Err(RoleError::BadValue));
}

#[test]
fn required_client_auth_refuses_missing_and_foreign_certificates() {
    let mut s = server(TlsClientAuth::Required(roots()));
    assert!(handshake(&mut client(None), &mut s).is_err());
    let mut s = server(TlsClientAuth::Required(roots()));
    assert!(handshake(&mut client(Some(&pki().other_ca)), &mut s).is_err());
}

#[test]
fn server_only_mode_asks_for_no_certificate() {
    let config = TlsConfig::new(vec![cert(&pki().server)], key(&pki().server), TlsClientAuth::None).unwrap();
    assert!(config.is_server_only());
    let mut s = ServerConnection::new(Arc::clone(config.rustls())).unwrap();
    handshake(&mut client(Some(&pki().operator)), &mut s).unwrap();
    // No certificate was asked for, so none was sent and there is no role.
    assert!(s.peer_certificates().is_none());
    assert_eq!(peer_role(&s), Ok(None));
}

#[test]
fn tls_1_3_is_preferred_and_tls_1_2_is_served() {
    let mut s = server(TlsClientAuth::Required(roots()));
    handshake(&mut client(Some(&pki().operator)), &mut s).unwrap();
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));

    let config = ClientConfig::builder_with_provider(coilwork_tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots())
        .with_client_auth_cert(vec![cert(&pki().viewer)], key(&pki().viewer))
        .unwrap();
    let mut c = ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut s = server(TlsClientAuth::Required(roots()));
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(peer_role(&s), Ok(Some("viewer".to_owned())));
}
