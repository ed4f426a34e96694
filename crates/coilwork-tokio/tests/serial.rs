//! The serial server over a pseudo terminal and an in-memory pipe.
#![cfg(all(unix, feature = "serial"))]

mod common;

use coilwork_conformance::delivery_hook::delivery_engine;
use coilwork_tokio::{SerialServer, SerialServerConfig, ServerError};
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_serial::SerialPort;

/// CRC-16/MODBUS, written out so the test does not trust the codec under test.
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

async fn read_n<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    tokio::time::timeout(STEP, s.read_exact(&mut v))
        .await
        .expect("answer in time")
        .expect("read");
    v
}

async fn nothing_within<S: AsyncRead + Unpin>(s: &mut S, d: Duration) -> bool {
    let mut b = [0u8; 64];
    tokio::time::timeout(d, s.read(&mut b)).await.is_err()
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    s.write_all(bytes).await.unwrap();
    s.flush().await.unwrap();
}

/// A server on an in-memory line (as on a pipe), served on a task; the
/// client's end of the line.
fn serve_pipe(
    engine: Arc<coilwork_core::Engine>,
    config: SerialServerConfig,
) -> (
    tokio::io::DuplexStream,
    Arc<SerialServer>,
    tokio::task::JoinHandle<Result<(), ServerError>>,
) {
    let (client, line) = tokio::io::duplex(1024);
    let (server, task) = serve_line(engine, config, line);
    (client, server, task)
}

