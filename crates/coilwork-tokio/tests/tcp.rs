//! The tokio TCP server's own API over real loopback sockets: the
//! port-in-use error, deferred start with a handle stopped from another
//! thread, `start_tcp_server`.
//! What every adapter must do is the conformance suite's
//! (`coilwork_conformance::replaced` lists the tests it took over).

mod common;

use coilwork_tokio::{ServerError, TcpServer, TcpServerConfig, start_tcp_server};
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

fn config() -> TcpServerConfig {
    TcpServerConfig::new("127.0.0.1:0".parse().unwrap())
}

/// Binds, spawns `serve_forever`, returns the server, its address and the serve task.
fn start(config: TcpServerConfig) -> (Arc<TcpServer>, SocketAddr, JoinHandle<Result<(), ServerError>>) {
    let server = Arc::new(TcpServer::new(engine(), config));
    let addr = server.bind().expect("bind");
    let s = Arc::clone(&server);
    let task = tokio::spawn(async move { s.serve_forever().await });
    (server, addr, task)
}

async fn stop(server: &TcpServer, task: JoinHandle<Result<(), ServerError>>) {
    tokio::time::timeout(STEP, server.shutdown())
        .await
        .expect("shutdown in time");
    let r = tokio::time::timeout(STEP, task)
        .await
        .expect("serve returns")
        .expect("join");
    assert!(r.is_ok(), "serve_forever: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_a_clear_error() {
    let (server, addr, task) = start(config());
    let other = TcpServer::new(engine(), TcpServerConfig::new(addr));
    let err = other.bind().expect_err("port is taken");
    assert!(matches!(err, ServerError::AddrInUse { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot listen on {addr}: address already in use")
    );
    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_does_not_bind_and_handle_stops_from_another_thread() {
    let server = Arc::new(TcpServer::new(engine(), config()));
    assert!(server.local_addr().is_none(), "defer start: nothing bound yet");
    let s = Arc::clone(&server);
    let task = tokio::spawn(async move { s.serve_forever().await });
    let handle = server.handle();
    let mut addr = None;
    for _ in 0..100 {
        addr = handle.local_addr();
        if addr.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = connect(addr.expect("bound by serve_forever")).await;
    call(&mut c, 1, 1, &fc3(0, 1)).await;
    std::thread::spawn(move || handle.stop()).join().unwrap();
    let r = tokio::time::timeout(STEP, task).await.expect("serve returns").unwrap();
    assert!(r.is_ok());
    assert!(closed_by_server(&mut c, STEP).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_tcp_server_and_stop() {
    let handle = start_tcp_server(engine(), config()).await.expect("start");
    let addr = handle.local_addr().expect("bound");
    let mut c = connect(addr).await;
    assert_eq!(call(&mut c, 1, 1, &fc3(0, 2)).await, fc3_answer(&[0, 0]));
    tokio::time::timeout(STEP, handle.shutdown()).await.expect("stops");
    assert!(handle.is_stopped());
}
