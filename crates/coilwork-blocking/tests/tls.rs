//! The blocking TLS server (Modbus/TCP Security) over real loopback sockets,
//! with certificates made in the test (rcgen) and a rustls `StreamOwned`
//! client on std sockets.
#![cfg(feature = "tls")]

use coilwork_test_support::tls as tls_common;

use coilwork_blocking::{TlsClientAuth, TlsConfig, TlsServer, TlsServerConfig};
use coilwork_conformance::client::fc3;
use std::net::TcpStream;
use std::sync::Arc;
use tls_common::*;

#[test]
fn start_tls_server_in_background_and_stop() {
    let roles = Arc::new(Roles::default());
    let tls = TlsConfig::new(
        vec![cert(&pki().server)],
        key(&pki().server),
        TlsClientAuth::Required(roots()),
    )
    .unwrap();
    let handle = coilwork_blocking::start_tls_server_in_background(
        engine_with(&roles),
        TlsServerConfig::new("127.0.0.1:0".parse().unwrap()),
        tls,
    )
    .unwrap();
    let addr = handle.local_addr().unwrap();
    let mut c = tls_connect(addr, client_config(Some(&pki().operator), BOTH)).unwrap();
    assert_eq!(call(&mut c, 7, &fc3(1, 1)).unwrap(), fc3_ok(&[0]));
    drop(c);
    handle.stop();
    assert!(handle.wait_stopped_timeout(TLS_STEP), "stops");
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

#[test]
fn default_address_is_the_mbaps_port() {
    assert_eq!(TlsServerConfig::default().tcp.address, "127.0.0.1:802".parse().unwrap());
}

/// The server keeps the TLS side it was given.
#[test]
fn tls_config_is_the_one_given() {
    let tls = TlsConfig::new(vec![cert(&pki().server)], key(&pki().server), TlsClientAuth::None).unwrap();
    let server = TlsServer::new(
        engine_with(&Arc::new(Roles::default())),
        TlsServerConfig::default(),
        tls,
    );
    assert!(server.tls_config().is_server_only());
}
