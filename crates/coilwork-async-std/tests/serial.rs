//! The futures-io serial server's own API: a missing port's error and
//! retries, `start_serial_server` on a pty, and `serve_line` on a line that
//! takes no bytes.
//! What every adapter must do is the conformance suite's
//! (`coilwork_conformance::replaced` lists the tests it took over).
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

async fn read_n<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    within(STEP, s.read_exact(&mut v))
        .await
        .expect("answer in time")
        .expect("read");
    v
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
    smol: a_stop_is_not_held_by_a_line_that_takes_no_bytes, missing_port_error_or_retry, start_serial_server_on_a_pty;
    async_std: a_stop_is_not_held_by_a_line_that_takes_no_bytes
);
