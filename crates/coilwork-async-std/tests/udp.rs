//! The UDP server over a real loopback socket, under smol and async-std.

mod common;

use async_io::Async;
use coilwork_async_std::{UdpServerConfig, start_udp_server};
use common::*;
use std::net::UdpSocket;

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

async fn start_udp_server_and_stop(_rt: Rt) {
    let handle = start_udp_server(engine(), UdpServerConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    let sock = client(handle.local_addr().unwrap()).await;
    assert_eq!(exchange(&sock, &adu(3, 1, &fc1(0, 3))).await, adu(3, 1, &[0x01, 1, 0]));
    within(STEP, handle.shutdown()).await.expect("stops");
    assert!(handle.is_stopped());
}

tests!(
    smol: start_udp_server_and_stop;
    async_std:
);
