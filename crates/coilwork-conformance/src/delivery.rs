//! Cases for a hook's [`Delivery`](coilwork_core::Delivery) (fault injection: delay, split): every
//! adapter makes the pauses, on TCP, UDP and serial lines, and a stop or an
//! eviction during one is not held up by it.

use crate::UdpOptions;
use crate::cases::STOP_WITHIN;
use crate::cases::{BAUD, start_serial_engine};
use crate::client::{Client, STEP, UdpClient, adu, fc3, fc3_answer, fc16, pdu, rtu};
use crate::delivery_hook::delivery_engine as engine;
use crate::serial::{PtyPair, open_client};
use crate::{Harness, Overflow, TcpServerConfig, tcp_defaults};
use coilwork_core::Framing;
use std::time::{Duration, Instant};

/// The pause the timing cases ask for.
const PAUSE: Duration = Duration::from_millis(300);

/// A pause no case waits out.
const LONG: Duration = Duration::from_secs(30);

/// A delay holds the FC3 answer back by the pause; FC16 is answered at once.
pub fn delivery_delay_holds_the_answer_back<H: Harness>() {
    let server = H::start_tcp(engine(PAUSE, None), &tcp_defaults());
    let mut c = Client::connect(server.addr());
    let sent = Instant::now();
    assert_eq!(c.call(1, 1, &fc16(0, &[0x1234])), pdu(0x10, &[0, 1]));
    assert!(
        sent.elapsed() < PAUSE,
        "{}: FC16 held back {:?}",
        H::NAME,
        sent.elapsed()
    );
    let sent = Instant::now();
    assert_eq!(c.call(2, 1, &fc3(0, 1)), fc3_answer(&[0x1234]));
    let took = sent.elapsed();
    assert!(
        took >= PAUSE && took < PAUSE + STEP,
        "{}: FC3 answered after {took:?}",
        H::NAME
    );
    server.stop();
}

/// A split sends the first four bytes, then the rest after the pause.
pub fn delivery_split_sends_two_pieces<H: Harness>() {
    let server = H::start_tcp(engine(Duration::ZERO, Some((4, PAUSE))), &tcp_defaults());
    let mut c = Client::connect(server.addr());
    c.send(&adu(7, 1, &fc3(0, 1)));
    let sent = Instant::now();
    let want = adu(7, 1, &fc3_answer(&[0]));
    let first = c.read_n(4);
    assert_eq!(first, want[..4], "{}: first piece", H::NAME);
    assert!(
        c.silent_for(PAUSE / 3),
        "{}: more than the first piece at once",
        H::NAME
    );
    let rest = c.read_n(want.len() - 4);
    assert!(sent.elapsed() >= PAUSE, "{}: rest after {:?}", H::NAME, sent.elapsed());
    assert_eq!(rest, want[4..], "{}: the rest", H::NAME);
    server.stop();
}

/// A stop during a long pause: the server returns within [`STOP_WITHIN`]
/// (its `shutdown_timeout` is longer, so the cut at shutdown cannot be
/// what ended it) and the answer still goes out (a stop drains).
pub fn a_stop_cuts_a_delivery_pause_short<H: Harness>() {
    let server = H::start_tcp(
        engine(LONG, None),
        &TcpServerConfig {
            shutdown_timeout: Duration::from_secs(20),
            ..tcp_defaults()
        },
    );
    let mut c = Client::connect(server.addr());
    c.send(&adu(3, 1, &fc3(0, 1)));
    // The connection is in its pause.
    std::thread::sleep(Duration::from_millis(200));
    let took = server.stop();
    assert!(took < STOP_WITHIN, "{}: stop during a pause took {took:?}", H::NAME);
    let a = c.read_answer();
    assert_eq!((a.tid, a.pdu), (3, fc3_answer(&[0])), "{}: answer drained", H::NAME);
}

/// An eviction during a long pause closes the paused connection at once,
/// without its answer; the newcomer is served.
pub fn an_eviction_ends_a_delivery_pause<H: Harness>() {
    let server = H::start_tcp(
        engine(LONG, None),
        &TcpServerConfig {
            max_connections: 1,
            overflow: Overflow::EvictOldest,
            ..tcp_defaults()
        },
    );
    let mut old = Client::connect(server.addr());
    old.send(&adu(3, 1, &fc3(0, 1)));
    std::thread::sleep(Duration::from_millis(200));
    let mut new = Client::connect(server.addr());
    assert_eq!(
        new.call(1, 1, &fc16(0, &[7])),
        pdu(0x10, &[0, 1]),
        "{}: newcomer",
        H::NAME
    );
    let t0 = Instant::now();
    assert!(old.closed_by_server(STEP), "{}: paused connection closed", H::NAME);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "{}: closed {:?} after the eviction",
        H::NAME,
        t0.elapsed()
    );
    let took = server.stop();
    assert!(took < STOP_WITHIN, "{}: stop took {took:?}", H::NAME);
}