/// A server on `line`, served on a task.
fn serve_line(
    engine: Arc<coilwork_core::Engine>,
    config: SerialServerConfig,
    line: tokio::io::DuplexStream,
) -> (Arc<SerialServer>, tokio::task::JoinHandle<Result<(), ServerError>>) {
    let server = Arc::new(SerialServer::new(engine, config));
    let s = Arc::clone(&server);
    (server, tokio::spawn(async move { s.serve_line(line).await }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_on_a_pty_with_line_silence() {
    let (mut master, slave) = tokio_serial::SerialStream::pair().expect("pty pair");
    let path = slave.name().expect("pty has a path");
    let config = SerialServerConfig {
        baud_rate: 9600,
        auto_open: false,
        ..SerialServerConfig::new(path)
    };
    let server = Arc::new(SerialServer::new(engine(), config));
    let s = Arc::clone(&server);
    let task = tokio::spawn(async move { s.serve_forever().await });
    let mut opened = false;
    for _ in 0..200 {
        if server.stats().opened() == 1 {
            opened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(opened, "server opened the pty by its path");
    drop(slave);

    let write = rtu(0x11, &fc16(0x6B, &[0x022B, 0x0000, 0x0064]));
    send(&mut master, &write).await;
    assert_eq!(read_n(&mut master, 8).await, rtu(0x11, &[0x10, 0x00, 0x6B, 0x00, 0x03]));
    // The spec's FC3 example request and its answer.
    send(&mut master, &[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87]).await;
    assert_eq!(
        read_n(&mut master, 11).await,
        rtu(0x11, &[0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64])
    );

    // A frame cut by more than t3.5 of silence (4 ms at 9600 8E1) is two
    // fragments, both discarded: no answer, even though the bytes together
    // would be a valid request.
    let req = rtu(0x11, &fc3(0x6B, 1));
    send(&mut master, &req[..4]).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    send(&mut master, &req[4..]).await;
    assert!(
        nothing_within(&mut master, Duration::from_millis(300)).await,
        "split frame not answered"
    );
    // The line is fine afterwards.
    send(&mut master, &req).await;
    assert_eq!(read_n(&mut master, 7).await, rtu(0x11, &[0x03, 0x02, 0x02, 0x2B]));

    tokio::time::timeout(STEP, server.shutdown()).await.expect("stops");
    let r = tokio::time::timeout(STEP, task).await.unwrap().unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_echo_is_dropped() {
    let config = SerialServerConfig {
        local_echo: true,
        ..SerialServerConfig::new("pipe")
    };
    let (mut client, server, task) = serve_pipe(engine(), config);

    // FC6's answer equals its request: if the echo were not dropped it
    // would run again and be answered twice.
    let fc6 = rtu(1, &[0x06, 0x00, 0x01, 0x00, 0x2A]);
    send(&mut client, &fc6).await;
    let answer = read_n(&mut client, 8).await;
    assert_eq!(answer, fc6);
    send(&mut client, &answer).await; // the RS-485 echo of what the server sent
    send(&mut client, &rtu(1, &fc3(1, 1))).await;
    assert_eq!(read_n(&mut client, 7).await, rtu(1, &[0x03, 0x02, 0x00, 0x2A]));

    server.handle().stop();
    let r = tokio::time::timeout(STEP, task).await.unwrap().unwrap();
    assert!(r.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ascii_on_a_pipe() {
    let config = SerialServerConfig {
        framing: coilwork_core::Framing::Ascii,
        ..SerialServerConfig::new("pipe")
    };
    let (mut client, server, task) = serve_pipe(engine(), config);
    // FC3, unit 0x11, 3 registers from 0x6B: LRC = -(0x11+0x03+0x6B+0x03) = 0x7E.
    send(&mut client, b":1103006B00037E\r\n").await;
    // Answer: 11 03 06 00 00 00 00 00 00, LRC = -(0x11+0x03+0x06) = 0xE6.
    let want = b":110306000000000000E6\r\n";
    assert_eq!(read_n(&mut client, want.len()).await, want.to_vec());
    server.handle().stop();
    assert!(tokio::time::timeout(STEP, task).await.unwrap().unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_port_error_or_retry() {
    let path = "/dev/coilwork-no-such-port";
    let server = SerialServer::new(
        engine(),
        SerialServerConfig {
            auto_open: false,
            ..SerialServerConfig::new(path)
        },
    );
    let err = tokio::time::timeout(STEP, server.serve_forever())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ServerError::SerialOpen { .. }), "{err:?}");
    assert!(err.to_string().contains(path), "{err}");

    let server = Arc::new(SerialServer::new(
        engine(),
        SerialServerConfig {
            reconnect_delay: Duration::from_millis(20),
            ..SerialServerConfig::new(path)
        },
    ));
    let s = Arc::clone(&server);
    let task = tokio::spawn(async move { s.serve_forever().await });
    let mut retried = false;
    for _ in 0..200 {
        if server.stats().open_failures() >= 3 {
            retried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(retried, "auto_open keeps trying");
    server.handle().stop();
    assert!(tokio::time::timeout(STEP, task).await.unwrap().unwrap().is_ok());
}

/// A hook's split on a line: the first three bytes, silence, the rest
/// after the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_split_pauses_the_line() {
    let pause = Duration::from_millis(300);
    let (mut client, server, task) = serve_pipe(
        delivery_engine(Duration::ZERO, Some((3, pause))),
        SerialServerConfig::new("pipe"),
    );
    // Before the send: the server's pause cannot start before it.
    let sent = Instant::now();
    send(&mut client, &rtu(1, &fc3(0, 1))).await;
    let want = rtu(1, &[0x03, 0x02, 0x00, 0x00]);
    assert_eq!(read_n(&mut client, 3).await, want[..3]);
    assert!(
        nothing_within(&mut client, pause / 3).await,
        "more than the first piece at once"
    );
    assert_eq!(read_n(&mut client, want.len() - 3).await, want[3..]);
    assert!(sent.elapsed() >= pause, "rest after {:?}", sent.elapsed());
    server.handle().stop();
    assert!(tokio::time::timeout(STEP, task).await.unwrap().unwrap().is_ok());
}

/// A stop during a hook's long delay is not held up by it: the answer goes
/// out at once and the line is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_cuts_a_delivery_delay_short() {
    let (mut client, server, task) = serve_pipe(
        delivery_engine(Duration::from_secs(30), None),
        SerialServerConfig::new("pipe"),
    );
    send(&mut client, &rtu(1, &fc3(0, 1))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    server.handle().stop();
    assert!(
        tokio::time::timeout(STEP, task)
            .await
            .expect("stopped")
            .unwrap()
            .is_ok()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        stopping.elapsed()
    );
    assert_eq!(read_n(&mut client, 7).await, rtu(1, &[0x03, 0x02, 0x00, 0x00]));
}

/// A stop is not held by a line that never takes the answer (as one held by
/// flow control): after `shutdown_timeout` the line is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_is_not_held_by_a_line_that_takes_no_bytes() {
    let grace = Duration::from_millis(300);
    // Room for 4 bytes and a client that never reads: the 7-byte answer sticks.
    let (mut client, line) = tokio::io::duplex(4);
    let config = SerialServerConfig {
        shutdown_timeout: grace,
        ..SerialServerConfig::new("pipe")
    };
    let (server, task) = serve_line(engine(), config, line);
    send(&mut client, &rtu(1, &fc3(0, 1))).await;
    // The stop must find the request read (a fixed sleep lost this race on a
    // busy machine); the drain then owes its answer, which sticks.
    let sent = Instant::now() + STEP;
    while server.server_stats().bytes_in() < 8 {
        assert!(Instant::now() < sent, "the request was never read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = Instant::now();
    server.handle().stop();
    let served = tokio::time::timeout(STEP, task)
        .await
        .expect("the stop is not held by the stuck write");
    assert!(served.unwrap().is_ok());
    assert!(
        stopping.elapsed() >= grace,
        "the answer had its shutdown timeout: {:?}",
        stopping.elapsed()
    );
}
