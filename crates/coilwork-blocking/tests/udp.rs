//! The blocking UDP server over a real loopback socket.

mod common;

use coilwork_blocking::{UdpServerConfig, start_udp_server_in_background};
use common::*;
use std::net::UdpSocket;

fn client(addr: std::net::SocketAddr) -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(addr).unwrap();
    sock.set_read_timeout(Some(STEP)).unwrap();
    sock
}

fn exchange(sock: &UdpSocket, req: &[u8]) -> Vec<u8> {
    sock.send(req).unwrap();
    let mut buf = [0u8; 600];
    let n = sock.recv(&mut buf).expect("answer in time");
    buf[..n].to_vec()
}

#[test]
fn start_udp_server_in_background_and_stop() {
    let handle =
        start_udp_server_in_background(engine(), UdpServerConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    let sock = client(handle.local_addr().expect("bound"));
    assert_eq!(exchange(&sock, &adu(3, 1, &fc1(0, 3))), adu(3, 1, &[0x01, 1, 0]));
    handle.stop();
    assert!(handle.wait_stopped_timeout(STEP));
}
