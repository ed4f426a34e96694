//! The blocking TLS server (Modbus/TCP Security) over real loopback sockets,
//! with certificates made in the test (rcgen) and a rustls `StreamOwned`
//! client on std sockets.
#![cfg(feature = "tls")]

use coilwork_test_support::tls as tls_common;

use coilwork_blocking::{ServerError, TlsClientAuth, TlsConfig, TlsServer, TlsServerConfig};
use coilwork_core::Engine;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tls_common::*;

struct Fixture {
    server: Arc<TlsServer>,
    addr: SocketAddr,
    thread: JoinHandle<Result<(), ServerError>>,
    roles: Arc<Roles>,
    engine: Arc<Engine>,
}

impl Fixture {
    fn start(client_auth: TlsClientAuth, handshake_timeout: Duration) -> Self {
        let roles = Arc::new(Roles::default());
        let engine = engine_with(&roles);
        let tls = TlsConfig::new(vec![cert(&pki().server)], key(&pki().server), client_auth).unwrap();
        let mut config = TlsServerConfig::new("127.0.0.1:0".parse().unwrap());
        config.handshake_timeout = handshake_timeout;
        config.tcp.poll_interval = Duration::from_millis(20);
        let server = Arc::new(TlsServer::new(Arc::clone(&engine), config, tls));
        let addr = server.bind().expect("bind");
        let s = Arc::clone(&server);
        let thread = std::thread::spawn(move || s.serve_forever());
        Self {
            server,
            addr,
            thread,
            roles,
            engine,
        }
    }

    fn mbaps() -> Self {
        Self::start(TlsClientAuth::Required(roots()), Duration::from_secs(5))
    }

    fn wait_refusals(&self, n: u64) {
        let stats = Arc::clone(self.server.stats());
        assert!(
            wait_for(TLS_STEP, || stats.handshake_failures() >= n),
            "{n} refusals counted in time (saw {})",
            stats.handshake_failures()
        );
    }

    fn stop(self) {
        let handle = self.server.handle();
        handle.stop();
        assert!(handle.wait_stopped_timeout(TLS_STEP), "stopped in time");
        let r = self.thread.join().expect("serve thread");
        assert!(r.is_ok(), "serve_forever: {r:?}");
    }
}

