//! The TLS server (Modbus/TCP Security) over real loopback sockets, with
//! certificates made in the test and tokio-rustls on the client side.
#![cfg(feature = "tls")]

mod common;
use coilwork_test_support::pki;

use coilwork_core::Engine;
use coilwork_core::diagnostics::DiagnosticCounter;
use coilwork_core::engine::{Access, AccessRequest, Authorizer};
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_tokio::{ServerError, TlsClientAuth, TlsConfig, TlsError, TlsServer, TlsServerConfig, start_tls_server};
use common::{STEP, adu, fc3, fc3_answer, fc16};
use pki::{Identity, Pki};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// One set of certificates for every test (key generation is the slow part).
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

/// Records the role of every request; denies writes to role "viewer".
#[derive(Default)]
struct Roles {
    seen: Mutex<Vec<(Option<String>, u8)>>,
}

impl Authorizer for Roles {
    fn authorize(&self, r: &AccessRequest<'_>) -> bool {
        self.seen.lock().unwrap().push((r.role.map(str::to_owned), r.function));
        !(r.role == Some("viewer") && r.access == Access::Write)
    }
}

struct Fixture {
    server: Arc<TlsServer>,
    addr: SocketAddr,
    task: JoinHandle<Result<(), ServerError>>,
    roles: Arc<Roles>,
    engine: Arc<Engine>,
}

impl Fixture {
    fn start(client_auth: TlsClientAuth) -> Self {
        let roles = Arc::new(Roles::default());
        let device = DeviceContext::with_sizes(100, 100, 100, 100).unwrap();
        let engine = Arc::new(
            Engine::builder(ServerContext::single(device))
                .authorizer(roles.clone())
                .build(),
        );
        let tls = TlsConfig::new(vec![cert(&pki().server)], key(&pki().server), client_auth).unwrap();
        let mut config = TlsServerConfig::new("127.0.0.1:0".parse().unwrap());
        config.handshake_timeout = Duration::from_secs(5);
        let server = Arc::new(TlsServer::new(Arc::clone(&engine), config, tls));
        let addr = server.bind().expect("bind");
        let s = Arc::clone(&server);
        let task = tokio::spawn(async move { s.serve_forever().await });
        Self {
            server,
            addr,
            task,
            roles,
            engine,
        }
    }

    fn mbaps() -> Self {
        Self::start(TlsClientAuth::Required(roots()))
    }

    /// PDUs the engine was handed.
    fn engine_calls(&self) -> u16 {
        self.engine.bus_diagnostics().get(DiagnosticCounter::BusMessage)
    }

