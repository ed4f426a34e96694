//! The UDP server over a real loopback socket, under smol and async-std.

mod common;

use async_io::Async;
use coilwork_async_std::{UdpServer, UdpServerConfig, start_udp_server};
use common::*;
use std::net::UdpSocket;
use std::sync::Arc;

async fn exchange(sock: &Async<UdpSocket>, req: &[u8]) -> Vec<u8> {
    sock.send(req).await.unwrap();
    let mut buf = [0u8; 600];
    let n = within(STEP, sock.recv(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    buf[..n].to_vec()
}

async fn client(addr: std::net::SocketAddr) -> Async<UdpSocket> {
    let sock = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
    sock.get_ref().connect(addr).unwrap();
    sock
}

async fn round_trip_and_malformed_counted(rt: Rt) {
    let server = Arc::new(UdpServer::new(
        engine(),
        UdpServerConfig::new("127.0.0.1:0".parse().unwrap()),
    ));
    let addr = server.bind().unwrap();
    let s = Arc::clone(&server);
    let task = rt.spawn(async move { s.serve_forever().await });

    let sock = client(addr).await;
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
    assert_eq!(server.stats().received(), 5);
    // The counter moves just after the send returns: give it a moment.
    assert!(eventually(|| server.stats().answered() == 3).await, "3 answered");

    // Another client sees the first one's writes.
    let other = client(addr).await;
    assert_eq!(
        exchange(&other, &adu(1, 1, &fc3(4, 1))).await,
        adu(1, 1, &fc3_answer(&[11]))
    );

    within(STEP, server.shutdown()).await.expect("stops");
    let r = within(STEP, task).await.expect("serve returns");
    assert!(r.is_ok());
    assert!(server.handle().is_stopped());
}

async fn start_udp_server_and_stop(_rt: Rt) {
    let handle = start_udp_server(engine(), UdpServerConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    let sock = client(handle.local_addr().unwrap()).await;
    assert_eq!(exchange(&sock, &adu(3, 1, &fc1(0, 3))).await, adu(3, 1, &[0x01, 1, 0]));
    within(STEP, handle.shutdown()).await.expect("stops");
    assert!(handle.is_stopped());
}

async fn delivery_split_sends_two_datagrams(rt: Rt) {
    let pause = std::time::Duration::from_millis(300);
    let server = Arc::new(UdpServer::new(
        delivery_engine(std::time::Duration::ZERO, Some((4, pause))),
        UdpServerConfig::new("127.0.0.1:0".parse().unwrap()),
    ));
    let addr = server.bind().unwrap();
    let s = Arc::clone(&server);
    let task = rt.spawn(async move { s.serve_forever().await });
    let sock = client(addr).await;
    sock.send(&adu(5, 1, &fc3(0, 1))).await.unwrap();
    let sent = std::time::Instant::now();
    let want = adu(5, 1, &fc3_answer(&[0]));
    let mut buf = [0u8; 600];
    let n = within(STEP, sock.recv(&mut buf))
        .await
        .expect("first datagram")
        .unwrap();
    assert_eq!(&buf[..n], &want[..4]);
    let n = within(STEP, sock.recv(&mut buf))
        .await
        .expect("second datagram")
        .unwrap();
    assert!(sent.elapsed() >= pause, "second after {:?}", sent.elapsed());
    assert_eq!(&buf[..n], &want[4..]);
    server.handle().stop();
    assert!(within(STEP, task).await.expect("serve returns").is_ok());
}

tests!(
    smol: delivery_split_sends_two_datagrams, round_trip_and_malformed_counted, start_udp_server_and_stop;
    async_std: round_trip_and_malformed_counted
);
