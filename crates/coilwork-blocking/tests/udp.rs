//! The blocking UDP server over a real loopback socket.

mod common;

use coilwork_blocking::{UdpServer, UdpServerConfig, start_udp_server_in_background};
use common::*;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
fn udp_round_trip_and_malformed_datagram_counted() {
    let server = Arc::new(UdpServer::new(
        engine(),
        UdpServerConfig::new("127.0.0.1:0".parse().unwrap()),
    ));
    let addr = server.bind().unwrap();
    let s = Arc::clone(&server);
    let thread = std::thread::spawn(move || s.serve_forever());

    let sock = client(addr);
    assert_eq!(
        exchange(&sock, &adu(7, 1, &fc16(4, &[11, 22]))),
        adu(7, 1, &[0x10, 0, 4, 0, 2])
    );
    assert_eq!(
        exchange(&sock, &adu(8, 3, &fc3(4, 2))),
        adu(8, 3, &fc3_answer(&[11, 22]))
    );

    // Malformed: protocol id not 0; and a truncated ADU. Neither is answered.
    sock.send(&adu_with_protocol(9, 5, 1, &fc3(0, 1))).unwrap();
    let mut cut = adu(10, 1, &fc3(0, 1));
    cut.truncate(9);
    sock.send(&cut).unwrap();
    // The socket still serves after them, and answers come in order.
    assert_eq!(exchange(&sock, &adu(11, 1, &fc3(5, 1))), adu(11, 1, &fc3_answer(&[22])));
    assert_eq!(server.malformed_count(), 2);
    assert_eq!(server.stats().received(), 5);
    // Counted just after the answer is sent.
    assert!(
        wait_until(STEP, || server.stats().answered() == 3),
        "answered: {}",
        server.stats().answered()
    );

    // Another client sees the first one's writes.
    let other = client(addr);
    assert_eq!(exchange(&other, &adu(1, 1, &fc3(4, 1))), adu(1, 1, &fc3_answer(&[11])));

    let t0 = Instant::now();
    let s = Arc::clone(&server);
    std::thread::spawn(move || s.shutdown()).join().unwrap();
    assert!(server.handle().wait_stopped_timeout(STEP));
    assert!(t0.elapsed() < Duration::from_secs(1), "stopped within a poll interval");
    assert!(thread.join().unwrap().is_ok());
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

#[test]
fn a_hooks_delivery_split_sends_two_datagrams() {
    let pause = Duration::from_millis(300);
    let server = Arc::new(UdpServer::new(
        delivery_engine(Duration::ZERO, Some((4, pause))),
        UdpServerConfig::new("127.0.0.1:0".parse().unwrap()),
    ));
    let addr = server.bind().unwrap();
    let s = Arc::clone(&server);
    let thread = std::thread::spawn(move || s.serve_forever());
    let sock = client(addr);
    // Before the send: the server's pause cannot start before it.
    let sent = Instant::now();
    sock.send(&adu(5, 1, &fc3(0, 1))).unwrap();
    let want = adu(5, 1, &fc3_answer(&[0]));
    let mut buf = [0u8; 600];
    let n = sock.recv(&mut buf).expect("first datagram");
    assert_eq!(&buf[..n], &want[..4]);
    let n = sock.recv(&mut buf).expect("second datagram");
    assert!(sent.elapsed() >= pause, "second after {:?}", sent.elapsed());
    assert_eq!(&buf[..n], &want[4..]);
    server.handle().shutdown();
    assert!(thread.join().unwrap().is_ok());
}
