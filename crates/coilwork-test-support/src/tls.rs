//! A blocking TLS test client (rustls `ClientConnection` in a `StreamOwned`
//! over a std `TcpStream`), an authorizer that records roles, and MBAP
//! helpers, for the TLS tests of every adapter and the conformance suite.

use crate::pki::Identity;
pub use crate::pki::{cert, key, pki, roots};
use coilwork_core::Engine;
use coilwork_core::diagnostics::DiagnosticCounter;
use coilwork_core::engine::{Access, AccessRequest, Authorizer};
use coilwork_core::storage::{DeviceContext, ServerContext};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned, SupportedProtocolVersion};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every blocking client step is bounded by this.
pub const TLS_STEP: Duration = Duration::from_secs(10);

/// Records the role of every request; denies writes to role "viewer".
#[derive(Default)]
pub struct Roles {
    /// (role, function code) of every request, in order.
    pub seen: Mutex<Vec<(Option<String>, u8)>>,
}

impl Authorizer for Roles {
    fn authorize(&self, r: &AccessRequest<'_>) -> bool {
        self.seen.lock().unwrap().push((r.role.map(str::to_owned), r.function));
        !(r.role == Some("viewer") && r.access == Access::Write)
    }
}

impl Roles {
    /// What was seen so far.
    pub fn seen(&self) -> Vec<(Option<String>, u8)> {
        self.seen.lock().unwrap().clone()
    }
}

/// An engine (100 entries per table) asking `roles` about every request.
pub fn engine_with(roles: &Arc<Roles>) -> Arc<Engine> {
    let device = DeviceContext::with_sizes(100, 100, 100, 100).unwrap();
    Arc::new(
        Engine::builder(ServerContext::single(device))
            .authorizer(Arc::clone(roles) as Arc<dyn Authorizer>)
            .build(),
    )
}

/// PDUs the engine was handed.
pub fn engine_calls(engine: &Engine) -> u16 {
    engine.bus_diagnostics().get(DiagnosticCounter::BusMessage)
}

/// TLS 1.3 and 1.2.
pub const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A client trusting the test CA, presenting `identity` if any, speaking `versions`.
pub fn client_config(identity: Option<&Identity>, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
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

/// A blocking TLS client.
pub type TlsClient = StreamOwned<ClientConnection, TcpStream>;

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Connects and runs the handshake (each socket operation bounded by [`TLS_STEP`]).
pub fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsClient> {
    let mut tcp = TcpStream::connect_timeout(&addr, TLS_STEP)?;
    tcp.set_read_timeout(Some(TLS_STEP))?;
    tcp.set_write_timeout(Some(TLS_STEP))?;
    let mut conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            assert!(!is_timeout(&e), "handshake timed out: {e}");
            return Err(e);
        }
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// An MBAP ADU: header (protocol id 0) + PDU.
pub fn mbap(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(7 + pdu.len());
    v.extend_from_slice(&tid.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
    v.push(unit);
    v.extend_from_slice(pdu);
    v
}

/// Reads one answer; checks the MBAP echo of `tid` and unit 1.
pub fn read_pdu(s: &mut TlsClient, tid: u16) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 7];
    s.read_exact(&mut head)?;
    assert_eq!(u16::from_be_bytes([head[0], head[1]]), tid, "transaction id echoed");
    assert_eq!(&head[2..4], &[0, 0]);
    assert_eq!(head[6], 1, "unit echoed");
    let len = u16::from_be_bytes([head[4], head[5]]) as usize;
    let mut pdu = vec![0u8; len - 1];
    s.read_exact(&mut pdu)?;
    Ok(pdu)
}

/// Sends one request to unit 1 and reads its answer; a timeout fails the test.
pub fn call(s: &mut TlsClient, tid: u16, pdu: &[u8]) -> std::io::Result<Vec<u8>> {
    let r = s
        .write_all(&mbap(tid, 1, pdu))
        .and_then(|()| s.flush())
        .and_then(|()| read_pdu(s, tid));
    if let Err(e) = &r {
        assert!(!is_timeout(e), "no answer in time: {e}");
    }
    r
}

/// True if the server refused this client: the handshake failed, or the
/// first request got no answer before the connection closed (TLS 1.3: the
/// client finishes its handshake before the server has checked its
/// certificate).
pub fn refused(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    match tls_connect(addr, config) {
        Err(_) => true,
        Ok(mut s) => call(&mut s, 1, &[0x03, 0, 0, 0, 1]).is_err(),
    }
}

/// True once the server closed `s` (clean `close_notify` or not), within [`TLS_STEP`].
pub fn closed_by_server(s: &mut TlsClient) -> bool {
    let mut rest = [0u8; 8];
    match s.read(&mut rest) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected {n} bytes after the last answer"),
        Err(e) => {
            assert!(!is_timeout(&e), "not closed in time");
            true
        }
    }
}

/// Polls `cond` until true or `within` passed.
pub fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Expected FC3 response PDU.
pub fn fc3_ok(values: &[u16]) -> Vec<u8> {
    let mut v = vec![0x03, (values.len() * 2) as u8];
    for x in values {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}
