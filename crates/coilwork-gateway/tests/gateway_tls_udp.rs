//! The gateway's UDP and TLS client sides over loopback: mbaps roles
//! through the policy's `Authorizer`, datagrams answered to their sender.
#![cfg(feature = "tls")]

mod common;
use coilwork_test_support::pki;

use coilwork_core::engine::{Access, AccessRequest, Authorizer};
use coilwork_core::gateway::{Policy, Target};
use coilwork_gateway::{Gateway, GatewayConfig, UpstreamConfig, UpstreamTarget};
use coilwork_tokio::{TcpServerConfig, TlsClientAuth, TlsConfig, start_tcp_server};
use common::{STEP, adu, engine, fc3, fc3_answer, fc16};
use pki::{Identity, Pki};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(Pki::new)
}

fn cert(id: &Identity) -> CertificateDer<'static> {
    CertificateDer::from(id.cert_der.clone())
}

fn key(id: &Identity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(id.key_der.clone().into())
}

fn roots() -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(cert(&pki().ca)).unwrap();
    Arc::new(roots)
}

/// Viewers may only read.
struct ViewersRead;

impl Authorizer for ViewersRead {
    fn authorize(&self, r: &AccessRequest<'_>) -> bool {
        !(r.role == Some("viewer") && r.access == Access::Write)
    }
}

async fn gateway(policy: Policy) -> Gateway {
    let up = start_tcp_server(engine(), TcpServerConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    Gateway::start(GatewayConfig {
        upstreams: vec![UpstreamConfig::new("tcp", UpstreamTarget::Tcp(up.to_string()))],
        fallback: Some(Target::Upstream(0)),
        policy,
        ..GatewayConfig::default()
    })
    .unwrap()
}

async fn tls_call(addr: SocketAddr, who: &Identity, tid: u16, pdu: &[u8]) -> Vec<u8> {
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots())
        .with_client_auth_cert(vec![cert(who)], key(who))
        .unwrap();
    tokio::time::timeout(STEP, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut s = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        s.write_all(&adu(tid, 1, pdu)).await.unwrap();
        let mut head = [0u8; 7];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(u16::from_be_bytes([head[0], head[1]]), tid);
        let mut rest = vec![0u8; usize::from(u16::from_be_bytes([head[4], head[5]])) - 1];
        s.read_exact(&mut rest).await.unwrap();
        rest
    })
    .await
    .expect("TLS call in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_roles_go_through_the_authorizer() {
    let gw = gateway(Policy {
        read_only: false,
        authorizer: Some(Arc::new(ViewersRead)),
    })
    .await;
    let tls = TlsConfig::new(
        vec![cert(&pki().server)],
        key(&pki().server),
        TlsClientAuth::Required(roots()),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let g = gw.clone();
    tokio::spawn(async move { g.serve_tls(listener, tls).await });
    assert_eq!(tls_call(addr, &pki().viewer, 1, &fc16(3, &[9])).await, vec![0x90, 0x01]);
    assert_eq!(
        tls_call(addr, &pki().operator, 2, &fc16(3, &[9])).await,
        vec![0x10, 0, 3, 0, 1]
    );
    assert_eq!(tls_call(addr, &pki().viewer, 3, &fc3(3, 1)).await, fc3_answer(&[9]));
    gw.stop();
    assert!(gw.is_stopped());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_answered_to_their_sender() {
    let gw = gateway(Policy::default()).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let g = gw.clone();
    tokio::spawn(async move { g.serve_udp(socket).await });
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&adu(7, 1, &fc16(0, &[5, 6])), addr).await.unwrap();
    client.send_to(&adu(8, 1, &fc3(0, 2)), addr).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut buf = [0u8; 300];
        let (n, from) = tokio::time::timeout(STEP, client.recv_from(&mut buf))
            .await
            .expect("datagram in time")
            .unwrap();
        assert_eq!(from, addr);
        got.push((u16::from_be_bytes([buf[0], buf[1]]), buf[7..n].to_vec()));
    }
    got.sort();
    assert_eq!(got[0], (7, vec![0x10, 0, 0, 0, 2]));
    // One peer is one FIFO with one request in flight: the read sees the write.
    assert_eq!(got[1], (8, fc3_answer(&[5, 6])));
}
