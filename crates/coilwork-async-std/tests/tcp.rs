//! The TCP server over real loopback sockets, driven by a hand-written MBAP
//! client; every body runs under smol, the core ones under async-std too.

mod common;

use coilwork_async_std::{OverflowPolicy, ServerError, TcpServer, TcpServerConfig, start_tcp_server};
use coilwork_core::Framing;
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

async fn round_trips(rt: Rt) {
    let (server, addr, task) = start(rt, config());
    let mut c = connect(addr).await;

    assert_eq!(
        call(&mut c, 1, 1, &fc16(10, &[0x1234, 0xABCD, 7])).await,
        vec![0x10, 0, 10, 0, 3]
    );
    assert_eq!(
        call(&mut c, 2, 1, &fc3(9, 5)).await,
        fc3_answer(&[0, 0x1234, 0xABCD, 7, 0])
    );
    let bits = [true, false, true, true, false, false, false, true, true, false];
    assert_eq!(call(&mut c, 3, 1, &fc15(20, &bits)).await, vec![0x0F, 0, 20, 0, 10]);
    assert_eq!(
        call(&mut c, 4, 1, &fc1(20, 10)).await,
        vec![0x01, 2, 0b1000_1101, 0b0000_0001]
    );
    // An unknown function code gets exception 01 and the connection stays up.
    assert_eq!(call(&mut c, 5, 1, &[0x5A, 0, 0]).await, vec![0xDA, 0x01]);
    assert_eq!(call(&mut c, 6, 1, &fc3(10, 1)).await, fc3_answer(&[0x1234]));
    stop(&server, task).await;
}

async fn pipelining(rt: Rt) {
    let (server, addr, task) = start(rt, config());
    let mut c = connect(addr).await;
    let values: Vec<u16> = (0..8).map(|i| 100 + i).collect();
    call(&mut c, 1, 1, &fc16(0, &values)).await;

    let mut batch = Vec::new();
    for i in 0..8u16 {
        batch.extend_from_slice(&adu(1000 + i, 1, &fc3(i, 1)));
    }
    send(&mut c, &batch).await;
    for i in 0..8u16 {
        let a = read_answer(&mut c).await;
        assert_eq!(a.tid, 1000 + i);
        assert_eq!(a.pdu, fc3_answer(&[100 + i]));
    }
    stop(&server, task).await;
}

async fn one_byte_at_a_time(rt: Rt) {
    let (server, addr, task) = start(rt, config());
    let mut c = connect(addr).await;
    c.get_ref().set_nodelay(true).unwrap();
    call(&mut c, 1, 1, &fc16(5, &[42, 43])).await;
    for b in adu(77, 1, &fc3(5, 2)) {
        send(&mut c, &[b]).await;
        rt.sleep(Duration::from_millis(2)).await;
    }
    let a = read_answer(&mut c).await;
    assert_eq!(a.tid, 77);
    assert_eq!(a.pdu, fc3_answer(&[42, 43]));
    stop(&server, task).await;
}

async fn bad_protocol_id(rt: Rt) {
    let (server, addr, task) = start(rt, config());
    let mut c = connect(addr).await;
    send(&mut c, &adu_with_protocol(1, 0x1234, 1, &fc3(0, 1))).await;
    assert!(
        closed_by_server(&mut c, STEP).await,
        "server must close a non-Modbus stream"
    );
    assert_eq!(server.stats().bad_frames(), 1);
    // Others are unaffected.
    let mut d = connect(addr).await;
    assert_eq!(call(&mut d, 2, 1, &fc3(0, 1)).await, fc3_answer(&[0]));
    stop(&server, task).await;
}

async fn hundred_clients(rt: Rt) {
    let (server, addr, task) = start(
        rt,
        TcpServerConfig {
            backlog: 256,
            ..config()
        },
    );
    let mut clients = Vec::new();
    for id in 0..100u16 {
        clients.push(rt.spawn(async move {
            let mut c = connect(addr).await;
            for round in 0..5u16 {
                let v = id.wrapping_mul(100).wrapping_add(round);
                assert_eq!(
                    call(&mut c, round, 1, &fc16(id, &[v])).await,
                    vec![0x10, (id >> 8) as u8, id as u8, 0, 1]
                );
                assert_eq!(call(&mut c, round + 100, 1, &fc3(id, 1)).await, fc3_answer(&[v]));
            }
        }));
    }
    for c in clients {
        within(Duration::from_secs(60), c).await.expect("client in time");
    }
    assert_eq!(server.stats().accepted(), 100);
    // Every client's last write is there.
    let mut c = connect(addr).await;
    let all = call(&mut c, 1, 1, &fc3(0, 100)).await;
    let want: Vec<u16> = (0..100u16).map(|id| id.wrapping_mul(100).wrapping_add(4)).collect();
    assert_eq!(all, fc3_answer(&want));
    stop(&server, task).await;
}