    fn roles_seen(&self) -> Vec<(Option<String>, u8)> {
        self.roles.seen.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` connections were refused by the TLS layer.
    async fn wait_refusals(&self, n: u64) {
        let stats = Arc::clone(self.server.stats());
        tokio::time::timeout(STEP, async {
            while stats.handshake_failures() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("refusal counted in time");
    }

    async fn stop(self) {
        tokio::time::timeout(STEP, self.server.shutdown())
            .await
            .expect("shutdown in time");
        let r = tokio::time::timeout(STEP, self.task)
            .await
            .expect("serve returns")
            .expect("join");
        assert!(r.is_ok(), "serve_forever: {r:?}");
    }
}

fn client_config(identity: Option<&Identity>, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots());
    let config = match identity {
        Some(id) => builder.with_client_auth_cert(vec![cert(id)], key(id)).unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

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

/// True if the server refused this client: the handshake failed, or the
/// first request got no answer before the connection closed.
async fn refused(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    match tls_connect(addr, config).await {
        Err(_) => true,
        // TLS 1.3: the client finishes its handshake before the server has
        // checked its certificate; the refusal shows on the first read.
        Ok(mut s) => call(&mut s, 1, &fc3(0, 1)).await.is_err(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_with_role_writes_and_reads_over_tls_1_3_and_1_2() {
    let f = Fixture::mbaps();
    for (i, version) in [&rustls::version::TLS13, &rustls::version::TLS12]
        .into_iter()
        .enumerate()
    {
        let mut c = tls_connect(f.addr, client_config(Some(&pki().operator), &[version]))
            .await
            .expect("handshake");
        assert_eq!(c.get_ref().1.protocol_version(), Some(version.version));
        let v = 0x1000 + i as u16;
        assert_eq!(
            call(&mut c, 1, &fc16(10, &[v, 0xABCD, 7])).await.unwrap(),
            [0x10, 0, 10, 0, 3]
        );
        assert_eq!(
            call(&mut c, 2, &fc3(9, 5)).await.unwrap(),
            fc3_answer(&[0, v, 0xABCD, 7, 0])
        );
        // Two requests in one TLS write are answered in order.
        let mut two = adu(3, 1, &fc3(10, 1));
        two.extend_from_slice(&adu(4, 1, &fc3(11, 1)));
        c.write_all(&two).await.unwrap();
        let mut answers = [0u8; 2 * 11];
        tokio::time::timeout(STEP, c.read_exact(&mut answers))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&answers[..11], &[0, 3, 0, 0, 0, 5, 1, 0x03, 2, (v >> 8) as u8, v as u8]);
        assert_eq!(&answers[11..], &[0, 4, 0, 0, 0, 5, 1, 0x03, 2, 0xAB, 0xCD]);
    }
    let op = Some("operator".to_owned());
    assert_eq!(
        f.roles_seen(),
        [0x10, 0x03, 0x03, 0x03, 0x10, 0x03, 0x03, 0x03].map(|fc| (op.clone(), fc))
    );
    assert_eq!(f.server.stats().handshake_failures(), 0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_never_reaches_the_engine() {
    let f = Fixture::mbaps();
    assert!(refused(f.addr, client_config(None, BOTH)).await);
    assert!(refused(f.addr, client_config(None, &[&rustls::version::TLS12])).await);
    f.wait_refusals(2).await;
    assert_eq!(f.engine_calls(), 0);
    assert!(f.roles_seen().is_empty());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_another_ca_is_refused() {
    let f = Fixture::mbaps();
    assert!(refused(f.addr, client_config(Some(&pki().other_ca), BOTH)).await);
    f.wait_refusals(1).await;
    assert_eq!(f.engine_calls(), 0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_extension_twice_or_not_a_utf8_string_is_refused() {
    let f = Fixture::mbaps();
    assert!(refused(f.addr, client_config(Some(&pki().two_roles), BOTH)).await);
    assert!(refused(f.addr, client_config(Some(&pki().bad_role), BOTH)).await);
    f.wait_refusals(2).await;
    assert_eq!(f.engine_calls(), 0);
    // The server goes on serving good clients.
    let mut c = tls_connect(f.addr, client_config(Some(&pki().operator), BOTH))
        .await
        .unwrap();
    assert_eq!(call(&mut c, 1, &fc3(0, 1)).await.unwrap(), fc3_answer(&[0]));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_gets_exception_01_for_writes_but_may_read() {
    let f = Fixture::mbaps();
    let mut op = tls_connect(f.addr, client_config(Some(&pki().operator), BOTH))
        .await
        .unwrap();
    assert_eq!(call(&mut op, 1, &fc16(0, &[42])).await.unwrap(), [0x10, 0, 0, 0, 1]);
    let mut viewer = tls_connect(f.addr, client_config(Some(&pki().viewer), BOTH))
        .await
        .unwrap();
    assert_eq!(call(&mut viewer, 1, &fc16(0, &[99])).await.unwrap(), [0x90, 0x01]);
    assert_eq!(call(&mut viewer, 2, &fc3(0, 1)).await.unwrap(), fc3_answer(&[42]));
    let viewer_role = Some("viewer".to_owned());
    assert_eq!(
        f.roles_seen(),
        [
            (Some("operator".to_owned()), 0x10),
            (viewer_role.clone(), 0x10),
            (viewer_role, 0x03)
        ]
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_without_role_is_served_with_no_role() {
    let f = Fixture::mbaps();
    let mut c = tls_connect(f.addr, client_config(Some(&pki().no_role), BOTH))
        .await
        .unwrap();
    assert_eq!(call(&mut c, 1, &fc3(0, 2)).await.unwrap(), fc3_answer(&[0, 0]));
    assert_eq!(f.roles_seen(), [(None, 0x03)]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_mode_serves_a_client_without_certificate() {
    let f = Fixture::start(TlsClientAuth::None);
    let mut c = tls_connect(f.addr, client_config(None, BOTH)).await.unwrap();
    assert_eq!(call(&mut c, 1, &fc16(3, &[0xBEEF])).await.unwrap(), [0x10, 0, 3, 0, 1]);
    assert_eq!(call(&mut c, 2, &fc3(3, 1)).await.unwrap(), fc3_answer(&[0xBEEF]));
    assert_eq!(f.roles_seen(), [(None, 0x10), (None, 0x03)]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_the_request_in_flight() {
    let f = Fixture::mbaps();
    let mut c = tls_connect(f.addr, client_config(Some(&pki().operator), BOTH))
        .await
        .unwrap();
    call(&mut c, 1, &fc16(0, &[5])).await.unwrap();
    c.write_all(&adu(2, 1, &fc3(0, 1))).await.unwrap();
    c.flush().await.unwrap();
    let s = Arc::clone(&f.server);
    let shut = tokio::spawn(async move { s.shutdown().await });
    let mut answer = [0u8; 11];
    tokio::time::timeout(STEP, c.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, [0, 2, 0, 0, 0, 5, 1, 0x03, 2, 0, 5]);
    // Then a clean TLS close.
    let mut rest = [0u8; 8];
    let n = tokio::time::timeout(STEP, c.read(&mut rest)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed after the answer: {n:?}");
    tokio::time::timeout(STEP, shut).await.unwrap().unwrap();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_closes_a_silent_client() {
    let roles = Arc::new(Roles::default());
    let device = DeviceContext::with_sizes(10, 10, 10, 10).unwrap();
    let engine = Arc::new(Engine::builder(ServerContext::single(device)).authorizer(roles).build());
    let tls = TlsConfig::new(
        vec![cert(&pki().server)],
        key(&pki().server),
        TlsClientAuth::Required(roots()),
    )
    .unwrap();
    let mut config = TlsServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.handshake_timeout = Duration::from_millis(200);
    let server = TlsServer::new(engine, config, tls);
    let addr = server.bind().unwrap();
    let stats = Arc::clone(server.stats());
    let handle = server.handle();
    let task = tokio::spawn(async move { server.serve_forever().await });
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let mut b = [0u8; 8];
    let r = tokio::time::timeout(STEP, raw.read(&mut b))
        .await
        .expect("closed in time");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert_eq!(stats.handshake_failures(), 1);
    tokio::time::timeout(STEP, handle.shutdown()).await.unwrap();
    task.await.unwrap().unwrap();
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
