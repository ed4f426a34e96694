//! The serial server over a pseudo terminal and a socket pair.
#![cfg(all(unix, feature = "serial"))]

mod common;

use async_io::Async;
use coilwork_async_std::{SerialServer, SerialServerConfig, ServerError, start_serial_server};
use common::*;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

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
    within(STEP, s.read_exact(&mut v))
        .await
        .expect("answer in time")
        .expect("read");
    v
}

async fn nothing_within<S: AsyncRead + Unpin>(s: &mut S, d: Duration) -> bool {
    let mut b = [0u8; 64];
    within(d, s.read(&mut b)).await.is_none()
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    s.write_all(bytes).await.unwrap();
    s.flush().await.unwrap();
}

/// A pty pair: the master (the test's end) and the slave's path, plus the slave held open.
fn pty() -> (Async<File>, String, File) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let path = ptsname(&master, Vec::new()).unwrap().into_string().unwrap();
    // Held open until the server has the port, so the master never reads EIO meanwhile.
    let slave = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    // Raw from the start, like a real line: no echo, no line editing, even before the server sets it up.
    let mut t = rustix::termios::tcgetattr(&slave).unwrap();
    t.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &t).unwrap();
    (Async::new(File::from(master)).unwrap(), path, slave)
}

/// A server on `line` (a pipe standing in for a port), served on a task.
fn serve_line<L: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    rt: Rt,
    engine: Arc<coilwork_core::Engine>,
    config: SerialServerConfig,
    line: L,
) -> (Arc<SerialServer>, Join<Result<(), ServerError>>) {
    let server = Arc::new(SerialServer::new(engine, config));
    let s = Arc::clone(&server);
    (server, rt.spawn(async move { s.serve_line(line).await }))
}

async fn rtu_on_a_pty_with_line_silence(rt: Rt) {
    let (mut master, path, slave) = pty();
    let config = SerialServerConfig {
        baud_rate: 9600,
        auto_open: false,
        ..SerialServerConfig::new(path)
    };
    let server = Arc::new(SerialServer::new(engine(), config));
    let s = Arc::clone(&server);
    let task = rt.spawn(async move { s.serve_forever().await });
    assert!(
        eventually(|| server.stats().opened() == 1).await,
        "server opened the pty by its path"
    );
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
    rt.sleep(Duration::from_millis(60)).await;
    send(&mut master, &req[4..]).await;
    assert!(
        nothing_within(&mut master, Duration::from_millis(300)).await,
        "split frame not answered"
    );
    // The line is fine afterwards.
    send(&mut master, &req).await;
    assert_eq!(read_n(&mut master, 7).await, rtu(0x11, &[0x03, 0x02, 0x02, 0x2B]));

    within(STEP, server.shutdown()).await.expect("stops");
    let r = within(STEP, task).await.expect("serve returns");
    assert!(r.is_ok(), "{r:?}");
}

async fn local_echo_is_dropped(rt: Rt) {
    let (client, line) = UnixStream::pair().unwrap();
    let (mut client, line) = (Async::new(client).unwrap(), Async::new(line).unwrap());
    let config = SerialServerConfig {
        local_echo: true,
        ..SerialServerConfig::new("pipe")
    };
    let (server, task) = serve_line(rt, engine(), config, line);

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
    let r = within(STEP, task).await.expect("serve_line returns");
    assert!(r.is_ok());
}

async fn ascii_on_a_pipe(rt: Rt) {
    let (client, line) = UnixStream::pair().unwrap();
    let (mut client, line) = (Async::new(client).unwrap(), Async::new(line).unwrap());
    let config = SerialServerConfig {
        framing: coilwork_core::Framing::Ascii,
        ..SerialServerConfig::new("pipe")
    };
    let (server, task) = serve_line(rt, engine(), config, line);
    // FC3, unit 0x11, 3 registers from 0x6B: LRC = -(0x11+0x03+0x6B+0x03) = 0x7E.
    send(&mut client, b":1103006B00037E\r\n").await;
    // Answer: 11 03 06 00 00 00 00 00 00, LRC = -(0x11+0x03+0x06) = 0xE6.
    let want = b":110306000000000000E6\r\n";
    assert_eq!(read_n(&mut client, want.len()).await, want.to_vec());
    // The peer hanging up is a line failure.
    drop(client);
    let r = within(STEP, task).await.expect("serve_line returns");
    assert!(matches!(r, Err(ServerError::Io(_))), "{r:?}");
    assert_eq!(server.stats().line_errors(), 1);
}