async fn max_connections_refused(rt: Rt) {
    let (server, addr, task) = start(
        rt,
        TcpServerConfig {
            max_connections: 2,
            ..config()
        },
    );
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    call(&mut a, 1, 1, &fc3(0, 1)).await;
    call(&mut b, 1, 1, &fc3(0, 1)).await;
    let mut c = connect(addr).await;
    assert!(closed_by_server(&mut c, STEP).await, "third client refused");
    assert_eq!(server.stats().refused(), 1);
    // The first two still work; after one leaves, a new client is served.
    call(&mut a, 2, 1, &fc3(0, 1)).await;
    drop(b);
    assert!(
        eventually(|| server.stats().active() < 2).await,
        "closed connection left the table"
    );
    let mut d = connect(addr).await;
    assert_eq!(call(&mut d, 3, 1, &fc3(0, 1)).await, fc3_answer(&[0]));
    assert_eq!(server.stats().accepted(), 3);
    stop(&server, task).await;
}

async fn evict_oldest(rt: Rt) {
    let (server, addr, task) = start(
        rt,
        TcpServerConfig {
            max_connections: 1,
            overflow: OverflowPolicy::EvictOldest,
            ..config()
        },
    );
    let mut a = connect(addr).await;
    call(&mut a, 1, 1, &fc3(0, 1)).await;
    let mut b = connect(addr).await;
    call(&mut b, 1, 1, &fc3(0, 1)).await;
    assert!(closed_by_server(&mut a, STEP).await, "oldest evicted");
    assert_eq!(server.stats().evicted(), 1);
    stop(&server, task).await;
}

async fn partial_frame_timeout(rt: Rt) {
    let (server, addr, task) = start(
        rt,
        TcpServerConfig {
            partial_frame_timeout: Some(Duration::from_millis(200)),
            ..config()
        },
    );
    let mut quiet = connect(addr).await;
    call(&mut quiet, 1, 1, &fc3(0, 1)).await;
    let mut stalled = connect(addr).await;
    let req = adu(9, 1, &fc3(0, 1));
    send(&mut stalled, &req[..5]).await;
    let t0 = Instant::now();
    assert!(closed_by_server(&mut stalled, STEP).await, "stalled client dropped");
    assert!(t0.elapsed() >= Duration::from_millis(150), "not before the timeout");
    assert_eq!(server.stats().partial_timeouts(), 1);
    // A client with nothing pending is not touched by that timeout.
    assert_eq!(call(&mut quiet, 2, 1, &fc3(0, 1)).await, fc3_answer(&[0]));
    stop(&server, task).await;
}

async fn idle_timeout(rt: Rt) {
    let (server, addr, task) = start(
        rt,
        TcpServerConfig {
            idle_timeout: Some(Duration::from_millis(200)),
            release_buffers_after: Duration::from_millis(50),
            ..config()
        },
    );
    let mut c = connect(addr).await;
    call(&mut c, 1, 1, &fc3(0, 1)).await;
    let t0 = Instant::now();
    assert!(closed_by_server(&mut c, STEP).await, "idle client dropped");
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_eq!(server.stats().idle_timeouts(), 1);
    stop(&server, task).await;
}

/// The connection timer is armed lazily (at or before the earliest
/// deadline): a partial frame after traffic must pull it in from the
/// 1 s buffer-release deadline to the 200 ms partial-frame one.
async fn partial_frame_timeout_after_traffic(rt: Rt) {
    let (server, addr, task) = start(
        rt,
        TcpServerConfig {
            partial_frame_timeout: Some(Duration::from_millis(200)),
            release_buffers_after: Duration::from_secs(3),
            ..config()
        },
    );
    let mut c = connect(addr).await;
    call(&mut c, 1, 1, &fc3(0, 1)).await;
    let req = adu(2, 1, &fc3(0, 1));
    send(&mut c, &req[..7]).await;
    let t0 = Instant::now();
    assert!(closed_by_server(&mut c, STEP).await, "stalled client dropped");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "not before the timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "not at the later deadline: {waited:?}"
    );
    assert_eq!(server.stats().partial_timeouts(), 1);
    stop(&server, task).await;
}