/// An idle timeout shorter than a delay does not cut the delayed answer
/// off: the server owes it, so it goes out whole after the pause. The
/// connection, quiet since its request, is closed after that.
pub fn an_idle_timeout_does_not_cut_a_delayed_answer<H: Harness>() {
    let idle = Duration::from_millis(150);
    let server = H::start_tcp(
        engine(PAUSE, None),
        &TcpServerConfig {
            idle_timeout: Some(idle),
            ..tcp_defaults()
        },
    );
    let mut c = Client::connect(server.addr());
    c.send(&adu(5, 1, &fc3(0, 1)));
    let sent = Instant::now();
    let a = c.read_answer();
    assert_eq!((a.tid, a.pdu), (5, fc3_answer(&[0])), "{}: the delayed answer", H::NAME);
    assert!(
        sent.elapsed() >= PAUSE,
        "{}: answered after {:?}",
        H::NAME,
        sent.elapsed()
    );
    let answered = Instant::now();
    assert!(c.closed_by_server(STEP), "{}: closed for idleness", H::NAME);
    assert!(
        answered.elapsed() < idle + Duration::from_secs(1),
        "{}: closed {:?} after the answer",
        H::NAME,
        answered.elapsed()
    );
    let took = server.stop();
    assert!(took < STOP_WITHIN, "{}: stop took {took:?}", H::NAME);
}

/// UDP: a split sends the first four bytes in one datagram and the rest in
/// a second after the pause.
pub fn udp_delivery_split_sends_two_datagrams<H: Harness>() {
    let server = H::start_udp(engine(Duration::ZERO, Some((4, PAUSE))), &UdpOptions::default());
    let c = UdpClient::new(server.addr());
    // Before the send: the server's pause cannot start before it.
    let sent = Instant::now();
    c.send(&adu(5, 1, &fc3(0, 1)));
    let want = adu(5, 1, &fc3_answer(&[0]));
    assert_eq!(
        c.recv_within(STEP),
        Some(want[..4].to_vec()),
        "{}: first datagram",
        H::NAME
    );
    assert_eq!(
        c.recv_within(STEP),
        Some(want[4..].to_vec()),
        "{}: second datagram",
        H::NAME
    );
    assert!(
        sent.elapsed() >= PAUSE,
        "{}: second after {:?}",
        H::NAME,
        sent.elapsed()
    );
    let took = server.stop();
    assert!(took < STOP_WITHIN, "{}: stop took {took:?}", H::NAME);
}

/// UDP: a stop during a long pause is not held up by it; the answer still
/// goes out.
pub fn udp_stop_cuts_a_delivery_pause_short<H: Harness>() {
    let server = H::start_udp(engine(LONG, None), &UdpOptions::default());
    let c = UdpClient::new(server.addr());
    c.send(&adu(6, 1, &fc3(0, 1)));
    assert!(
        server.counters_reach(STEP, |s| s.received == 1),
        "{:?}",
        server.counters()
    );
    // The socket is in its pause.
    std::thread::sleep(Duration::from_millis(200));
    let took = server.stop();
    assert!(took < STOP_WITHIN, "{}: stop during a pause took {took:?}", H::NAME);
    assert_eq!(
        c.recv_within(STEP),
        Some(adu(6, 1, &fc3_answer(&[0]))),
        "{}: answer sent",
        H::NAME
    );
}

/// Serial: a split sends the first three bytes, then silence, then the rest
/// after the pause.
pub fn serial_delivery_split_pauses_the_line<H: Harness>() {
    let Some(pair) = PtyPair::new("delivery-split") else {
        return;
    };
    let server = start_serial_engine::<H>(&pair, engine(Duration::ZERO, Some((3, PAUSE))), Framing::Rtu, false);
    let mut line = open_client(&pair, BAUD);
    let sent = Instant::now();
    line.send(&rtu(1, &fc3(0, 1)));
    let want = rtu(1, &fc3_answer(&[0]));
    assert_eq!(line.read_n(3), want[..3], "{}: first piece", H::NAME);
    assert!(
        line.silent_for(PAUSE / 3),
        "{}: more than the first piece at once",
        H::NAME
    );
    assert_eq!(line.read_n(want.len() - 3), want[3..], "{}: the rest", H::NAME);
    assert!(sent.elapsed() >= PAUSE, "{}: rest after {:?}", H::NAME, sent.elapsed());
    let took = server.stop();
    assert!(took < STOP_WITHIN, "{}: stop took {took:?}", H::NAME);
}

/// Serial: a stop during a long pause is not held up by it; the answer
/// still goes out and the line is let go.
pub fn serial_stop_cuts_a_delivery_pause_short<H: Harness>() {
    let Some(pair) = PtyPair::new("delivery-stop") else {
        return;
    };
    let server = start_serial_engine::<H>(&pair, engine(LONG, None), Framing::Rtu, false);
    let mut line = open_client(&pair, BAUD);
    line.send(&rtu(1, &fc3(0, 1)));
    // The line is in its pause.
    std::thread::sleep(Duration::from_millis(200));
    let took = server.stop();
    assert!(took < STOP_WITHIN, "{}: stop during a pause took {took:?}", H::NAME);
    assert_eq!(line.read_n(7), rtu(1, &fc3_answer(&[0])), "{}: answer sent", H::NAME);
}
