//! The tokio adapter's own TLS API: `start_tls_server`, `TlsServerConfig`'s
//! default, PEM files. What a TLS server does (roles, refusals, handshake
//! timeout, stop) is the conformance suite's, run on every adapter.
#![cfg(feature = "tls")]

mod common;

use coilwork_core::Engine;
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_test_support::tls::{BOTH, cert, client_config, key, pki, roots};
use coilwork_tokio::{TlsClientAuth, TlsConfig, TlsError, TlsServerConfig, start_tls_server};
use common::{STEP, adu, fc3, fc3_answer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

async fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    tokio::time::timeout(STEP, async {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    })
    .await
    .expect("TLS connect in time")
}

/// Sends one request and reads its answer (bounded); checks the MBAP echo.
async fn call<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, tid: u16, pdu: &[u8]) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(STEP, async {
        s.write_all(&adu(tid, 1, pdu)).await?;
        s.flush().await?;
        let mut head = [0u8; 7];
        s.read_exact(&mut head).await?;
        assert_eq!(u16::from_be_bytes([head[0], head[1]]), tid, "transaction id echoed");
        assert_eq!(&head[2..4], &[0, 0]);
        assert_eq!(head[6], 1, "unit echoed");
        let len = u16::from_be_bytes([head[4], head[5]]) as usize;
        let mut pdu = vec![0u8; len - 1];
        s.read_exact(&mut pdu).await?;
        Ok(pdu)
    })
    .await
    .expect("answer in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_tls_server_and_stop() {
    let device = DeviceContext::with_sizes(10, 10, 10, 10).unwrap();
    let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
    let tls = TlsConfig::new(
        vec![cert(&pki().server)],
        key(&pki().server),
        TlsClientAuth::Required(roots()),
    )
    .unwrap();
    let handle = start_tls_server(engine, TlsServerConfig::new("127.0.0.1:0".parse().unwrap()), tls)
        .await
        .unwrap();
    let addr = handle.local_addr().unwrap();
    let mut c = tls_connect(addr, client_config(Some(&pki().operator), BOTH))
        .await
        .unwrap();
    assert_eq!(call(&mut c, 7, &fc3(1, 1)).await.unwrap(), fc3_answer(&[0]));
    tokio::time::timeout(STEP, handle.shutdown()).await.expect("stops");
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[test]
fn default_address_is_the_mbaps_port() {
    assert_eq!(TlsServerConfig::default().tcp.address, "127.0.0.1:802".parse().unwrap());
}

#[test]
fn pem_files_load_and_bad_files_name_themselves() {
    let dir = std::env::temp_dir().join(format!("coilwork-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = pki();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let cert = write("server.pem", &p.server.cert_pem);
    let key = write("server.key", &p.server.key_pem);
    let ca = write("ca.pem", &p.ca.cert_pem);
    let garbage = write("garbage.pem", "not pem at all\n");
    let other_key = write("other.key", &p.viewer.key_pem);
    let missing = dir.join("missing.pem");

    let ok = TlsConfig::from_pem_files(&cert, &key, TlsClientAuth::ca_file(&ca).unwrap()).unwrap();
    assert!(!ok.is_server_only());
    assert!(
        TlsConfig::from_pem_files(&cert, &key, TlsClientAuth::None)
            .unwrap()
            .is_server_only()
    );

    let e = TlsConfig::from_pem_files(&missing, &key, TlsClientAuth::None).unwrap_err();
    assert!(matches!(e, TlsError::Read { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let e = TlsConfig::from_pem_files(&garbage, &key, TlsClientAuth::None).unwrap_err();
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e:?}");
    assert!(e.to_string().contains("garbage.pem"), "{e}");
    let e = TlsConfig::from_pem_files(&cert, &garbage, TlsClientAuth::None).unwrap_err();
    assert!(matches!(e, TlsError::NoKey { .. }), "{e:?}");
    // A key file holding a certificate only.
    let e = TlsConfig::from_pem_files(&cert, &cert, TlsClientAuth::None).unwrap_err();
    assert!(matches!(e, TlsError::NoKey { .. }), "{e:?}");
    // Someone else's key.
    let e = TlsConfig::from_pem_files(&cert, &other_key, TlsClientAuth::None).unwrap_err();
    assert!(matches!(e, TlsError::CertKey { .. }), "{e:?}");
    assert!(e.to_string().contains("other.key"), "{e}");
    let e = TlsClientAuth::ca_file(&garbage).unwrap_err();
    assert!(e.to_string().contains("garbage.pem"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