/// Steady traffic moves the idle deadline past a timer armed earlier: the
/// timer fires early, is re-armed, and the connection lives on; it closes
/// one idle timeout after its last request.
async fn idle_timeout_moves_with_traffic(rt: Rt) {
    let (server, addr, task) = start(
        rt,
        TcpServerConfig {
            idle_timeout: Some(Duration::from_millis(300)),
            ..config()
        },
    );
    let mut c = connect(addr).await;
    for i in 0..6u16 {
        assert_eq!(call(&mut c, i, 1, &fc3(0, 1)).await, fc3_answer(&[0]));
        rt.sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.stats().idle_timeouts(),
        0,
        "600 ms of traffic, 300 ms idle timeout"
    );
    call(&mut c, 9, 1, &fc3(0, 1)).await;
    let t0 = Instant::now();
    assert!(closed_by_server(&mut c, STEP).await, "idle client dropped");
    assert!(t0.elapsed() >= Duration::from_millis(250), "{:?}", t0.elapsed());
    assert_eq!(server.stats().idle_timeouts(), 1);
    stop(&server, task).await;
}

/// A stop reaches connections that never sent a byte (no buffers, no
/// protocol state yet) as well as busy ones.
async fn shutdown_closes_silent_connections(rt: Rt) {
    let (server, addr, task) = start(rt, config());
    let mut silent = connect(addr).await;
    let mut busy = connect(addr).await;
    call(&mut busy, 1, 1, &fc3(0, 1)).await;
    while server.stats().active() < 2 {
        rt.sleep(Duration::from_millis(5)).await;
    }
    let t0 = Instant::now();
    stop(&server, task).await;
    // Not cut at the 5 s shutdown timeout: asked to close at once.
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(closed_by_server(&mut silent, STEP).await, "silent client closed");
    assert!(closed_by_server(&mut busy, STEP).await, "busy client closed");
}

async fn buffers_released_and_reallocated(rt: Rt) {
    let (server, addr, task) = start(
        rt,
        TcpServerConfig {
            release_buffers_after: Duration::from_millis(20),
            read_buffer_size: 64,
            ..config()
        },
    );
    let mut c = connect(addr).await;
    // More than the stack buffer in one write: the heap buffer comes into play.
    let mut batch = Vec::new();
    for i in 0..60u16 {
        batch.extend_from_slice(&adu(i, 1, &fc16(i, &[i + 1])));
    }
    send(&mut c, &batch).await;
    for i in 0..60u16 {
        let a = read_answer(&mut c).await;
        assert_eq!((a.tid, a.pdu), (i, vec![0x10, 0, i as u8, 0, 1]));
    }
    rt.sleep(Duration::from_millis(100)).await;
    assert_eq!(call(&mut c, 99, 1, &fc3(58, 2)).await, fc3_answer(&[59, 60]));
    stop(&server, task).await;
}

async fn graceful_shutdown_in_flight(rt: Rt) {
    let (server, addr, task) = start(rt, config());
    let mut c = connect(addr).await;
    call(&mut c, 1, 1, &fc16(0, &[5])).await;
    send(&mut c, &adu(2, 1, &fc3(0, 1))).await;
    let s = Arc::clone(&server);
    let shut = rt.spawn(async move { s.shutdown().await });
    let a = read_answer(&mut c).await;
    assert_eq!((a.tid, a.pdu), (2, fc3_answer(&[5])));
    assert!(closed_by_server(&mut c, STEP).await, "closed after the answer");
    within(STEP, shut).await.expect("shutdown returns");
    let r = within(STEP, task).await.expect("serve returns");
    assert!(r.is_ok());
    assert!(server.handle().is_stopped());
    assert_eq!(server.stats().active(), 0);
    // The listener is gone.
    let again = within(STEP, async_io::Async::<std::net::TcpStream>::connect(addr))
        .await
        .expect("connect answered");
    assert!(again.is_err(), "no longer accepting");
}

