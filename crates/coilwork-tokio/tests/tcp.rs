//! The TCP server over real loopback sockets, driven by a hand-written MBAP client.

mod common;

use coilwork_tokio::{OverflowPolicy, ServerError, TcpServer, TcpServerConfig, start_tcp_server};
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
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
async fn fc16_fc3_fc15_fc1_round_trips() {
    let (server, addr, task) = start(config());
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
    // Spec example shape: byte count then packed bits, LSB first.
    assert_eq!(
        call(&mut c, 4, 1, &fc1(20, 10)).await,
        vec![0x01, 2, 0b1000_1101, 0b0000_0001]
    );

    // An unknown function code gets exception 01 and the connection stays up.
    assert_eq!(call(&mut c, 5, 1, &[0x5A, 0, 0]).await, vec![0xDA, 0x01]);
    assert_eq!(call(&mut c, 6, 1, &fc3(10, 1)).await, fc3_answer(&[0x1234]));

    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_answered_in_order() {
    let (server, addr, task) = start(config());
    let mut c = connect(addr).await;
    let values: Vec<u16> = (0..8).map(|i| 100 + i).collect();
    call(&mut c, 1, 1, &fc16(0, &values)).await;

    let mut batch = Vec::new();
    for i in 0..8u16 {
        batch.extend_from_slice(&adu(1000 + i, 1, &fc3(i, 1)));
    }
    c.write_all(&batch).await.unwrap();
    for i in 0..8u16 {
        let a = read_answer(&mut c).await;
        assert_eq!(a.tid, 1000 + i);
        assert_eq!(a.pdu, fc3_answer(&[100 + i]));
    }
    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_written_one_byte_at_a_time() {
    let (server, addr, task) = start(config());
    let mut c = connect(addr).await;
    c.set_nodelay(true).unwrap();
    call(&mut c, 1, 1, &fc16(5, &[42, 43])).await;
    for b in adu(77, 1, &fc3(5, 2)) {
        c.write_all(&[b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let a = read_answer(&mut c).await;
    assert_eq!(a.tid, 77);
    assert_eq!(a.pdu, fc3_answer(&[42, 43]));
    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_protocol_id_closes_the_connection() {
    let (server, addr, task) = start(config());
    let mut c = connect(addr).await;
    c.write_all(&adu_with_protocol(1, 0x1234, 1, &fc3(0, 1))).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients() {
    let (server, addr, task) = start(TcpServerConfig {
        backlog: 512,
        ..config()
    });
    let mut clients = Vec::new();
    for id in 0..200u16 {
        clients.push(tokio::spawn(async move {
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
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("client in time")
            .expect("client ok");
    }
    assert_eq!(server.stats().accepted(), 200);
    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_new_clients() {
    let (server, addr, task) = start(TcpServerConfig {
        max_connections: 2,
        ..config()
    });
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
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if server.stats().active() < 2 {
            served = true;
            break;
        }
    }
    assert!(served, "closed connection left the table");
    let mut d = connect(addr).await;
    call(&mut d, 3, 1, &fc3(0, 1)).await;
    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evict_oldest_makes_room() {
    let (server, addr, task) = start(TcpServerConfig {
        max_connections: 1,
        overflow: OverflowPolicy::EvictOldest,
        ..config()
    });
    let mut a = connect(addr).await;
    call(&mut a, 1, 1, &fc3(0, 1)).await;
    let mut b = connect(addr).await;
    call(&mut b, 1, 1, &fc3(0, 1)).await;
    assert!(closed_by_server(&mut a, STEP).await, "oldest evicted");
    assert_eq!(server.stats().evicted(), 1);
    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frame_timeout_drops_a_stalled_client() {
    let (server, addr, task) = start(TcpServerConfig {
        partial_frame_timeout: Some(Duration::from_millis(200)),
        ..config()
    });
    let mut quiet = connect(addr).await;
    call(&mut quiet, 1, 1, &fc3(0, 1)).await;
    let mut stalled = connect(addr).await;
    let req = adu(9, 1, &fc3(0, 1));
    stalled.write_all(&req[..5]).await.unwrap();
    let t0 = std::time::Instant::now();
    assert!(closed_by_server(&mut stalled, STEP).await, "stalled client dropped");
    assert!(t0.elapsed() >= Duration::from_millis(150), "not before the timeout");
    assert_eq!(server.stats().partial_timeouts(), 1);
    // A client with nothing pending is not touched by that timeout.
    assert_eq!(call(&mut quiet, 2, 1, &fc3(0, 1)).await, fc3_answer(&[0]));
    stop(&server, task).await;
}

/// The partial-frame timer is armed while the connection is busy answering
/// (a request and the start of the next arrive in one write): it must still fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frame_after_an_answered_request_times_out() {
    let (server, addr, task) = start(TcpServerConfig {
        partial_frame_timeout: Some(Duration::from_millis(200)),
        ..config()
    });
    let mut c = connect(addr).await;
    let mut bytes = adu(1, 1, &fc3(0, 1));
    bytes.extend_from_slice(&adu(2, 1, &fc3(0, 1))[..5]);
    c.write_all(&bytes).await.unwrap();
    let answer = read_answer(&mut c).await;
    assert_eq!((answer.tid, answer.unit, answer.pdu), (1, 1, fc3_answer(&[0])));
    assert!(closed_by_server(&mut c, STEP).await, "stalled client dropped");
    assert_eq!(server.stats().partial_timeouts(), 1);
    stop(&server, task).await;
}

/// The connection's timer fires while an answer waits for a client that does
/// not read (its wake goes to the waiting write): once the client has read
/// everything and gone quiet, the idle timeout must still close it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_after_answers_waited_for_the_client() {
    let (server, addr, task) = start(TcpServerConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        release_buffers_after: Duration::from_millis(100),
        ..config()
    });
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let c = socket.connect(addr).await.unwrap();
    let (mut rd, mut wr) = c.into_split();
    // 125-register answers (259 bytes each, 6 MB) fill the socket buffers while the client does not read.
    const N: usize = 24_000;
    let requests: Vec<u8> = (0..N).flat_map(|i| adu(i as u16, 1, &fc3(0, 125))).collect();
    let writer = tokio::spawn(async move {
        wr.write_all(&requests).await.unwrap();
        wr
    });
    // Past every deadline the timer had while the server's write waits.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut answers = vec![0u8; N * 259];
    tokio::time::timeout(STEP * 4, tokio::io::AsyncReadExt::read_exact(&mut rd, &mut answers))
        .await
        .expect("answers in time")
        .expect("answers");
    assert_eq!(
        &answers[(N - 1) * 259 + 7..][..2],
        &[3, 250],
        "the last answer is a whole FC3 answer"
    );
    let wr = writer.await.unwrap();
    let mut c = rd.reunite(wr).unwrap();
    assert!(closed_by_server(&mut c, STEP).await, "idle client dropped");
    assert_eq!(server.stats().idle_timeouts(), 1);
    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_a_quiet_connection() {
    let (server, addr, task) = start(TcpServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        release_buffers_after: Duration::from_millis(50),
        ..config()
    });
    let mut c = connect(addr).await;
    call(&mut c, 1, 1, &fc3(0, 1)).await;
    let t0 = std::time::Instant::now();
    assert!(closed_by_server(&mut c, STEP).await, "idle client dropped");
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_eq!(server.stats().idle_timeouts(), 1);
    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffers_released_and_reallocated() {
    let (server, addr, task) = start(TcpServerConfig {
        release_buffers_after: Duration::from_millis(20),
        ..config()
    });
    let mut c = connect(addr).await;
    call(&mut c, 1, 1, &fc16(3, &[9])).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(call(&mut c, 2, 1, &fc3(3, 1)).await, fc3_answer(&[9]));
    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_the_request_in_flight() {
    let (server, addr, task) = start(config());
    let mut c = connect(addr).await;
    call(&mut c, 1, 1, &fc16(0, &[5])).await;
    c.write_all(&adu(2, 1, &fc3(0, 1))).await.unwrap();
    let s = Arc::clone(&server);
    let shut = tokio::spawn(async move { s.shutdown().await });
    let a = read_answer(&mut c).await;
    assert_eq!((a.tid, a.pdu), (2, fc3_answer(&[5])));
    assert!(closed_by_server(&mut c, STEP).await, "closed after the answer");
    tokio::time::timeout(STEP, shut)
        .await
        .expect("shutdown returns")
        .unwrap();
    let r = tokio::time::timeout(STEP, task).await.expect("serve returns").unwrap();
    assert!(r.is_ok());
    assert!(server.handle().is_stopped());
    // The listener is gone.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_one_client_seen_by_another() {
    let (server, addr, task) = start(config());
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    call(&mut a, 1, 1, &fc16(50, &[0xBEEF, 0xCAFE])).await;
    assert_eq!(call(&mut b, 1, 1, &fc3(50, 2)).await, fc3_answer(&[0xBEEF, 0xCAFE]));
    call(&mut b, 2, 1, &fc15(3, &[true, true])).await;
    assert_eq!(call(&mut a, 2, 1, &fc1(2, 4)).await, vec![0x01, 1, 0b0110]);
    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_refuses_other_ips() {
    let (server, addr, task) = start(TcpServerConfig {
        allow_list: Some(vec!["10.1.2.3".parse().unwrap()]),
        ..config()
    });
    let mut c = connect(addr).await;
    assert!(closed_by_server(&mut c, STEP).await);
    assert_eq!(server.stats().refused(), 1);
    stop(&server, task).await;
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
