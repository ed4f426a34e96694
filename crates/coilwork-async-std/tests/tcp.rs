//! The futures-io TCP server's own API over real loopback sockets (`bind`,
//! deferred start, `server_close`, the port-in-use error, `start_tcp_server`)
//! and its runtime specifics (`Send` futures, no executor at all); the
//! bodies run under smol, most under async-std too.
//! What every adapter must do is the conformance suite's
//! (`coilwork_conformance::replaced` lists the tests it took over).

mod common;

use coilwork_async_std::{ServerError, TcpServer, TcpServerConfig, start_tcp_server};
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;

fn config() -> TcpServerConfig {
    TcpServerConfig::new("127.0.0.1:0".parse().unwrap())
}

/// Binds, spawns `serve_forever` on the runtime, returns the server, its address and the serve task.
fn start(rt: Rt, config: TcpServerConfig) -> (Arc<TcpServer>, SocketAddr, Join<Result<(), ServerError>>) {
    start_engine(rt, engine(), config)
}

/// [`start`] serving `engine`.
fn start_engine(
    rt: Rt,
    engine: Arc<coilwork_core::Engine>,
    config: TcpServerConfig,
) -> (Arc<TcpServer>, SocketAddr, Join<Result<(), ServerError>>) {
    let server = Arc::new(TcpServer::new(engine, config));
    let addr = server.bind().expect("bind");
    let s = Arc::clone(&server);
    let task = rt.spawn(async move { s.serve_forever().await });
    (server, addr, task)
}

async fn stop(server: &TcpServer, task: Join<Result<(), ServerError>>) {
    within(STEP, server.shutdown()).await.expect("shutdown in time");
    let r = within(STEP, task).await.expect("serve returns");
    assert!(r.is_ok(), "serve_forever: {r:?}");
    assert!(server.handle().is_stopped());
}

async fn port_in_use(rt: Rt) {
    let (server, addr, task) = start(rt, config());
    let other = TcpServer::new(engine(), TcpServerConfig::new(addr));
    let err = other.bind().expect_err("port is taken");
    assert!(matches!(err, ServerError::AddrInUse { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot listen on {addr}: address already in use")
    );
    // Once it serves (a client was answered), serving twice is refused.
    let mut c = connect(addr).await;
    call(&mut c, 1, 1, &fc3(0, 1)).await;
    let again = within(STEP, server.serve_forever()).await.expect("refused at once");
    assert!(matches!(again, Err(ServerError::AlreadyServing)), "{again:?}");
    stop(&server, task).await;
}

async fn defer_start_and_stop_from_another_thread(rt: Rt) {
    let server = Arc::new(TcpServer::new(engine(), config()));
    assert!(server.local_addr().is_none(), "defer start: nothing bound yet");
    let s = Arc::clone(&server);
    let task = rt.spawn(async move { s.serve_forever().await });
    let handle = server.handle();
    assert!(
        eventually(|| handle.local_addr().is_some()).await,
        "bound by serve_forever"
    );
    let mut c = connect(handle.local_addr().unwrap()).await;
    call(&mut c, 1, 1, &fc3(0, 1)).await;
    std::thread::spawn(move || handle.stop()).join().unwrap();
    let r = within(STEP, task).await.expect("serve returns");
    assert!(r.is_ok());
    assert!(closed_by_server(&mut c, STEP).await);
}

async fn server_close_before_serving(_rt: Rt) {
    let server = TcpServer::new(engine(), config());
    let addr = server.bind().unwrap();
    server.server_close();
    assert!(server.handle().is_stopped());
    assert!(matches!(server.bind(), Err(ServerError::Closed)));
    // serve_forever after a close returns at once.
    assert!(within(STEP, server.serve_forever()).await.expect("returns").is_ok());
    let again = within(STEP, async_io::Async::<std::net::TcpStream>::connect(addr))
        .await
        .expect("connect answered");
    assert!(again.is_err(), "listener released");
}

async fn start_tcp_server_on_its_own_thread(_rt: Rt) {
    let handle = start_tcp_server(engine(), config()).expect("start");
    let addr = handle.local_addr().expect("bound");
    let mut c = connect(addr).await;
    assert_eq!(call(&mut c, 1, 1, &fc3(0, 2)).await, fc3_answer(&[0, 0]));
    let h = handle.clone();
    // A plain thread stops it and waits.
    let stopped = std::thread::spawn(move || h.shutdown_blocking(Some(STEP)))
        .join()
        .unwrap();
    assert!(stopped && handle.is_stopped());
    assert!(closed_by_server(&mut c, STEP).await);
}

#[test]
fn serve_forever_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let server = TcpServer::new(engine(), config());
    assert_send(&server.serve_forever());
    assert_send(&server.shutdown());
}

tests!(
    smol: port_in_use, defer_start_and_stop_from_another_thread, server_close_before_serving,
        start_tcp_server_on_its_own_thread;
    async_std: port_in_use, defer_start_and_stop_from_another_thread, server_close_before_serving
);

/// No executor at all: `serve_forever` and the client are zipped in one `block_on`.
#[test]
fn driven_by_futures_lite_block_on_without_spawning() {
    let server = TcpServer::new(engine(), config());
    let addr = server.bind().unwrap();
    let client = async {
        let mut c = connect(addr).await;
        let r = call(&mut c, 1, 1, &fc16(1, &[7])).await;
        assert_eq!(call(&mut c, 2, 1, &fc3(1, 1)).await, fc3_answer(&[7]));
        server.handle().stop();
        r
    };
    let (served, r) = futures_lite::future::block_on(async {
        within(STEP, futures_lite::future::zip(server.serve_forever(), client))
            .await
            .expect("in time")
    });
    assert!(served.is_ok());
    assert_eq!(r, vec![0x10, 0, 1, 0, 1]);
}
