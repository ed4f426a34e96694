//! The blocking TCP server over real loopback sockets, driven by a hand-written MBAP client.

mod common;

use coilwork_blocking::{
    OverflowPolicy, ServerError, ServerHandle, TcpServer, TcpServerConfig, start_tcp_server_in_background,
};
use common::*;
use std::io::Write;
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
fn fc16_fc3_fc15_fc1_round_trips() {
    let (server, addr, thread) = start(config());
    let mut c = connect(addr);

    assert_eq!(
        call(&mut c, 1, 1, &fc16(10, &[0x1234, 0xABCD, 7])),
        vec![0x10, 0, 10, 0, 3]
    );
    assert_eq!(call(&mut c, 2, 1, &fc3(9, 5)), fc3_answer(&[0, 0x1234, 0xABCD, 7, 0]));

    let bits = [true, false, true, true, false, false, false, true, true, false];
    assert_eq!(call(&mut c, 3, 1, &fc15(20, &bits)), vec![0x0F, 0, 20, 0, 10]);
    assert_eq!(
        call(&mut c, 4, 1, &fc1(20, 10)),
        vec![0x01, 2, 0b1000_1101, 0b0000_0001]
    );

    // An unknown function code gets exception 01 and the connection stays up.
    assert_eq!(call(&mut c, 5, 1, &[0x5A, 0, 0]), vec![0xDA, 0x01]);
    assert_eq!(call(&mut c, 6, 1, &fc3(10, 1)), fc3_answer(&[0x1234]));
    stop(&server, thread);
}

#[test]
fn pipelined_requests_answered_in_order() {
    let (server, addr, thread) = start(config());
    let mut c = connect(addr);
    let values: Vec<u16> = (0..8).map(|i| 100 + i).collect();
    call(&mut c, 1, 1, &fc16(0, &values));

    let mut batch = Vec::new();
    for i in 0..8u16 {
        batch.extend_from_slice(&adu(1000 + i, 1, &fc3(i, 1)));
    }
    c.write_all(&batch).unwrap();
    for i in 0..8u16 {
        let a = read_answer(&mut c);
        assert_eq!(a.tid, 1000 + i);
        assert_eq!(a.pdu, fc3_answer(&[100 + i]));
    }
    stop(&server, thread);
}