fn fc16(addr: u16, values: &[u16]) -> Vec<u8> {
    let mut v = vec![0x10];
    v.extend_from_slice(&addr.to_be_bytes());
    v.extend_from_slice(&(values.len() as u16).to_be_bytes());
    v.push((values.len() * 2) as u8);
    for x in values {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

fn fc3(addr: u16, qty: u16) -> Vec<u8> {
    let mut v = vec![0x03];
    v.extend_from_slice(&addr.to_be_bytes());
    v.extend_from_slice(&qty.to_be_bytes());
    v
}

#[test]
fn client_with_role_writes_and_reads_over_tls_1_3_and_1_2() {
    let f = Fixture::mbaps();
    for (i, version) in [&rustls::version::TLS13, &rustls::version::TLS12]
        .into_iter()
        .enumerate()
    {
        let mut c = tls_connect(f.addr, client_config(Some(&pki().operator), &[version])).expect("handshake");
        assert_eq!(c.conn.protocol_version(), Some(version.version));
        let v = 0x1000 + i as u16;
        assert_eq!(
            call(&mut c, 1, &fc16(10, &[v, 0xABCD, 7])).unwrap(),
            [0x10, 0, 10, 0, 3]
        );
        assert_eq!(call(&mut c, 2, &fc3(9, 5)).unwrap(), fc3_ok(&[0, v, 0xABCD, 7, 0]));
        // Two requests in one TLS write are answered in order.
        let mut two = mbap(3, 1, &fc3(10, 1));
        two.extend_from_slice(&mbap(4, 1, &fc3(11, 1)));
        c.write_all(&two).unwrap();
        c.flush().unwrap();
        let mut answers = [0u8; 2 * 11];
        c.read_exact(&mut answers).unwrap();
        assert_eq!(&answers[..11], &[0, 3, 0, 0, 0, 5, 1, 0x03, 2, (v >> 8) as u8, v as u8]);
        assert_eq!(&answers[11..], &[0, 4, 0, 0, 0, 5, 1, 0x03, 2, 0xAB, 0xCD]);
    }
    let op = Some("operator".to_owned());
    assert_eq!(
        f.roles.seen(),
        [0x10, 0x03, 0x03, 0x03, 0x10, 0x03, 0x03, 0x03].map(|fc| (op.clone(), fc))
    );
    assert_eq!(f.server.stats().handshake_failures(), 0);
    f.stop();
}

#[test]
fn client_without_certificate_never_reaches_the_engine() {
    let f = Fixture::mbaps();
    assert!(refused(f.addr, client_config(None, BOTH)));
    assert!(refused(f.addr, client_config(None, &[&rustls::version::TLS12])));
    f.wait_refusals(2);
    assert_eq!(engine_calls(&f.engine), 0);
    assert!(f.roles.seen().is_empty());
    f.stop();
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let f = Fixture::mbaps();
    assert!(refused(f.addr, client_config(Some(&pki().other_ca), BOTH)));
    f.wait_refusals(1);
    assert_eq!(engine_calls(&f.engine), 0);
    f.stop();
}

#[test]
fn role_extension_twice_or_not_a_utf8_string_is_refused() {
    let f = Fixture::mbaps();
    assert!(refused(f.addr, client_config(Some(&pki().two_roles), BOTH)));
    assert!(refused(f.addr, client_config(Some(&pki().bad_role), BOTH)));
    f.wait_refusals(2);
    assert_eq!(engine_calls(&f.engine), 0);
    // The server goes on serving good clients.
    let mut c = tls_connect(f.addr, client_config(Some(&pki().operator), BOTH)).unwrap();
    assert_eq!(call(&mut c, 1, &fc3(0, 1)).unwrap(), fc3_ok(&[0]));
    f.stop();
}

#[test]
fn viewer_gets_exception_01_for_writes_but_may_read() {
    let f = Fixture::mbaps();
    let mut op = tls_connect(f.addr, client_config(Some(&pki().operator), BOTH)).unwrap();
    assert_eq!(call(&mut op, 1, &fc16(0, &[42])).unwrap(), [0x10, 0, 0, 0, 1]);
    let mut viewer = tls_connect(f.addr, client_config(Some(&pki().viewer), BOTH)).unwrap();
    assert_eq!(call(&mut viewer, 1, &fc16(0, &[99])).unwrap(), [0x90, 0x01]);
    assert_eq!(call(&mut viewer, 2, &fc3(0, 1)).unwrap(), fc3_ok(&[42]));
    let viewer_role = Some("viewer".to_owned());
    assert_eq!(
        f.roles.seen(),
        [
            (Some("operator".to_owned()), 0x10),
            (viewer_role.clone(), 0x10),
            (viewer_role, 0x03)
        ]
    );
    f.stop();
}

#[test]
fn certificate_without_role_is_served_with_no_role() {
    let f = Fixture::mbaps();
    let mut c = tls_connect(f.addr, client_config(Some(&pki().no_role), BOTH)).unwrap();
    assert_eq!(call(&mut c, 1, &fc3(0, 2)).unwrap(), fc3_ok(&[0, 0]));
    assert_eq!(f.roles.seen(), [(None, 0x03)]);
    f.stop();
}

#[test]
fn server_only_mode_serves_a_client_without_certificate() {
    let f = Fixture::start(TlsClientAuth::None, Duration::from_secs(5));
    assert!(f.server.tls_config().is_server_only());
    let mut c = tls_connect(f.addr, client_config(None, BOTH)).unwrap();
    assert_eq!(call(&mut c, 1, &fc16(3, &[0xBEEF])).unwrap(), [0x10, 0, 3, 0, 1]);
    assert_eq!(call(&mut c, 2, &fc3(3, 1)).unwrap(), fc3_ok(&[0xBEEF]));
    assert_eq!(f.roles.seen(), [(None, 0x10), (None, 0x03)]);
    f.stop();
}

#[test]
fn graceful_shutdown_answers_the_request_in_flight() {
    let f = Fixture::mbaps();
    let mut c = tls_connect(f.addr, client_config(Some(&pki().operator), BOTH)).unwrap();
    call(&mut c, 1, &fc16(0, &[5])).unwrap();
    c.write_all(&mbap(2, 1, &fc3(0, 1))).unwrap();
    c.flush().unwrap();
    let s = Arc::clone(&f.server);
    let shut = std::thread::spawn(move || s.shutdown());
    assert_eq!(read_pdu(&mut c, 2).unwrap(), fc3_ok(&[5]));
    // Then the connection closes (close_notify: a clean end of stream).
    let mut rest = [0u8; 8];
    assert_eq!(c.read(&mut rest).expect("clean TLS close"), 0);
    assert!(wait_for(TLS_STEP, || shut.is_finished()), "shutdown returned");
    shut.join().unwrap();
    f.stop();
}

#[test]
fn handshake_timeout_closes_a_silent_client() {
    let f = Fixture::start(TlsClientAuth::Required(roots()), Duration::from_millis(200));
    let mut raw = TcpStream::connect(f.addr).unwrap();
    raw.set_read_timeout(Some(TLS_STEP)).unwrap();
    let mut b = [0u8; 8];
    let r = raw.read(&mut b);
    assert!(
        matches!(&r, Ok(0)) || matches!(&r, Err(e) if e.kind() != std::io::ErrorKind::WouldBlock),
        "{r:?}"
    );
    f.wait_refusals(1);
    assert_eq!(engine_calls(&f.engine), 0);
    f.stop();
}

#[test]
fn a_stop_cuts_a_handshake_in_progress() {
    // A silent client and a long handshake timeout: the stop still ends the server at once.
    let f = Fixture::start(TlsClientAuth::Required(roots()), Duration::from_secs(60));
    let _raw = TcpStream::connect(f.addr).unwrap();
    assert!(wait_for(TLS_STEP, || f.server.stats().active() == 1));
    let start = std::time::Instant::now();
    f.stop();
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
}

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
