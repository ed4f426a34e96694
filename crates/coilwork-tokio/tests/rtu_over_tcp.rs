//! RTU framing over a TCP stream (no line timing: frames found by length and CRC).

mod common;

use coilwork_core::Framing;
use coilwork_tokio::{TcpServer, TcpServerConfig};
use common::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// CRC-16/MODBUS, written out here so the test does not trust the codec under test.
fn crc(bytes: &[u8]) -> [u8; 2] {
    let mut c: u16 = 0xFFFF;
    for b in bytes {
        c ^= u16::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xA001 } else { c >> 1 };
        }
    }
    c.to_le_bytes()
}

fn rtu(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = vec![unit];
    v.extend_from_slice(pdu);
    let c = crc(&v);
    v.extend_from_slice(&c);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_frames_over_tcp_pipelined() {
    // The spec's FC3 example request (unit 0x11, 3 registers from 0x6B) has CRC 0x8776.
    assert_eq!(
        rtu(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03]),
        vec![0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87]
    );

    let server = Arc::new(TcpServer::new(
        engine(),
        TcpServerConfig {
            framing: Framing::Rtu,
            ..TcpServerConfig::new("127.0.0.1:0".parse().unwrap())
        },
    ));
    let addr = server.bind().unwrap();
    let s = Arc::clone(&server);
    let task = tokio::spawn(async move { s.serve_forever().await });

    let mut c = connect(addr).await;
    let mut batch = rtu(0x11, &fc16(0x6B, &[0x022B, 0x0000, 0x0064]));
    batch.extend_from_slice(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87]);
    c.write_all(&batch).await.unwrap();

    let want_write = rtu(0x11, &[0x10, 0x00, 0x6B, 0x00, 0x03]);
    let want_read = rtu(0x11, &[0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64]);
    let mut got = vec![0u8; want_write.len() + want_read.len()];
    tokio::time::timeout(STEP, c.read_exact(&mut got))
        .await
        .expect("answers in time")
        .unwrap();
    assert_eq!(&got[..want_write.len()], &want_write[..]);
    assert_eq!(&got[want_write.len()..], &want_read[..]);

    tokio::time::timeout(STEP, server.shutdown()).await.unwrap();
    assert!(tokio::time::timeout(STEP, task).await.unwrap().unwrap().is_ok());
}
