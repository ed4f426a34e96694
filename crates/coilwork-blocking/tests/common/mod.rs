//! A tiny hand-written MBAP client on std sockets, and server fixtures.
#![allow(dead_code)]

use coilwork_core::Engine;
use coilwork_core::storage::{DeviceContext, ServerContext};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every blocking step of a test is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

// MBAP frame and PDU builders, shared with the conformance suite's client.
#[allow(unused_imports)] // not every test file uses every builder
pub use coilwork_conformance::client::{Answer, adu, adu_with_protocol, fc3, fc3_answer, fc16, pdu};

/// An engine with one device of 1000 entries per table serving every unit.
pub fn engine() -> Arc<Engine> {
    let device = DeviceContext::with_sizes(1000, 1000, 1000, 1000).expect("device");
    Arc::new(Engine::builder(ServerContext::single(device)).build())
}

/// FC1 request PDU.
pub fn fc1(addr: u16, qty: u16) -> Vec<u8> {
    pdu(0x01, &[addr, qty])
}

/// FC15 request PDU (bits packed LSB first).
pub fn fc15(addr: u16, bits: &[bool]) -> Vec<u8> {
    let packed = pack(bits);
    let mut v = vec![0x0F];
    v.extend_from_slice(&addr.to_be_bytes());
    v.extend_from_slice(&(bits.len() as u16).to_be_bytes());
    v.push(packed.len() as u8);
    v.extend_from_slice(&packed);
    v
}

/// Packs bits LSB first, as Modbus does.
pub fn pack(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, b) in bits.iter().enumerate() {
        if *b {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

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
    assert_eq!(&head[2..4], &[0, 0], "protocol id of the answer");
    let len = u16::from_be_bytes([head[4], head[5]]) as usize;
    assert!((2..=254).contains(&len), "answer length {len}");
    let mut pdu = vec![0u8; len - 1];
    stream.read_exact(&mut pdu).expect("answer pdu in time");
    Answer {
        tid: u16::from_be_bytes([head[0], head[1]]),
        unit: head[6],
        pdu,
    }
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

/// Polls `cond` every 5 ms until it holds or `within` passed.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The FC3 delivery hook and its engine, shared with the conformance suite.
#[allow(unused_imports)] // Not every test binary uses it.
pub use coilwork_test_support::hooks::delivery_engine;