#[test]
fn request_written_one_byte_at_a_time() {
    let (server, addr, thread) = start(config());
    let mut c = connect(addr);
    call(&mut c, 1, 1, &fc16(5, &[42, 43]));
    for b in adu(77, 1, &fc3(5, 2)) {
        c.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let a = read_answer(&mut c);
    assert_eq!(a.tid, 77);
    assert_eq!(a.pdu, fc3_answer(&[42, 43]));
    stop(&server, thread);
}

#[test]
fn bad_protocol_id_closes_the_connection() {
    let (server, addr, thread) = start(config());
    let mut c = connect(addr);
    c.write_all(&adu_with_protocol(1, 0x1234, 1, &fc3(0, 1))).unwrap();
    assert!(closed_by_server(&mut c, STEP), "server must close a non-Modbus stream");
    assert_eq!(server.stats().bad_frames(), 1);
    // Others are unaffected.
    let mut d = connect(addr);
    assert_eq!(call(&mut d, 2, 1, &fc3(0, 1)), fc3_answer(&[0]));
    stop(&server, thread);
}

#[test]
fn buffer_cap_closes_a_connection_holding_too_much() {
    let (server, addr, thread) = start(TcpServerConfig {
        max_buffered: 8,
        ..config()
    });
    let mut c = connect(addr);
    // 12 bytes of a 17-byte FC16 request: more than the 8 bytes allowed to wait.
    let req = adu(1, 1, &fc16(0, &[1, 2]));
    c.write_all(&req[..12]).unwrap();
    assert!(closed_by_server(&mut c, STEP), "over the cap: closed");
    assert_eq!(server.stats().bad_frames(), 1);
    // Whole requests of any size up to the cap's reach are fine.
    let mut d = connect(addr);
    assert_eq!(call(&mut d, 2, 1, &fc16(0, &[1, 2])), vec![0x10, 0, 0, 0, 2]);
    stop(&server, thread);
}

#[test]
fn hundred_concurrent_clients() {
    let (server, addr, thread) = start(TcpServerConfig {
        backlog: 256,
        ..config()
    });
    let barrier = Arc::new(std::sync::Barrier::new(100));
    let clients: Vec<_> = (0..100u16)
        .map(|id| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut c = connect(addr);
                // All 100 connected at once before anyone talks.
                barrier.wait();
                for round in 0..5u16 {
                    let v = id.wrapping_mul(100).wrapping_add(round);
                    assert_eq!(
                        call(&mut c, round, 1, &fc16(id, &[v])),
                        vec![0x10, (id >> 8) as u8, id as u8, 0, 1]
                    );
                    assert_eq!(call(&mut c, round + 100, 1, &fc3(id, 1)), fc3_answer(&[v]));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client ok");
    }
    assert_eq!(server.stats().accepted(), 100);
    assert_eq!(server.stats().refused(), 0);
    stop(&server, thread);
}

#[test]
fn max_connections_refuses_new_clients() {
    let (server, addr, thread) = start(TcpServerConfig {
        max_connections: 2,
        ..config()
    });
    let mut a = connect(addr);
    let mut b = connect(addr);
    call(&mut a, 1, 1, &fc3(0, 1));
    call(&mut b, 1, 1, &fc3(0, 1));
    let mut c = connect(addr);
    assert!(closed_by_server(&mut c, STEP), "third client refused");
    assert_eq!(server.stats().refused(), 1);
    // The first two still work; after one leaves, a new client is served.
    call(&mut a, 2, 1, &fc3(0, 1));
    drop(b);
    assert!(
        wait_until(STEP, || server.stats().active() < 2),
        "closed connection left the table"
    );
    let mut d = connect(addr);
    call(&mut d, 3, 1, &fc3(0, 1));
    stop(&server, thread);
}

#[test]
fn evict_oldest_makes_room() {
    let (server, addr, thread) = start(TcpServerConfig {
        max_connections: 1,
        overflow: OverflowPolicy::EvictOldest,
        ..config()
    });
    let mut a = connect(addr);
    call(&mut a, 1, 1, &fc3(0, 1));
    let mut b = connect(addr);
    call(&mut b, 1, 1, &fc3(0, 1));
    let t0 = Instant::now();
    assert!(closed_by_server(&mut a, STEP), "oldest evicted");
    assert!(t0.elapsed() < Duration::from_secs(1), "evicted within a poll interval");
    assert_eq!(server.stats().evicted(), 1);
    assert_eq!(call(&mut b, 2, 1, &fc3(0, 1)), fc3_answer(&[0]));
    stop(&server, thread);
}

#[test]
fn eviction_wakes_a_thread_blocked_in_read_at_once() {
    // A poll interval far above the bound below: only the wake can close `a` in time.
    let (server, addr, thread) = start(TcpServerConfig {
        max_connections: 1,
        overflow: OverflowPolicy::EvictOldest,
        poll_interval: Duration::from_secs(2),
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
    assert!(took < Duration::from_millis(500), "woken, not polled: {took:?}");
    assert_eq!(server.stats().evicted(), 1);
    assert_eq!(server.stats().idle_timeouts() + server.stats().partial_timeouts(), 0);
    assert_eq!(call(&mut b, 2, 1, &fc3(0, 1)), fc3_answer(&[0]));
    stop(&server, thread);
}

#[test]
fn idle_timeout_is_pushed_back_by_input_then_closes_the_blocked_thread() {
    let (server, addr, thread) = start(TcpServerConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        poll_interval: Duration::from_millis(20),
        ..config()
    });
    let mut c = connect(addr);
    // Twice the idle timeout of steady traffic: never closed.
    for tid in 0..8u16 {
        assert_eq!(call(&mut c, tid, 1, &fc3(0, 1)), fc3_answer(&[0]), "request {tid}");
        std::thread::sleep(Duration::from_millis(80));
    }
    assert_eq!(server.stats().idle_timeouts(), 0);
    let t0 = Instant::now();
    assert!(closed_by_server(&mut c, STEP), "idle client dropped");
    let took = t0.elapsed();
    // The last input was 80 ms before t0.
    assert!(took >= Duration::from_millis(200), "not before the timeout: {took:?}");
    assert!(took < Duration::from_secs(1), "soon after the timeout: {took:?}");
    assert!(
        wait_until(STEP, || server.stats().idle_timeouts() == 1),
        "counted as idle"
    );
    assert_eq!(server.stats().partial_timeouts(), 0);
    stop(&server, thread);
}

#[test]
fn partial_frame_timeout_drops_a_stalled_client() {
    let (server, addr, thread) = start(TcpServerConfig {
        partial_frame_timeout: Some(Duration::from_millis(200)),
        ..config()
    });
    let mut quiet = connect(addr);
    call(&mut quiet, 1, 1, &fc3(0, 1));
    let mut stalled = connect(addr);
    let req = adu(9, 1, &fc3(0, 1));
    stalled.write_all(&req[..5]).unwrap();
    let t0 = Instant::now();
    assert!(closed_by_server(&mut stalled, STEP), "stalled client dropped");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(150), "not before the timeout: {took:?}");
    assert!(took < Duration::from_secs(2), "soon after the timeout: {took:?}");
    assert_eq!(server.stats().partial_timeouts(), 1);
    // A client with nothing pending is not touched by that timeout.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(call(&mut quiet, 2, 1, &fc3(0, 1)), fc3_answer(&[0]));
    stop(&server, thread);
}

#[test]
fn idle_timeout_closes_a_quiet_connection() {
    let (server, addr, thread) = start(TcpServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        release_buffers_after: Duration::from_millis(50),
        ..config()
    });
    let mut c = connect(addr);
    call(&mut c, 1, 1, &fc3(0, 1));
    let t0 = Instant::now();
    assert!(closed_by_server(&mut c, STEP), "idle client dropped");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(server.stats().idle_timeouts(), 1);
    stop(&server, thread);
}

#[test]
fn buffers_released_and_reallocated() {
    let (server, addr, thread) = start(TcpServerConfig {
        release_buffers_after: Duration::from_millis(20),
        ..config()
    });
    let mut c = connect(addr);
    call(&mut c, 1, 1, &fc16(3, &[9]));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(call(&mut c, 2, 1, &fc3(3, 1)), fc3_answer(&[9]));
    stop(&server, thread);
}

#[test]
fn graceful_shutdown_answers_the_request_in_flight() {
    let (server, addr, thread) = start(config());
    let mut c = connect(addr);
    call(&mut c, 1, 1, &fc16(0, &[5]));
    // An idle second client must not hold the shutdown up.
    let mut idle = connect(addr);
    call(&mut idle, 1, 1, &fc3(0, 1));
    c.write_all(&adu(2, 1, &fc3(0, 1))).unwrap();
    let t0 = Instant::now();
    let s = Arc::clone(&server);
    let shut = std::thread::spawn(move || s.shutdown());
    let a = read_answer(&mut c);
    assert_eq!((a.tid, a.pdu), (2, fc3_answer(&[5])));
    assert!(closed_by_server(&mut c, STEP), "closed after the answer");
    assert!(closed_by_server(&mut idle, STEP), "idle client closed too");
    assert!(server.handle().wait_stopped_timeout(STEP), "serve_forever returns");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    shut.join().unwrap();
    assert!(thread.join().unwrap().is_ok());
    assert!(server.handle().is_stopped());
    // The listener is gone.
    assert!(TcpStream::connect_timeout(&addr, STEP).is_err(), "no longer accepting");
}

#[test]
fn writes_of_one_client_seen_by_another() {
    let (server, addr, thread) = start(config());
    let mut a = connect(addr);
    let mut b = connect(addr);
    call(&mut a, 1, 1, &fc16(50, &[0xBEEF, 0xCAFE]));
    assert_eq!(call(&mut b, 1, 1, &fc3(50, 2)), fc3_answer(&[0xBEEF, 0xCAFE]));
    call(&mut b, 2, 1, &fc15(3, &[true, true]));
    assert_eq!(call(&mut a, 2, 1, &fc1(2, 4)), vec![0x01, 1, 0b0110]);
    stop(&server, thread);
}

#[test]
fn allow_list_refuses_other_ips() {
    let (server, addr, thread) = start(TcpServerConfig {
        allow_list: Some(vec!["10.1.2.3".parse().unwrap()]),
        ..config()
    });
    let mut c = connect(addr);
    assert!(closed_by_server(&mut c, STEP));
    assert_eq!(server.stats().refused(), 1);
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
    let t0 = Instant::now();
    std::thread::spawn(move || h.stop()).join().unwrap();
    assert!(handle.wait_stopped_timeout(STEP));
    assert!(t0.elapsed() < Duration::from_secs(1));
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
fn rtu_over_tcp() {
    let (server, addr, thread) = start(TcpServerConfig {
        framing: coilwork_core::Framing::Rtu,
        ..config()
    });
    let mut c = connect(addr);
    // The serial line spec's FC3 example: unit 0x11, 3 registers from 0x6B, CRC 76 87.
    c.write_all(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87]).unwrap();
    let mut answer = [0u8; 11];
    std::io::Read::read_exact(&mut c, &mut answer).expect("answer in time");
    assert_eq!(&answer[..9], &[0x11, 0x03, 0x06, 0, 0, 0, 0, 0, 0]);
    stop(&server, thread);
}

#[test]
fn start_tcp_server_in_background_and_stop() {
    let handle = start_tcp_server_in_background(engine(), config()).expect("start");
    let addr = handle.local_addr().expect("bound");
    let mut c = connect(addr);
    assert_eq!(call(&mut c, 1, 1, &fc3(0, 2)), fc3_answer(&[0, 0]));
    let t0 = Instant::now();
    handle.shutdown();
    assert!(t0.elapsed() < Duration::from_secs(1));
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
