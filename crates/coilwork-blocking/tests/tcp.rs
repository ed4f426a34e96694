//! The blocking TCP server's own API over real loopback sockets: `bind`,
//! a handle that stops it from another thread, `server_close`, the
//! port-in-use error, `start_tcp_server_in_background`, and the wake of a
//! thread blocked in a read on eviction.
//! What every adapter must do is the conformance suite's
//! (`coilwork_conformance::replaced` lists the tests it took over).

mod common;

use coilwork_blocking::{
    OverflowPolicy, ServerError, ServerHandle, TcpServer, TcpServerConfig, start_tcp_server_in_background,
};
use common::*;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn config() -> TcpServerConfig {
    TcpServerConfig::new("127.0.0.1:0".parse().unwrap())
}

type Serve = JoinHandle<Result<(), ServerError>>;

/// Binds, runs `serve_forever` on a thread, returns the server, its address and the thread.
fn start(config: TcpServerConfig) -> (Arc<TcpServer>, SocketAddr, Serve) {
    start_engine(engine(), config)
}

/// [`start`] serving `engine`.
fn start_engine(engine: Arc<coilwork_core::Engine>, config: TcpServerConfig) -> (Arc<TcpServer>, SocketAddr, Serve) {
    let server = Arc::new(TcpServer::new(engine, config));
    let addr = server.bind().expect("bind");
    let s = Arc::clone(&server);
    let thread = std::thread::spawn(move || s.serve_forever());
    (server, addr, thread)
}

/// Stops from this thread and checks `serve_forever` returned `Ok` in time.
fn stop(server: &TcpServer, thread: Serve) {
    let handle = server.handle();
    handle.stop();
    assert!(handle.wait_stopped_timeout(STEP), "serve_forever returns in time");
    let r = thread.join().expect("serve thread");
    assert!(r.is_ok(), "serve_forever: {r:?}");
}

#[test]
fn eviction_wakes_a_thread_blocked_in_read_at_once() {
    // Nothing polls `a`'s thread sooner than this: closed before it, `a`
    // was woken (the accept loop also sees the final stop within it).
    let poll_interval = Duration::from_secs(3);
    let (server, addr, thread) = start(TcpServerConfig {
        max_connections: 1,
        overflow: OverflowPolicy::EvictOldest,
        poll_interval,
        ..config()
    });
    let mut a = connect(addr);
    call(&mut a, 1, 1, &fc3(0, 1));
    // Let `a`'s thread block in its read.
    std::thread::sleep(Duration::from_millis(50));
    let mut b = connect(addr);
    let t0 = Instant::now();
    assert!(closed_by_server(&mut a, STEP), "oldest evicted");
    let took = t0.elapsed();
    assert!(took < poll_interval, "woken, not polled: {took:?}");
    assert_eq!(server.stats().evicted(), 1);
    assert_eq!(server.stats().idle_timeouts() + server.stats().partial_timeouts(), 0);
    assert_eq!(call(&mut b, 2, 1, &fc3(0, 1)), fc3_answer(&[0]));
    stop(&server, thread);
}

#[test]
fn port_in_use_is_a_clear_error() {
    let (server, addr, thread) = start(TcpServerConfig {
        allow_reuse_address: false,
        ..config()
    });
    let other = TcpServer::new(engine(), TcpServerConfig::new(addr));
    let err = other.bind().expect_err("port is taken");
    assert!(matches!(err, ServerError::AddrInUse { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot listen on {addr}: address already in use")
    );
    stop(&server, thread);
}

#[test]
fn new_does_not_bind_and_handle_stops_from_another_thread() {
    let handle = ServerHandle::new();
    let server = Arc::new(TcpServer::with_handle(engine(), config(), handle.clone()));
    assert!(server.local_addr().is_none(), "defer start: nothing bound yet");
    let s = Arc::clone(&server);
    let thread = std::thread::spawn(move || s.serve_forever());
    assert!(
        wait_until(STEP, || handle.local_addr().is_some()),
        "bound by serve_forever"
    );
    let mut c = connect(handle.local_addr().unwrap());
    call(&mut c, 1, 1, &fc3(0, 1));
    assert!(matches!(server.serve_forever(), Err(ServerError::AlreadyServing)));
    let h = handle.clone();
    std::thread::spawn(move || h.stop()).join().unwrap();
    assert!(handle.wait_stopped_timeout(STEP));
    assert!(thread.join().unwrap().is_ok());
    assert!(closed_by_server(&mut c, STEP));
}

#[test]
fn server_close_before_serving() {
    let server = TcpServer::new(engine(), config());
    let addr = server.bind().expect("bind");
    server.server_close();
    assert!(server.handle().is_stopped());
    assert!(TcpStream::connect_timeout(&addr, STEP).is_err(), "listener released");
    assert!(server.serve_forever().is_ok(), "returns at once once closed");
    assert!(matches!(server.bind(), Err(ServerError::Closed)));
}

#[test]
fn start_tcp_server_in_background_and_stop() {
    let handle = start_tcp_server_in_background(engine(), config()).expect("start");
    let addr = handle.local_addr().expect("bound");
    let mut c = connect(addr);
    assert_eq!(call(&mut c, 1, 1, &fc3(0, 2)), fc3_answer(&[0, 0]));
    handle.shutdown();
    assert!(handle.is_stopped());
    // A bind error comes back from the start call.
    let err = start_tcp_server_in_background(
        engine(),
        TcpServerConfig {
            address: "192.0.2.1:0".parse().unwrap(),
            ..config()
        },
    )
    .expect_err("not a local address");
    assert!(matches!(err, ServerError::Bind { .. }), "{err:?}");
}
