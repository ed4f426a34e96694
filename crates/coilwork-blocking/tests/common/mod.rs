//! A tiny hand-written MBAP client on std sockets, and server fixtures.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Every blocking step of a test is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

// MBAP frame and PDU builders, shared with the conformance suite's client.
#[allow(unused_imports)] // not every test file uses every builder
pub use coilwork_conformance::client::{
    Answer, adu, adu_with_protocol, fc1, fc3, fc3_answer, fc15, fc16, pack, pdu, rtu,
};
#[allow(unused_imports)] // not every test file serves it
pub use coilwork_conformance::fixture::plain_engine as engine;

/// Connects with read and write timeouts of [`STEP`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, STEP).expect("connect");
    s.set_read_timeout(Some(STEP)).unwrap();
    s.set_write_timeout(Some(STEP)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads one MBAP ADU (bounded by the stream's read timeout).
pub fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut head = [0u8; 7];
    stream.read_exact(&mut head).expect("answer header in time");
    let mut pdu = vec![0u8; Answer::pdu_len(&head)];
    stream.read_exact(&mut pdu).expect("answer pdu in time");
    Answer::new(&head, pdu)
}

/// Sends one request and reads its answer; checks the transaction id and unit echo.
pub fn call(stream: &mut TcpStream, tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    stream.write_all(&adu(tid, unit, pdu)).expect("write");
    let a = read_answer(stream);
    assert_eq!(a.tid, tid, "transaction id echoed");
    assert_eq!(a.unit, unit, "unit echoed");
    a.pdu
}

/// Waits until the server closes the stream: true on EOF or reset, false on data or timeout.
pub fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 16];
    let r = match stream.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    };
    stream.set_read_timeout(Some(STEP)).unwrap();
    r
}

/// Polls `cond` until it holds or `within` passed (the conformance suite's `eventually`).
#[allow(unused_imports)] // not every test file waits
pub use coilwork_conformance::client::eventually as wait_until;

/// The FC3 delivery hook and its engine, shared with the conformance suite.
#[allow(unused_imports)] // Not every test binary uses it.
pub use coilwork_test_support::hooks::delivery_engine;
