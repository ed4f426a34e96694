//! A tiny hand-written MBAP client and server fixtures for the tests.
#![allow(dead_code)]

use coilwork_core::Engine;
use coilwork_core::storage::{DeviceContext, ServerContext};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test step is bounded by this.
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

/// Reads one MBAP ADU (bounded by [`STEP`]).
pub async fn read_answer(stream: &mut TcpStream) -> Answer {
    tokio::time::timeout(STEP, async {
        let mut head = [0u8; 7];
        stream.read_exact(&mut head).await.expect("answer header");
        assert_eq!(&head[2..4], &[0, 0], "protocol id of the answer");
        let len = u16::from_be_bytes([head[4], head[5]]) as usize;
        assert!((2..=254).contains(&len), "answer length {len}");
        let mut pdu = vec![0u8; len - 1];
        stream.read_exact(&mut pdu).await.expect("answer pdu");
        Answer {
            tid: u16::from_be_bytes([head[0], head[1]]),
            unit: head[6],
            pdu,
        }
    })
    .await
    .expect("answer in time")
}

/// Sends one request and reads its answer; checks the transaction id and unit echo.
pub async fn call(stream: &mut TcpStream, tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    tokio::time::timeout(STEP, stream.write_all(&adu(tid, unit, pdu)))
        .await
        .expect("write in time")
        .expect("write");
    let a = read_answer(stream).await;
    assert_eq!(a.tid, tid, "transaction id echoed");
    assert_eq!(a.unit, unit, "unit echoed");
    a.pdu
}

/// Connects (bounded).
pub async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Waits until the server closes the stream: true on EOF or reset, false on data.
pub async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 16];
    match tokio::time::timeout(within, stream.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}
