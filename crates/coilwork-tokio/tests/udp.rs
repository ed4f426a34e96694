//! The UDP server over a real loopback socket.

mod common;

use coilwork_conformance::delivery_hook::delivery_engine;
use coilwork_tokio::{UdpServer, UdpServerConfig};
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

async fn exchange(sock: &UdpSocket, req: &[u8]) -> Vec<u8> {
    sock.send(req).await.unwrap();
    let mut buf = [0u8; 600];
    let n = tokio::time::timeout(STEP, sock.recv(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    buf[..n].to_vec()
}

/// A server on a loopback port, served on a task, and a client socket connected to it.
async fn start(
    engine: Arc<coilwork_core::Engine>,
) -> (
    Arc<UdpServer>,
    UdpSocket,
    tokio::task::JoinHandle<Result<(), coilwork_tokio::ServerError>>,
) {
    let server = Arc::new(UdpServer::new(
        engine,
        UdpServerConfig::new("127.0.0.1:0".parse().unwrap()),
    ));
    let addr = server.bind().unwrap();
    let s = Arc::clone(&server);
    let task = tokio::spawn(async move { s.serve_forever().await });
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(addr).await.unwrap();
    (server, sock, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_round_trip_and_malformed_datagram_counted() {
    let (server, sock, task) = start(engine()).await;
    let addr = sock.peer_addr().unwrap();
    assert_eq!(
        exchange(&sock, &adu(7, 1, &fc16(4, &[11, 22]))).await,
        adu(7, 1, &[0x10, 0, 4, 0, 2])
    );
    assert_eq!(
        exchange(&sock, &adu(8, 3, &fc3(4, 2))).await,
        adu(8, 3, &fc3_answer(&[11, 22]))
    );

    // Malformed: protocol id not 0; and a truncated ADU. Neither is answered.
    sock.send(&adu_with_protocol(9, 5, 1, &fc3(0, 1))).await.unwrap();
    let mut cut = adu(10, 1, &fc3(0, 1));
    cut.truncate(9);
    sock.send(&cut).await.unwrap();
    // The socket still serves after them, and answers come in order.
    assert_eq!(
        exchange(&sock, &adu(11, 1, &fc3(5, 1))).await,
        adu(11, 1, &fc3_answer(&[22]))
    );
    assert_eq!(server.malformed_count(), 2);
    // Counted once the answer is sent: the client may see it first.
    let counted = async {
        while server.stats().answered() != 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(STEP, counted).await.expect("3 answered");

    // Another client sees the first one's writes.
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.connect(addr).await.unwrap();
    assert_eq!(
        exchange(&other, &adu(1, 1, &fc3(4, 1))).await,
        adu(1, 1, &fc3_answer(&[11]))
    );

    tokio::time::timeout(STEP, server.shutdown()).await.expect("stops");
    let r = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_ok());
}

/// A hook's split: the first four bytes in one datagram, the rest in a
/// second after the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hooks_delivery_split_sends_two_datagrams() {
    let pause = Duration::from_millis(300);
    let (server, sock, task) = start(delivery_engine(Duration::ZERO, Some((4, pause)))).await;
    // Before the send: the server's pause cannot start before it.
    let sent = Instant::now();
    sock.send(&adu(5, 1, &fc3(0, 1))).await.unwrap();
    let want = adu(5, 1, &fc3_answer(&[0]));
    let mut buf = [0u8; 600];
    let n = tokio::time::timeout(STEP, sock.recv(&mut buf))
        .await
        .expect("first")
        .unwrap();
    assert_eq!(&buf[..n], &want[..4]);
    let n = tokio::time::timeout(STEP, sock.recv(&mut buf))
        .await
        .expect("second")
        .unwrap();
    assert!(sent.elapsed() >= pause, "second after {:?}", sent.elapsed());
    assert_eq!(&buf[..n], &want[4..]);
    tokio::time::timeout(STEP, server.shutdown()).await.expect("stops");
    assert!(task.await.unwrap().is_ok());
}

/// A stop during a hook's long delay is not held up by it: the answer goes
/// out at once and the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_cuts_a_delivery_delay_short() {
    let (server, sock, task) = start(delivery_engine(Duration::from_secs(30), None)).await;
    sock.send(&adu(6, 1, &fc3(0, 1))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    tokio::time::timeout(STEP, server.shutdown()).await.expect("stops");
    assert!(task.await.unwrap().is_ok());
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        stopping.elapsed()
    );
    let mut buf = [0u8; 600];
    let n = tokio::time::timeout(STEP, sock.recv(&mut buf))
        .await
        .expect("answer")
        .unwrap();
    assert_eq!(&buf[..n], &adu(6, 1, &fc3_answer(&[0]))[..]);
    assert_eq!(server.stats().answered(), 1);
}
