//! The tokio serial server's own API: a missing port's error and retries,
//! and `serve_line` on an in-memory line that takes no bytes.
//! What every adapter must do is the conformance suite's
//! (`coilwork_conformance::replaced` lists the tests it took over).
#![cfg(all(unix, feature = "serial"))]

mod common;

use coilwork_tokio::{SerialServer, SerialServerConfig, ServerError};
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    s.write_all(bytes).await.unwrap();
    s.flush().await.unwrap();
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
