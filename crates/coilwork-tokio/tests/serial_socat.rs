//! The tokio serial server's `auto_open` on a socat pty pair: the port the
//! server is told to open appears later, and it opens it then.
//! What every adapter does on a serial line is the conformance suite's.
//!
//! socat is required when `COILWORK_REQUIRE_CLIENTS` is set (`.ci/test`);
//! otherwise a missing socat skips these tests with a message.
#![cfg(all(unix, feature = "serial"))]

mod common;

use coilwork_test_support::PtyPair;
use coilwork_tokio::{Parity, SerialServer, SerialServerConfig};
use common::{STEP, engine, fc3, fc3_answer, fc16, rtu};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_serial::{SerialPortBuilderExt, SerialStream};

/// Opens the client's end of the line.
fn open_client(path: &Path) -> SerialStream {
    tokio_serial::new(path.to_string_lossy(), 19_200)
        .parity(tokio_serial::Parity::None)
        .open_native_async()
        .expect("open client end")
}

/// RTU at 19200 8N1 on `port`, not reopened.
fn rtu_config(port: &Path) -> SerialServerConfig {
    SerialServerConfig {
        parity: Parity::None,
        auto_open: false,
        ..SerialServerConfig::new(port.to_string_lossy())
    }
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    tokio::time::timeout(STEP, async {
        s.write_all(bytes).await.expect("write");
        s.flush().await.expect("flush");
    })
    .await
    .expect("write in time");
}

async fn read_n<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    tokio::time::timeout(STEP, s.read_exact(&mut v))
        .await
        .expect("answer in time")
        .expect("read");
    v
}

fn fc16_echo(addr: u16, qty: u16) -> Vec<u8> {
    let mut v = vec![0x10];
    v.extend_from_slice(&addr.to_be_bytes());
    v.extend_from_slice(&qty.to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_open_waits_for_a_port_that_appears_later() {
    let Some(pair) = PtyPair::new("auto-open") else { return };
    // The port the server is told to open appears only later, as a link to the pty.
    let (a, b) = (pair.dir().join("later"), pair.client_end());
    let config = SerialServerConfig {
        auto_open: true,
        reconnect_delay: Duration::from_millis(100),
        ..rtu_config(&a)
    };
    // No `open()` first: the port does not exist yet.
    let server = Arc::new(SerialServer::new(engine(), config));
    let s = Arc::clone(&server);
    let task = tokio::spawn(async move {
        let r = s.serve_forever().await;
        assert!(r.is_ok(), "serve_forever: {r:?}");
    });

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.stats().opened(), 0);
    let failures = server.stats().open_failures();
    assert!(
        (2..=8).contains(&failures),
        "retried every 100 ms: {failures} failures in 500 ms"
    );

    std::os::unix::fs::symlink(pair.server_end(), &a).expect("link the port");
    let start = Instant::now();
    while server.stats().opened() == 0 {
        assert!(start.elapsed() < STEP, "server never opened the new port");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "opened {:?} after the port appeared",
        start.elapsed()
    );
    let mut line = open_client(&b);
    send(&mut line, &rtu(1, &fc16(0, &[5, 6]))).await;
    assert_eq!(read_n(&mut line, 8).await, rtu(1, &fc16_echo(0, 2)));
    send(&mut line, &rtu(1, &fc3(0, 2))).await;
    assert_eq!(read_n(&mut line, 9).await, rtu(1, &fc3_answer(&[5, 6])));
    assert_eq!(server.stats().opened(), 1);

    tokio::time::timeout(STEP, server.shutdown()).await.expect("stops");
    tokio::time::timeout(STEP, task)
        .await
        .expect("task ends")
        .expect("no panic");
}
