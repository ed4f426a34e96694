//! The TLS server (Modbus/TCP Security) over real loopback sockets, with
//! certificates made in the test (rcgen) and a blocking rustls `StreamOwned`
//! client (the server runs on the runtime's executor); every body runs
//! under smol, the core ones under async-std too.
#![cfg(feature = "tls")]

mod common;
use coilwork_test_support::tls as tls_common;

use coilwork_async_std::{TlsClientAuth, TlsConfig, TlsServer, TlsServerConfig, start_tls_server};
use common::{Rt, STEP, fc3, within};
use std::net::TcpStream;
use std::sync::Arc;
use tls_common::*;

async fn start_tls_server_and_stop(_rt: Rt) {
    let roles = Arc::new(Roles::default());
    let tls = TlsConfig::new(
        vec![cert(&pki().server)],
        key(&pki().server),
        TlsClientAuth::Required(roots()),
    )
    .unwrap();
    let handle = start_tls_server(
        engine_with(&roles),
        TlsServerConfig::new("127.0.0.1:0".parse().unwrap()),
        tls,
    )
    .unwrap();
    let addr = handle.local_addr().unwrap();
    let mut c = tls_connect(addr, client_config(Some(&pki().operator), BOTH)).unwrap();
    assert_eq!(call(&mut c, 7, &fc3(1, 1)).unwrap(), fc3_ok(&[0]));
    drop(c);
    within(STEP, handle.shutdown()).await.expect("stops");
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

tests!(
    smol: start_tls_server_and_stop;
    async_std:
);