async fn writes_seen_by_another_client(rt: Rt) {
    let (server, addr, task) = start(rt, config());
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    call(&mut a, 1, 1, &fc16(50, &[0xBEEF, 0xCAFE])).await;
    assert_eq!(call(&mut b, 1, 1, &fc3(50, 2)).await, fc3_answer(&[0xBEEF, 0xCAFE]));
    call(&mut b, 2, 1, &fc15(3, &[true, true])).await;
    assert_eq!(call(&mut a, 2, 1, &fc1(2, 4)).await, vec![0x01, 1, 0b0110]);
    stop(&server, task).await;
}

async fn allow_list(rt: Rt) {
    let (server, addr, task) = start(
        rt,
        TcpServerConfig {
            allow_list: Some(vec!["10.1.2.3".parse().unwrap()]),
            ..config()
        },
    );
    let mut c = connect(addr).await;
    assert!(closed_by_server(&mut c, STEP).await);
    assert_eq!(server.stats().refused(), 1);
    assert_eq!(server.stats().accepted(), 0);
    stop(&server, task).await;
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

async fn rtu_framing_over_tcp(rt: Rt) {
    let (server, addr, task) = start(
        rt,
        TcpServerConfig {
            framing: Framing::Rtu,
            ..config()
        },
    );
    let mut c = connect(addr).await;
    // The spec's FC16 example: unit 0x11, write 0x000A 0x0102 at 0x0001.
    send(
        &mut c,
        &[
            0x11, 0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02, 0xC6, 0xF0,
        ],
    )
    .await;
    let mut answer = [0u8; 8];
    within(STEP, futures_lite::io::AsyncReadExt::read_exact(&mut c, &mut answer))
        .await
        .expect("answer in time")
        .unwrap();
    assert_eq!(answer, [0x11, 0x10, 0x00, 0x01, 0x00, 0x02, 0x12, 0x98]);
    stop(&server, task).await;
}

#[test]
fn serve_forever_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let server = TcpServer::new(engine(), config());
    assert_send(&server.serve_forever());
    assert_send(&server.shutdown());
}

const PAUSE: Duration = Duration::from_millis(300);

async fn delivery_delay(rt: Rt) {
    let (server, addr, task) = start_engine(rt, delivery_engine(PAUSE, None), config());
    let mut c = connect(addr).await;
    // Only FC3 is delayed by the hook.
    let sent = Instant::now();
    assert_eq!(call(&mut c, 1, 1, &fc16(0, &[0x1234])).await, vec![0x10, 0, 0, 0, 1]);
    assert!(sent.elapsed() < PAUSE, "{:?}", sent.elapsed());
    // Another connection is served during the pause.
    let mut other = connect(addr).await;
    let sent = Instant::now();
    send(&mut c, &adu(2, 1, &fc3(0, 1))).await;
    rt.sleep(PAUSE / 3).await;
    assert_eq!(call(&mut other, 9, 1, &fc16(1, &[5])).await, vec![0x10, 0, 1, 0, 1]);
    assert!(sent.elapsed() < PAUSE, "other served after {:?}", sent.elapsed());
    let a = read_answer(&mut c).await;
    let took = sent.elapsed();
    assert_eq!((a.tid, a.pdu), (2, fc3_answer(&[0x1234])));
    assert!(took >= PAUSE && took < PAUSE + STEP, "answered after {took:?}");
    stop(&server, task).await;
}

tests!(
    smol: delivery_delay, round_trips, pipelining, one_byte_at_a_time, bad_protocol_id, hundred_clients,
        max_connections_refused, evict_oldest, partial_frame_timeout, idle_timeout,
        buffers_released_and_reallocated, graceful_shutdown_in_flight, writes_seen_by_another_client,
        allow_list, port_in_use, defer_start_and_stop_from_another_thread, server_close_before_serving,
        start_tcp_server_on_its_own_thread, rtu_framing_over_tcp, partial_frame_timeout_after_traffic,
        idle_timeout_moves_with_traffic, shutdown_closes_silent_connections;
    async_std: round_trips, pipelining, graceful_shutdown_in_flight, one_byte_at_a_time, hundred_clients,
        defer_start_and_stop_from_another_thread, max_connections_refused, partial_frame_timeout_after_traffic,
        idle_timeout_moves_with_traffic, shutdown_closes_silent_connections
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