async fn missing_port_error_or_retry(rt: Rt) {
    let path = "/dev/coilwork-no-such-port";
    let server = SerialServer::new(
        engine(),
        SerialServerConfig {
            auto_open: false,
            ..SerialServerConfig::new(path)
        },
    );
    assert!(matches!(server.open(), Err(ServerError::SerialOpen { .. })));
    let err = within(STEP, server.serve_forever())
        .await
        .expect("returns")
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
    let task = rt.spawn(async move { s.serve_forever().await });
    assert!(
        eventually(|| server.stats().open_failures() >= 3).await,
        "auto_open keeps trying"
    );
    server.handle().stop();
    assert!(within(STEP, task).await.expect("returns").is_ok());
}

async fn start_serial_server_on_a_pty(_rt: Rt) {
    let (mut master, path, slave) = pty();
    let handle = start_serial_server(
        engine(),
        SerialServerConfig {
            framing: coilwork_core::Framing::Ascii,
            ..SerialServerConfig::new(path)
        },
    )
    .unwrap();
    // Written maybe before the server has opened the port: the raw pty keeps it.
    send(&mut master, b":1103006B00037E\r\n").await;
    let want = b":110306000000000000E6\r\n";
    assert_eq!(read_n(&mut master, want.len()).await, want.to_vec());
    drop(slave);
    assert!(handle.shutdown_blocking(Some(STEP)));
}

async fn delivery_split_pauses_the_line(rt: Rt) {
    let pause = Duration::from_millis(300);
    let (client, line) = UnixStream::pair().unwrap();
    let (mut client, line) = (Async::new(client).unwrap(), Async::new(line).unwrap());
    let (server, task) = serve_line(
        rt,
        delivery_engine(Duration::ZERO, Some((3, pause))),
        SerialServerConfig::new("pipe"),
        line,
    );
    send(&mut client, &rtu(1, &fc3(0, 1))).await;
    let sent = std::time::Instant::now();
    let want = rtu(1, &[0x03, 0x02, 0x00, 0x00]);
    assert_eq!(read_n(&mut client, 3).await, want[..3]);
    assert!(
        nothing_within(&mut client, pause / 3).await,
        "only the first piece came"
    );
    assert_eq!(read_n(&mut client, want.len() - 3).await, want[3..]);
    assert!(sent.elapsed() >= pause, "rest after {:?}", sent.elapsed());
    server.handle().stop();
    let r = within(STEP, task).await.expect("serve_line returns");
    assert!(r.is_ok());
}

/// A line that reads from a socket but never takes a byte written to it
/// (as one held by flow control).
struct StuckLine(Async<UnixStream>);

impl AsyncRead for StuckLine {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for StuckLine {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Pending
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A stop is not held by a line that never takes the answer: after
/// `shutdown_timeout` the line is let go.
async fn a_stop_is_not_held_by_a_line_that_takes_no_bytes(rt: Rt) {
    let grace = Duration::from_millis(300);
    let (client, line) = UnixStream::pair().unwrap();
    let (mut client, line) = (Async::new(client).unwrap(), StuckLine(Async::new(line).unwrap()));
    let config = SerialServerConfig {
        shutdown_timeout: grace,
        ..SerialServerConfig::new("pipe")
    };
    let (server, task) = serve_line(rt, engine(), config, line);
    send(&mut client, &rtu(1, &fc3(0, 1))).await;
    // The stop must find the request read (a fixed sleep loses this race on
    // a busy machine); the drain then owes its answer, which sticks.
    let read_by = std::time::Instant::now() + STEP;
    while server.server_stats().bytes_in() < 8 {
        assert!(std::time::Instant::now() < read_by, "the request was never read");
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
    let stopping = std::time::Instant::now();
    server.handle().stop();
    let r = within(STEP, task)
        .await
        .expect("the stop is not held by the stuck write");
    assert!(r.is_ok(), "{r:?}");
    assert!(
        stopping.elapsed() >= grace,
        "the answer had its shutdown timeout: {:?}",
        stopping.elapsed()
    );
}

tests!(
    smol: delivery_split_pauses_the_line, a_stop_is_not_held_by_a_line_that_takes_no_bytes, rtu_on_a_pty_with_line_silence, local_echo_is_dropped, ascii_on_a_pipe, missing_port_error_or_retry,
        start_serial_server_on_a_pty;
    async_std: rtu_on_a_pty_with_line_silence, local_echo_is_dropped, a_stop_is_not_held_by_a_line_that_takes_no_bytes
);
