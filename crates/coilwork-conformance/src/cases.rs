//! The cases. Each is generic over a [`Harness`], starts its own server on
//! a fresh [`crate::fixture::engine`], is bounded in time (every
//! client step has a timeout, every stop is bounded), and stops its server.
//!
//! Expected bytes come from the Modbus Application Protocol v1.1b3 examples
//! where the spec has one.

use crate::client::{Client, STEP, UdpClient, adu, adu_with_protocol, ascii, fc3, fc3_answer, fc16, pdu, rtu};
use crate::fixture::{TABLE_LEN, engine, plain_engine};
use crate::serial::{PtyPair, open_client};
use crate::tls_common as tls;
use crate::{Harness, Overflow, Running, SerialOptions, TcpServerConfig, UdpOptions, tcp_defaults};
use coilwork_core::Framing;
use std::io::Write;
use std::time::{Duration, Instant};

/// How long a graceful stop may take.
pub const STOP_WITHIN: Duration = Duration::from_secs(2);

fn start<H: Harness>(opts: TcpServerConfig) -> Running {
    H::start_tcp(engine(), &opts)
}

fn stop<H: Harness>(server: Running) {
    let took = server.stop();
    assert!(took < STOP_WITHIN, "{}: stop took {took:?}", H::NAME);
}

/// Sends `request` and asserts the exact answer PDU.
fn expect(c: &mut Client, tid: u16, request: &[u8], answer: &[u8]) {
    let got = c.call(tid, 1, request);
    assert_eq!(got, answer, "request {request:02X?}");
}

/// FC1, FC2, FC5, FC15 with the spec's examples.
pub fn bit_functions<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    // FC5 (spec): coil 173 on.
    let fc5 = [0x05, 0x00, 0xAC, 0xFF, 0x00];
    expect(&mut c, 1, &fc5, &fc5);
    expect(&mut c, 2, &[0x01, 0x00, 0xAC, 0x00, 0x01], &[0x01, 0x01, 0x01]);
    // FC15 (spec): 10 coils from 20, CD 01.
    expect(
        &mut c,
        3,
        &[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01],
        &[0x0F, 0x00, 0x13, 0x00, 0x0A],
    );
    expect(&mut c, 4, &[0x01, 0x00, 0x13, 0x00, 0x0A], &[0x01, 0x02, 0xCD, 0x01]);
    // 19 coils from 20: the 10 written, then 9 zero.
    expect(
        &mut c,
        5,
        &[0x01, 0x00, 0x13, 0x00, 0x13],
        &[0x01, 0x03, 0xCD, 0x01, 0x00],
    );
    // FC2 (spec): 22 inputs from 197 read AC DB 35.
    expect(
        &mut c,
        6,
        &[0x02, 0x00, 0xC4, 0x00, 0x16],
        &[0x02, 0x03, 0xAC, 0xDB, 0x35],
    );
    // FC5 off, and a value that is neither FF00 nor 0000 (03).
    let off = [0x05, 0x00, 0xAC, 0x00, 0x00];
    expect(&mut c, 7, &off, &off);
    expect(&mut c, 8, &[0x01, 0x00, 0xAC, 0x00, 0x01], &[0x01, 0x01, 0x00]);
    expect(&mut c, 9, &[0x05, 0x00, 0xAC, 0x12, 0x34], &[0x85, 0x03]);
    stop::<H>(server);
}

/// FC3, FC4, FC6, FC16, FC22, FC23, FC24 with the spec's examples.
pub fn register_functions<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    // FC6 (spec): register 2 = 3.
    let fc6 = [0x06, 0x00, 0x01, 0x00, 0x03];
    expect(&mut c, 1, &fc6, &fc6);
    // FC16 (spec): registers 2..3 = 000A 0102.
    expect(
        &mut c,
        2,
        &[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02],
        &[0x10, 0x00, 0x01, 0x00, 0x02],
    );
    expect(&mut c, 3, &fc3(0, 3), &[0x03, 0x06, 0x00, 0x00, 0x00, 0x0A, 0x01, 0x02]);
    // FC4 (spec): input register 9 holds 000A.
    expect(&mut c, 4, &[0x04, 0x00, 0x08, 0x00, 0x01], &[0x04, 0x02, 0x00, 0x0A]);
    expect(&mut c, 5, &pdu(0x04, &[0x10, 2]), &[0x04, 0x04, 0x10, 0x10, 0x10, 0x11]);
    // FC22 (spec): 0x12 AND 0xF2 OR (0x25 AND NOT 0xF2) = 0x17.
    expect(&mut c, 6, &pdu(0x06, &[4, 0x0012]), &pdu(0x06, &[4, 0x0012]));
    let fc22 = pdu(0x16, &[4, 0x00F2, 0x0025]);
    expect(&mut c, 7, &fc22, &fc22);
    expect(&mut c, 8, &fc3(4, 1), &fc3_answer(&[0x0017]));
    // FC23 (spec): read 6 from 3 after writing 3 at 14.
    c.call(9, 1, &fc16(3, &[0x00FE, 0x0ACD, 0x0001, 0x0003, 0x000D, 0x00FF]));
    let mut fc23 = pdu(0x17, &[0x0003, 0x0006, 0x000E, 0x0003]);
    fc23.push(0x06);
    fc23.extend_from_slice(&[0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF]);
    expect(
        &mut c,
        10,
        &fc23,
        &[
            0x17, 0x0C, 0x00, 0xFE, 0x0A, 0xCD, 0x00, 0x01, 0x00, 0x03, 0x00, 0x0D, 0x00, 0xFF,
        ],
    );
    expect(&mut c, 11, &fc3(0x0E, 3), &fc3_answer(&[0x00FF; 3]));
    // FC24 (spec): the queue at 0x04DE holds 2 values, 01B8 and 1284.
    c.call(12, 1, &fc16(0x04DE, &[2, 0x01B8, 0x1284]));
    expect(
        &mut c,
        13,
        &pdu(0x18, &[0x04DE]),
        &[0x18, 0x00, 0x06, 0x00, 0x02, 0x01, 0xB8, 0x12, 0x84],
    );
    stop::<H>(server);
}

/// FC7, FC8 (echo, a counter, clear), FC11, FC12, FC17 on a fresh engine:
/// the counters and the event log follow the exact sequence sent.
pub fn diagnostic_functions<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    // 1: FC11 does not count itself.
    expect(&mut c, 1, &[0x0B], &[0x0B, 0x00, 0x00, 0x00, 0x00]);
    // 2: FC7, status 0.
    expect(&mut c, 2, &[0x07], &[0x07, 0x00]);
    // 3: FC8 sub 0 echoes its data.
    let echo = pdu(0x08, &[0x0000, 0xA537]);
    expect(&mut c, 3, &echo, &echo);
    // 4: FC7 and FC8 completed.
    expect(&mut c, 4, &[0x0B], &[0x0B, 0x00, 0x00, 0x00, 0x02]);
    // 5: FC17, server id "CW", running.
    expect(&mut c, 5, &[0x11], &[0x11, 0x03, b'C', b'W', 0xFF]);
    // 6: server message count, this message included.
    expect(&mut c, 6, &pdu(0x08, &[0x000E, 0]), &pdu(0x08, &[0x000E, 6]));
    // 7: bus message count.
    expect(&mut c, 7, &pdu(0x08, &[0x000B, 0]), &pdu(0x08, &[0x000B, 7]));
    // 8: FC12: status 0, 5 events counted (FC7, FC8 ×3, FC17), 8 messages,
    // the log newest first: this receive, then 7 × (send, receive).
    let mut log = vec![0x0C, 21, 0x00, 0x00, 0x00, 0x05, 0x00, 0x08, 0x80];
    for _ in 0..7 {
        log.extend_from_slice(&[0x40, 0x80]);
    }
    expect(&mut c, 8, &[0x0C], &log);
    // 9: clear counters; 10: the count starts again.
    let clear = pdu(0x08, &[0x000A, 0]);
    expect(&mut c, 9, &clear, &clear);
    expect(&mut c, 10, &pdu(0x08, &[0x000E, 0]), &pdu(0x08, &[0x000E, 1]));
    stop::<H>(server);
}

/// FC20 and FC21 with the spec's examples, and a missing file (02).
pub fn file_record_functions<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    expect(
        &mut c,
        1,
        &[
            0x14, 0x0E, 0x06, 0x00, 0x04, 0x00, 0x01, 0x00, 0x02, 0x06, 0x00, 0x03, 0x00, 0x09, 0x00, 0x02,
        ],
        &[
            0x14, 0x0C, 0x05, 0x06, 0x0D, 0xFE, 0x00, 0x20, 0x05, 0x06, 0x33, 0xCD, 0x00, 0x40,
        ],
    );
    let fc21 = [
        0x15, 0x0D, 0x06, 0x00, 0x04, 0x00, 0x07, 0x00, 0x03, 0x06, 0xAF, 0x04, 0xBE, 0x10, 0x0D,
    ];
    expect(&mut c, 2, &fc21, &fc21);
    expect(
        &mut c,
        3,
        &[0x14, 0x07, 0x06, 0x00, 0x04, 0x00, 0x07, 0x00, 0x03],
        &[0x14, 0x08, 0x07, 0x06, 0x06, 0xAF, 0x04, 0xBE, 0x10, 0x0D],
    );
    expect(
        &mut c,
        4,
        &[0x14, 0x07, 0x06, 0x00, 0x09, 0x00, 0x00, 0x00, 0x01],
        &[0x94, 0x02],
    );
    stop::<H>(server);
}

/// FC43 / MEI 14: the basic stream and one object.
pub fn device_identification<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    let mut basic = vec![0x2B, 0x0E, 0x01, 0x81, 0x00, 0x00, 0x03];
    basic.extend_from_slice(&[0x00, 8]);
    basic.extend_from_slice(b"Coilwork");
    basic.extend_from_slice(&[0x01, 2]);
    basic.extend_from_slice(b"CW");
    basic.extend_from_slice(&[0x02, 3]);
    basic.extend_from_slice(b"1.0");
    expect(&mut c, 1, &[0x2B, 0x0E, 0x01, 0x00], &basic);
    expect(
        &mut c,
        2,
        &[0x2B, 0x0E, 0x04, 0x01],
        &[0x2B, 0x0E, 0x04, 0x81, 0x00, 0x00, 0x01, 0x01, 0x02, b'C', b'W'],
    );
    expect(&mut c, 3, &[0x2B, 0x0E, 0x04, 0x05], &[0xAB, 0x02]);
    stop::<H>(server);
}

/// Exceptions 01 (unknown function), 02 (out of range), 03 (bad
/// quantity); the connection stays up after each.
pub fn one_exception_per_class<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    expect(&mut c, 1, &[0x5A, 0x00, 0x00], &[0xDA, 0x01]);
    expect(&mut c, 2, &fc3(1999, 2), &[0x83, 0x02]);
    expect(&mut c, 3, &fc3(0, 0), &[0x83, 0x03]);
    expect(&mut c, 4, &fc3(0, 126), &[0x83, 0x03]);
    expect(&mut c, 5, &pdu(0x01, &[0, 2001]), &[0x81, 0x03]);
    expect(&mut c, 6, &fc3(1999, 1), &fc3_answer(&[0]));
    stop::<H>(server);
}

/// 8 requests in one write are all answered, in order, with their ids.
pub fn pipelined_requests_in_one_write<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    let values: Vec<u16> = (0..8).map(|i| 100 + i).collect();
    c.call(1, 1, &fc16(0, &values));
    let mut batch = Vec::new();
    for i in 0..8u16 {
        batch.extend_from_slice(&adu(1000 + i, 1, &fc3(i, 1)));
    }
    c.send(&batch);
    for i in 0..8u16 {
        let a = c.read_answer();
        assert_eq!((a.tid, a.pdu), (1000 + i, fc3_answer(&[100 + i])), "answer {i}");
    }
    stop::<H>(server);
}

/// A request written one byte at a time is answered once, whole.
pub fn request_one_byte_at_a_time<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    c.call(1, 1, &fc16(5, &[42, 43]));
    for b in adu(77, 1, &fc3(5, 2)) {
        c.send(&[b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    let a = c.read_answer();
    assert_eq!((a.tid, a.pdu), (77, fc3_answer(&[42, 43])));
    assert!(c.silent_for(Duration::from_millis(50)), "one answer only");
    stop::<H>(server);
}

/// 400 requests in one write (more than a 4 KiB read buffer), with the
/// largest FC16 and FC3: all answered in order.
pub fn burst_beyond_the_read_buffer<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    let big: Vec<u16> = (0..123u16).map(|i| i.wrapping_mul(0x0101)).collect();
    let mut batch = adu(1, 1, &fc16(200, &big));
    batch.extend_from_slice(&adu(2, 1, &fc3(200, 125)));
    for i in 0..400u16 {
        batch.extend_from_slice(&adu(1000 + i, 1, &fc3(200 + i % 123, 1)));
    }
    assert!(batch.len() > 4096);
    c.send(&batch);
    assert_eq!(c.read_answer().pdu, pdu(0x10, &[200, 123]));
    let mut want = big.clone();
    want.extend_from_slice(&[0, 0]);
    let a = c.read_answer();
    assert_eq!((a.tid, a.pdu), (2, fc3_answer(&want)));
    for i in 0..400u16 {
        let a = c.read_answer();
        assert_eq!(
            (a.tid, a.pdu),
            (1000 + i, fc3_answer(&[big[usize::from(i % 123)]])),
            "answer {i}"
        );
    }
    stop::<H>(server);
}

/// Requests split anywhere: header apart from PDU, and one and a half
/// requests per write.
pub fn requests_split_across_writes<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    c.call(1, 1, &fc16(0, &[11, 22, 33]));
    let req = adu(2, 1, &fc3(0, 3));
    c.send(&req[..7]);
    std::thread::sleep(Duration::from_millis(20));
    c.send(&req[7..]);
    assert_eq!(c.read_answer().pdu, fc3_answer(&[11, 22, 33]));
    let mut stream = Vec::new();
    for i in 0..6u16 {
        stream.extend_from_slice(&adu(10 + i, 1, &fc3(i % 3, 1)));
    }
    for chunk in stream.chunks(18) {
        c.send(chunk);
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..6u16 {
        let a = c.read_answer();
        assert_eq!(
            (a.tid, a.pdu),
            (10 + i, fc3_answer(&[[11, 22, 33][usize::from(i % 3)]]))
        );
    }
    stop::<H>(server);
}

/// Unit ids 0, 0x11 and 0xFF are ordinary ids on TCP: answered and echoed.
pub fn unit_ids_echoed<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    for (tid, unit) in [(1u16, 0u8), (2, 0x11), (3, 0xFF)] {
        assert_eq!(c.call(tid, unit, &fc3(0, 1)), fc3_answer(&[0]), "unit {unit}");
    }
    stop::<H>(server);
}

/// An MBAP length past 254 (or under 2) closes that connection.
pub fn bad_mbap_length_closes_the_connection<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    for (i, len) in [0x0100u16, 0x0001].into_iter().enumerate() {
        let mut c = Client::connect(server.addr());
        let mut req = adu(1, 1, &fc3(0, 1));
        req[4..6].copy_from_slice(&len.to_be_bytes());
        c.send(&req);
        assert!(c.closed_by_server(STEP), "{}: length {len} closed", H::NAME);
        assert!(
            server.counters_reach(STEP, |s| s.bad_frames == i as u64 + 1),
            "{:?}",
            server.counters()
        );
    }
    let mut c = Client::connect(server.addr());
    expect(&mut c, 1, &fc3(0, 1), &fc3_answer(&[0]));
    stop::<H>(server);
}

/// A request followed by the client's FIN (half close) is still answered.
pub fn request_then_half_close_is_answered<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    c.send(&adu(7, 1, &fc3(0, 2)));
    c.shutdown_write();
    let a = c.read_answer();
    assert_eq!(
        (a.tid, a.pdu),
        (7, fc3_answer(&[0, 0])),
        "{}: answered before closing",
        H::NAME
    );
    assert!(c.closed_by_server(STEP), "{}: closed after the client's FIN", H::NAME);
    assert!(
        server.counters_reach(STEP, |s| s.active == 0),
        "{:?}",
        server.counters()
    );
    stop::<H>(server);
}

/// Clients that vanish mid-stream (unread answers, reset) leave the server
/// healthy: the table empties and the next client is served.
pub fn clients_vanishing_mid_stream<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    for round in 0..5u16 {
        let mut c = Client::connect(server.addr());
        let mut batch = Vec::new();
        for i in 0..200u16 {
            batch.extend_from_slice(&adu(i, 1, &fc3(0, 125)));
        }
        c.send(&batch);
        c.send(&adu(round, 1, &fc3(0, 1))[..4]);
        drop(c);
    }
    assert!(
        server.counters_reach(STEP, |s| s.active == 0),
        "{:?}",
        server.counters()
    );
    let mut c = Client::connect(server.addr());
    expect(&mut c, 1, &fc3(0, 1), &fc3_answer(&[0]));
    stop::<H>(server);
}

/// RTU over TCP: two frames in one write answered in order; ASCII over TCP.
pub fn rtu_and_ascii_over_tcp<H: Harness>() {
    let server = start::<H>(TcpServerConfig {
        framing: Framing::Rtu,
        ..tcp_defaults()
    });
    let mut c = Client::connect(server.addr());
    let mut batch = rtu(1, &fc16(0x6B, &[0x022B, 0x0000, 0x0064]));
    batch.extend_from_slice(&rtu(1, &fc3(0x6B, 3)));
    c.send(&batch);
    assert_eq!(c.read_n(8), rtu(1, &pdu(0x10, &[0x6B, 3])));
    assert_eq!(c.read_n(11), rtu(1, &fc3_answer(&[0x022B, 0x0000, 0x0064])));
    stop::<H>(server);

    let server = start::<H>(TcpServerConfig {
        framing: Framing::Ascii,
        ..tcp_defaults()
    });
    let mut c = Client::connect(server.addr());
    let fc6 = pdu(0x06, &[0x0001, 0x0003]);
    c.send(&ascii(1, &fc6));
    assert_eq!(c.read_n(17), ascii(1, &fc6));
    let want = ascii(1, &fc3_answer(&[3]));
    c.send(&ascii(1, &fc3(1, 1)));
    assert_eq!(c.read_n(want.len()), want);
    stop::<H>(server);
}

/// UDP: interleaved clients each get their own answers.
pub fn udp_answers_go_to_their_sender<H: Harness>() {
    let server = H::start_udp(engine(), &UdpOptions::default());
    let clients: Vec<UdpClient> = (0..4).map(|_| UdpClient::new(server.addr())).collect();
    for (i, c) in clients.iter().enumerate() {
        let i = i as u16;
        c.send(&adu(100 + i, 1, &fc16(i, &[0x0100 + i])));
    }
    for (i, c) in clients.iter().enumerate() {
        let i = i as u16;
        assert_eq!(c.recv_within(STEP), Some(adu(100 + i, 1, &pdu(0x10, &[i, 1]))));
    }
    for (i, c) in clients.iter().enumerate().rev() {
        let i = i as u16;
        assert_eq!(
            c.call(&adu(200 + i, 1, &fc3(i, 1))),
            adu(200 + i, 1, &fc3_answer(&[0x0100 + i]))
        );
    }
    stop::<H>(server);
}

/// RTU framing over TCP: garbage is shed, the good request after it answered.
pub fn rtu_over_tcp_garbage_then_good_request<H: Harness>() {
    let server = start::<H>(TcpServerConfig {
        framing: Framing::Rtu,
        ..tcp_defaults()
    });
    let mut c = Client::connect(server.addr());
    // Garbage, then the spec's FC16 example (unit 0x11) in the same write.
    let mut bytes = vec![0x07, 0x07, 0x07];
    bytes.extend_from_slice(&rtu(
        0x11,
        &[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02],
    ));
    c.send(&bytes);
    assert_eq!(c.read_n(8), [0x11, 0x10, 0x00, 0x01, 0x00, 0x02, 0x12, 0x98]);
    // Garbage in its own write, then the spec's FC3 request in another.
    c.send(&[0x07, 0x07]);
    std::thread::sleep(Duration::from_millis(20));
    c.send(&[0x11, 0x03, 0x00, 0x00, 0x00, 0x03, 0x07, 0x5B]);
    assert_eq!(rtu(0x11, &fc3(0, 3))[6..], [0x07, 0x5B]);
    assert_eq!(
        c.read_n(11),
        rtu(0x11, &[0x03, 0x06, 0x00, 0x00, 0x00, 0x0A, 0x01, 0x02])
    );
    stop::<H>(server);
}

/// Requests whose quantity breaks the spec limit and whose PDU is past 253
/// bytes: FC16 writing 124 registers (MBAP length 255), FC23 writing 122
/// (255) and FC16 with byte count 255 (262). Each with the exception 03 the
/// spec prescribes, and the connection goes on.
fn oversized_requests() -> Vec<Vec<u8>> {
    let fc = |head: &[u8], count: usize| [head, &vec![0x5A; count]].concat();
    vec![
        fc(&[0x10, 0x00, 0x00, 0x00, 124, 248], 248),
        fc(&[0x17, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 122, 244], 244),
        fc(&[0x10, 0x00, 0x00, 0x00, 124, 255], 255),
    ]
}

/// Oversized byte-counted requests get exception 03 over MBAP, RTU and
/// ASCII on TCP and over UDP; the next request on the stream is answered.
pub fn oversized_quantity_gets_exception_03<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    for (i, req) in oversized_requests().iter().enumerate() {
        expect(&mut c, i as u16, req, &[req[0] | 0x80, 0x03]);
    }
    expect(&mut c, 9, &fc3(0, 1), &fc3_answer(&[0]));
    stop::<H>(server);
    for (framing, frame) in [(Framing::Rtu, rtu as fn(u8, &[u8]) -> Vec<u8>), (Framing::Ascii, ascii)] {
        let server = start::<H>(TcpServerConfig {
            framing,
            ..tcp_defaults()
        });
        let mut c = Client::connect(server.addr());
        for req in oversized_requests() {
            let mut bytes = frame(1, &req);
            bytes.extend_from_slice(&frame(1, &fc3(0, 1)));
            c.send(&bytes);
            let want = frame(1, &[req[0] | 0x80, 0x03]);
            assert_eq!(c.read_n(want.len()), want, "{}: {framing:?} FC{}", H::NAME, req[0]);
            let want = frame(1, &fc3_answer(&[0]));
            assert_eq!(c.read_n(want.len()), want, "{}: {framing:?} then FC3", H::NAME);
        }
        stop::<H>(server);
    }
    let server = H::start_udp(engine(), &UdpOptions::default());
    let u = UdpClient::new(server.addr());
    for (i, req) in oversized_requests().iter().enumerate() {
        let tid = i as u16;
        assert_eq!(
            u.call(&adu(tid, 1, req)),
            adu(tid, 1, &[req[0] | 0x80, 0x03]),
            "{}: UDP",
            H::NAME
        );
    }
    stop::<H>(server);
}

/// An MBAP protocol id other than 0 closes that connection, and only it.
pub fn bad_protocol_id_closes_the_connection<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut c = Client::connect(server.addr());
    let mut other = Client::connect(server.addr());
    c.send(&adu_with_protocol(1, 0x1234, 1, &fc3(0, 1)));
    assert!(c.closed_by_server(STEP), "{}: non-Modbus stream closed", H::NAME);
    assert!(
        server.counters_reach(STEP, |s| s.bad_frames == 1),
        "{:?}",
        server.counters()
    );
    expect(&mut other, 2, &fc3(0, 1), &fc3_answer(&[0]));
    stop::<H>(server);
}

/// 50 clients × 20 requests at once, every answer right.
pub fn concurrent_clients<H: Harness>() {
    const CLIENTS: u16 = 50;
    const ROUNDS: u16 = 20;
    let server = start::<H>(tcp_defaults());
    let addr = server.addr();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|id| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for round in 0..ROUNDS {
                    let v = id.wrapping_mul(1000).wrapping_add(round);
                    let tid = round.wrapping_mul(2);
                    assert_eq!(c.call(tid, 1, &fc16(id, &[v])), pdu(0x10, &[id, 1]));
                    assert_eq!(c.call(tid + 1, 1, &fc3(id, 1)), fc3_answer(&[v]));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let mut c = Client::connect(addr);
    let want: Vec<u16> = (0..CLIENTS).map(|id| id * 1000 + ROUNDS - 1).collect();
    expect(&mut c, 1, &fc3(0, CLIENTS), &fc3_answer(&want));
    assert_eq!(server.counters().accepted, u64::from(CLIENTS) + 1);
    stop::<H>(server);
}

/// `max_connections` = 2: a third client is closed; once one leaves, a new one is served.
pub fn max_connections_refuses_the_next<H: Harness>() {
    let server = start::<H>(TcpServerConfig {
        max_connections: 2,
        ..tcp_defaults()
    });
    let mut a = Client::connect(server.addr());
    let mut b = Client::connect(server.addr());
    expect(&mut a, 1, &fc3(0, 1), &fc3_answer(&[0]));
    expect(&mut b, 1, &fc3(0, 1), &fc3_answer(&[0]));
    let mut c = Client::connect(server.addr());
    assert!(c.closed_by_server(STEP), "{}: third client refused", H::NAME);
    assert!(
        server.counters_reach(STEP, |s| s.refused == 1),
        "{:?}",
        server.counters()
    );
    expect(&mut a, 2, &fc3(0, 1), &fc3_answer(&[0]));
    drop(b);
    assert!(
        server.counters_reach(STEP, |s| s.active < 2),
        "closed connection left the table"
    );
    let mut d = Client::connect(server.addr());
    expect(&mut d, 3, &fc3(0, 1), &fc3_answer(&[0]));
    assert_eq!(server.counters().accepted, 3);
    stop::<H>(server);
}

/// `max_connections` = 1 with `EvictOldest`: the new client is served, the old one closed.
pub fn max_connections_evicts_the_oldest<H: Harness>() {
    let server = start::<H>(TcpServerConfig {
        max_connections: 1,
        overflow: Overflow::EvictOldest,
        ..tcp_defaults()
    });
    let mut a = Client::connect(server.addr());
    expect(&mut a, 1, &fc3(0, 1), &fc3_answer(&[0]));
    let mut b = Client::connect(server.addr());
    expect(&mut b, 1, &fc3(0, 1), &fc3_answer(&[0]));
    assert!(a.closed_by_server(STEP), "{}: oldest evicted", H::NAME);
    assert!(
        server.counters_reach(STEP, |s| s.evicted == 1),
        "{:?}",
        server.counters()
    );
    expect(&mut b, 2, &fc3(0, 1), &fc3_answer(&[0]));
    stop::<H>(server);
}

/// A stalled half request is closed after the partial-frame timeout, not
/// before; a quiet client with nothing pending is untouched.
pub fn partial_frame_timeout<H: Harness>() {
    let server = start::<H>(TcpServerConfig {
        partial_frame_timeout: Some(Duration::from_millis(200)),
        ..tcp_defaults()
    });
    let mut quiet = Client::connect(server.addr());
    expect(&mut quiet, 1, &fc3(0, 1), &fc3_answer(&[0]));
    let mut stalled = Client::connect(server.addr());
    stalled.send(&adu(9, 1, &fc3(0, 1))[..5]);
    let t0 = Instant::now();
    assert!(stalled.closed_by_server(STEP), "{}: stalled client closed", H::NAME);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(150), "not before the timeout: {took:?}");
    assert!(took < Duration::from_secs(2), "soon after the timeout: {took:?}");
    assert!(
        server.counters_reach(STEP, |s| s.partial_timeouts == 1),
        "{:?}",
        server.counters()
    );
    expect(&mut quiet, 2, &fc3(0, 1), &fc3_answer(&[0]));
    stop::<H>(server);
}

/// A silent client is closed after the idle timeout; a busy one is not.
pub fn idle_timeout<H: Harness>() {
    let server = start::<H>(TcpServerConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..tcp_defaults()
    });
    let mut idle = Client::connect(server.addr());
    let mut busy = Client::connect(server.addr());
    expect(&mut idle, 1, &fc3(0, 1), &fc3_answer(&[0]));
    let t0 = Instant::now();
    let mut tid = 0;
    let mut checked_early = false;
    while t0.elapsed() < Duration::from_millis(600) {
        tid += 1;
        expect(&mut busy, tid, &fc3(0, 1), &fc3_answer(&[0]));
        if !checked_early && t0.elapsed() >= Duration::from_millis(100) {
            assert!(
                idle.silent_for(Duration::from_millis(1)),
                "{}: not closed before the timeout",
                H::NAME
            );
            checked_early = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(idle.closed_by_server(STEP), "{}: idle client closed", H::NAME);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "soon after the timeout: {took:?}");
    assert!(
        server.counters_reach(STEP, |s| s.idle_timeouts == 1),
        "{:?}",
        server.counters()
    );
    expect(&mut busy, 999, &fc3(0, 1), &fc3_answer(&[0]));
    stop::<H>(server);
}

/// An allow-list without the client's IP closes it; one with it serves it.
pub fn allow_list<H: Harness>() {
    let server = start::<H>(TcpServerConfig {
        allow_list: Some(vec!["10.1.2.3".parse().expect("ip")]),
        ..tcp_defaults()
    });
    let mut c = Client::connect(server.addr());
    assert!(c.closed_by_server(STEP), "{}: client not on the list closed", H::NAME);
    assert!(
        server.counters_reach(STEP, |s| s.refused == 1),
        "{:?}",
        server.counters()
    );
    assert_eq!(server.counters().accepted, 0);
    stop::<H>(server);

    let server = start::<H>(TcpServerConfig {
        allow_list: Some(vec!["10.1.2.3".parse().expect("ip"), "127.0.0.1".parse().expect("ip")]),
        ..tcp_defaults()
    });
    let mut c = Client::connect(server.addr());
    expect(&mut c, 1, &fc3(0, 1), &fc3_answer(&[0]));
    stop::<H>(server);
}

/// A stop with a request in flight: the request is answered, every
/// connection closed (one that never sent a byte too), the server returns within [`STOP_WITHIN`] and no
/// longer accepts. The stop is asked right after the request is written, so
/// it often reaches the server before the request does; three rounds make a
/// server that drops such a request fail with high probability.
pub fn graceful_shutdown_with_a_request_in_flight<H: Harness>() {
    for round in 0..3u16 {
        let server = start::<H>(tcp_defaults());
        let addr = server.addr();
        let mut c = Client::connect(addr);
        let mut idle = Client::connect(addr);
        // Never sends a byte: no buffers, no protocol state yet.
        let mut silent = Client::connect(addr);
        expect(&mut c, 1, &fc16(0, &[5 + round]), &pdu(0x10, &[0, 1]));
        expect(&mut idle, 1, &fc3(0, 1), &fc3_answer(&[5 + round]));
        assert!(
            server.counters_reach(STEP, |s| s.active == 3),
            "{:?}",
            server.counters()
        );
        c.send(&adu(2, 1, &fc3(0, 1)));
        server.ask_stop();
        let a = c.read_answer();
        assert_eq!(
            (a.tid, a.pdu),
            (2, fc3_answer(&[5 + round])),
            "{}: in-flight request answered",
            H::NAME
        );
        assert!(c.closed_by_server(STEP), "{}: closed after the answer", H::NAME);
        assert!(idle.closed_by_server(STEP), "{}: idle client closed", H::NAME);
        assert!(silent.closed_by_server(STEP), "{}: silent client closed", H::NAME);
        let took = server.stop();
        assert!(took < STOP_WITHIN, "{}: stop took {took:?}", H::NAME);
        assert!(
            std::net::TcpStream::connect_timeout(&addr, STEP).is_err(),
            "{}: no longer accepting",
            H::NAME
        );
    }
}

/// A stop while the server is stuck writing to a client that does not
/// read: cut after `shutdown_timeout`, the server returns within
/// [`STOP_WITHIN`], and another client was served meanwhile.
pub fn stop_with_a_client_that_does_not_read<H: Harness>() {
    let server = start::<H>(TcpServerConfig {
        shutdown_timeout: Duration::from_millis(300),
        ..tcp_defaults()
    });
    let addr = server.addr();
    let mut stuck = Client::connect(addr);
    let mut batch = Vec::new();
    for i in 0..60_000u16 {
        batch.extend_from_slice(&adu(i, 1, &fc3(0, 125)));
    }
    // About 15 MB of answers for 720 KB of requests: more than loopback
    // buffers hold, so the server's writes block.
    let writer = std::thread::spawn(move || {
        let _ = stuck.try_send(&batch);
        stuck
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut other = Client::connect(addr);
    expect(&mut other, 1, &fc3(0, 1), &fc3_answer(&[0]));
    let took = server.stop();
    assert!(took < STOP_WITHIN, "{}: stop took {took:?}", H::NAME);
    assert!(
        took >= Duration::from_millis(250),
        "{}: the stuck connection was given its shutdown_timeout, not cut at once ({took:?})",
        H::NAME
    );
    drop(writer.join().expect("writer"));
}

/// Writes from one client are read by another.
pub fn writes_seen_by_another_client<H: Harness>() {
    let server = start::<H>(tcp_defaults());
    let mut a = Client::connect(server.addr());
    let mut b = Client::connect(server.addr());
    expect(&mut a, 1, &fc16(50, &[0xBEEF, 0xCAFE]), &pdu(0x10, &[50, 2]));
    expect(&mut b, 1, &fc3(50, 2), &fc3_answer(&[0xBEEF, 0xCAFE]));
    expect(
        &mut b,
        2,
        &[0x0F, 0x00, 0x03, 0x00, 0x02, 0x01, 0x03],
        &pdu(0x0F, &[3, 2]),
    );
    expect(&mut a, 2, &pdu(0x01, &[2, 4]), &[0x01, 0x01, 0b0110]);
    stop::<H>(server);
}

/// A partial frame after traffic is still timed out: a request answered and
/// the start of the next in one write (the timer armed while the connection
/// was busy answering), and a partial frame on a connection whose other
/// deadline (buffer release) is much later (a lazily armed timer must be
/// pulled in to the partial-frame deadline).
pub fn partial_frame_timeout_after_traffic<H: Harness>() {
    let server = start::<H>(TcpServerConfig {
        partial_frame_timeout: Some(Duration::from_millis(200)),
        release_buffers_after: Duration::from_secs(3),
        ..tcp_defaults()
    });
    let mut busy = Client::connect(server.addr());
    let mut bytes = adu(1, 1, &fc3(0, 1));
    bytes.extend_from_slice(&adu(2, 1, &fc3(0, 1))[..5]);
    busy.send(&bytes);
    let a = busy.read_answer();
    assert_eq!((a.tid, a.unit, a.pdu), (1, 1, fc3_answer(&[0])));
    assert!(
        busy.closed_by_server(STEP),
        "{}: stalled after an answer: closed",
        H::NAME
    );

    let mut later = Client::connect(server.addr());
    expect(&mut later, 1, &fc3(0, 1), &fc3_answer(&[0]));
    later.send(&adu(2, 1, &fc3(0, 1))[..7]);
    let t0 = Instant::now();
    assert!(
        later.closed_by_server(STEP),
        "{}: stalled after traffic: closed",
        H::NAME
    );
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(150), "not before the timeout: {took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "not at the later deadline: {took:?}"
    );
    assert!(
        server.counters_reach(STEP, |s| s.partial_timeouts == 2),
        "{:?}",
        server.counters()
    );
    stop::<H>(server);
}

/// Buffers released after a quiet spell are taken again: 60 pipelined
/// writes past a 64-byte read buffer, a quiet spell longer than
/// `release_buffers_after`, then a read of what was written. The idle
/// timeout still closes a connection whose buffers were released.
pub fn buffers_released_and_reallocated<H: Harness>() {
    let server = start::<H>(TcpServerConfig {
        release_buffers_after: Duration::from_millis(20),
        read_buffer_size: 64,
        ..tcp_defaults()
    });
    let mut c = Client::connect(server.addr());
    let mut batch = Vec::new();
    for i in 0..60u16 {
        batch.extend_from_slice(&adu(i, 1, &fc16(i, &[i + 1])));
    }
    c.send(&batch);
    for i in 0..60u16 {
        let a = c.read_answer();
        assert_eq!((a.tid, a.pdu), (i, pdu(0x10, &[i, 1])), "{}: answer {i}", H::NAME);
    }
    // Five times the release delay: the buffers are gone.
    std::thread::sleep(Duration::from_millis(100));
    expect(&mut c, 99, &fc3(58, 2), &fc3_answer(&[59, 60]));
    stop::<H>(server);

    let server = start::<H>(TcpServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        release_buffers_after: Duration::from_millis(50),
        ..tcp_defaults()
    });
    let mut c = Client::connect(server.addr());
    expect(&mut c, 1, &fc3(0, 1), &fc3_answer(&[0]));
    let t0 = Instant::now();
    assert!(c.closed_by_server(STEP), "{}: idle after a release: closed", H::NAME);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(150), "not before the timeout: {took:?}");
    assert!(
        server.counters_reach(STEP, |s| s.idle_timeouts == 1),
        "{:?}",
        server.counters()
    );
    stop::<H>(server);
}

/// The idle timeout still acts after the connection's timer fired while an
/// answer waited for a client that did not read (its wake went to the
/// waiting write): every answer arrives whole, then the quiet connection is
/// closed as idle.
pub fn idle_timeout_after_answers_waited_for_the_client<H: Harness>() {
    const N: usize = 24_000;
    const ANSWER: usize = 259; // MBAP header + FC3 of 125 registers
    let server = start::<H>(TcpServerConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        release_buffers_after: Duration::from_millis(100),
        ..tcp_defaults()
    });
    // A small receive buffer, so the 6 MB of answers back up at once.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("recv buffer");
    socket.connect(&server.addr().into()).expect("connect");
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(STEP)).expect("read timeout");
    let mut writer = stream.try_clone().expect("clone");
    let requests: Vec<u8> = (0..N).flat_map(|i| adu(i as u16, 1, &fc3(0, 125))).collect();
    let writing = std::thread::spawn(move || writer.write_all(&requests).expect("write requests"));
    // Past every deadline the connection had while its write waits.
    std::thread::sleep(Duration::from_millis(700));
    let mut answers = vec![0u8; N * ANSWER];
    std::io::Read::read_exact(&mut stream, &mut answers).expect("every answer");
    assert_eq!(
        &answers[(N - 1) * ANSWER + 7..][..2],
        &[3, 250],
        "{}: the last answer is a whole FC3 answer",
        H::NAME
    );
    writing.join().expect("writer");
    let mut c = Client::from_stream(stream);
    assert!(c.closed_by_server(STEP), "{}: idle client closed", H::NAME);
    assert!(
        server.counters_reach(STEP, |s| s.idle_timeouts == 1),
        "{:?}",
        server.counters()
    );
    stop::<H>(server);
}

/// `max_buffered` = 8: a connection holding more than 8 bytes of an
/// unfinished request is closed as a bad stream; a whole request larger
/// than the cap on another connection is served.
pub fn buffer_cap_closes_a_connection_holding_too_much<H: Harness>() {
    let server = start::<H>(TcpServerConfig {
        max_buffered: 8,
        ..tcp_defaults()
    });
    let mut c = Client::connect(server.addr());
    // 12 bytes of a 17-byte FC16 request.
    c.send(&adu(1, 1, &fc16(0, &[1, 2]))[..12]);
    assert!(c.closed_by_server(STEP), "{}: over the cap: closed", H::NAME);
    assert!(
        server.counters_reach(STEP, |s| s.bad_frames == 1),
        "{:?}",
        server.counters()
    );
    let mut d = Client::connect(server.addr());
    expect(&mut d, 2, &fc16(0, &[1, 2]), &pdu(0x10, &[0, 2]));
    stop::<H>(server);
}

/// UDP: a round trip, a malformed datagram dropped without an answer, the
/// next good one answered.
pub fn udp_round_trip_and_malformed_datagram<H: Harness>() {
    let server = H::start_udp(engine(), &UdpOptions::default());
    let c = UdpClient::new(server.addr());
    assert_eq!(c.call(&adu(1, 1, &fc16(7, &[0x1234]))), adu(1, 1, &pdu(0x10, &[7, 1])));
    assert_eq!(c.call(&adu(2, 3, &fc3(7, 1))), adu(2, 3, &fc3_answer(&[0x1234])));
    // A bad protocol id, then a length field longer than the datagram.
    c.send(&adu_with_protocol(3, 0x1234, 1, &fc3(7, 1)));
    let mut short = adu(4, 1, &fc3(7, 1));
    short[5] = 20;
    c.send(&short);
    assert!(
        c.recv_within(Duration::from_millis(200)).is_none(),
        "{}: malformed not answered",
        H::NAME
    );
    assert!(
        server.counters_reach(STEP, |s| s.malformed == 2),
        "{:?}",
        server.counters()
    );
    assert_eq!(c.call(&adu(5, 1, &fc3(7, 1))), adu(5, 1, &fc3_answer(&[0x1234])));
    // An exception comes back as a datagram too.
    assert_eq!(c.call(&adu(6, 1, &[0x5A])), adu(6, 1, &[0xDA, 0x01]));
    // Counted once sent (the client may see an answer first).
    assert!(
        server.counters_reach(STEP, |s| s.answered == 4 && s.received == 6),
        "{:?}",
        server.counters()
    );
    stop::<H>(server);
}

/// The baud rate of the serial cases.
pub const BAUD: u32 = 19_200;

/// The serial settings of a case on `pair`'s server end: [`BAUD`], 8N1.
fn serial_options(pair: &PtyPair, framing: Framing, local_echo: bool) -> SerialOptions {
    SerialOptions {
        port: pair.server_end().to_string_lossy().into_owned(),
        framing,
        baud_rate: BAUD,
        data_bits: 8,
        local_echo,
        auto_open: false,
    }
}

/// A serial server of `H` on `pair`'s server end, serving [`engine`].
fn start_serial<H: Harness>(pair: &PtyPair, framing: Framing, local_echo: bool) -> Running {
    start_serial_engine::<H>(pair, engine(), framing, local_echo)
}

/// A serial server of `H` on `pair`'s server end, serving `engine`.
pub(crate) fn start_serial_engine<H: Harness>(
    pair: &PtyPair,
    engine: std::sync::Arc<coilwork_core::Engine>,
    framing: Framing,
    local_echo: bool,
) -> Running {
    H::start_serial(engine, &serial_options(pair, framing, local_echo))
}

/// Points `path` at the pty behind `pair`'s server end (replacing an older link).
fn link_port(pair: &PtyPair, path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    let pty = std::fs::read_link(pair.server_end()).expect("the server end is a link to a pty");
    std::os::unix::fs::symlink(pty, path).expect("link the port");
}

/// Serial with `auto_open`: the server waits for a port that is missing
/// (counting failed opens), opens it once it appears and serves it; when
/// the line goes away (an adapter unplugged) it counts a line error, waits
/// again, and reopens the port when it is back, values kept.
pub fn serial_auto_open_waits_for_the_port_and_reopens_it<H: Harness>() {
    let Some(first) = PtyPair::new("auto-open-1") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("coilwork-auto-open-{}-{}", H::NAME, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join("port");
    let options = SerialOptions {
        port: path.to_string_lossy().into_owned(),
        auto_open: true,
        ..serial_options(&first, Framing::Rtu, false)
    };
    let server = H::start_serial(engine(), &options);
    assert!(
        server.counters_reach(STEP, |c| c.open_failures >= 2),
        "{}: keeps trying a missing port: {:?}",
        H::NAME,
        server.counters()
    );
    assert_eq!(server.counters().opened, 0, "{}", H::NAME);
    link_port(&first, &path);
    assert!(
        server.counters_reach(STEP, |c| c.opened == 1),
        "{}: opened once it exists: {:?}",
        H::NAME,
        server.counters()
    );
    let mut line = open_client(&first, BAUD);
    line.send(&rtu(1, &fc16(0, &[0x0102])));
    assert_eq!(line.read_n(8), rtu(1, &pdu(0x10, &[0, 1])));

    // The link goes first, so that a retry never opens a recycled pty number.
    std::fs::remove_file(&path).expect("unlink the port");
    drop(line);
    drop(first);
    assert!(
        server.counters_reach(STEP, |c| c.line_errors == 1),
        "{}: the failing line is seen: {:?}",
        H::NAME,
        server.counters()
    );
    let Some(second) = PtyPair::new("auto-open-2") else {
        unreachable!("socat ran a moment ago")
    };
    link_port(&second, &path);
    assert!(
        server.counters_reach(STEP, |c| c.opened == 2),
        "{}: reopened: {:?}",
        H::NAME,
        server.counters()
    );
    let mut line = open_client(&second, BAUD);
    line.send(&rtu(1, &fc3(0, 1)));
    assert_eq!(line.read_n(7), rtu(1, &fc3_answer(&[0x0102])));
    stop::<H>(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Serial RTU: write then read back; another unit id reads the same device
/// and its answer names it; a bad CRC is dropped, the line goes on; an
/// exception travels back as a frame too.
pub fn serial_rtu_round_trip<H: Harness>() {
    let Some(pair) = PtyPair::new("rtu") else { return };
    let server = start_serial::<H>(&pair, Framing::Rtu, false);
    let mut line = open_client(&pair, BAUD);
    let values = [0x1234, 0xFFFF, 0x0000, 0x8001, 42];
    line.send(&rtu(1, &fc16(100, &values)));
    assert_eq!(line.read_n(8), rtu(1, &pdu(0x10, &[100, 5])));
    line.send(&rtu(0x11, &fc3(101, 1)));
    assert_eq!(line.read_n(7), rtu(0x11, &fc3_answer(&[0xFFFF])));
    let mut bad = rtu(1, &fc3(100, 1));
    bad[6] ^= 0xFF;
    line.send(&bad);
    assert!(
        line.silent_for(Duration::from_millis(100)),
        "{}: bad CRC not answered",
        H::NAME
    );
    line.send(&rtu(1, &fc3(100, 5)));
    assert_eq!(line.read_n(15), rtu(1, &fc3_answer(&values)));
    // Past the table's end: exception 02.
    line.send(&rtu(1, &fc3(TABLE_LEN as u16 - 1, 2)));
    assert_eq!(line.read_n(5), rtu(1, &[0x83, 0x02]));
    // The line's traffic counters: 19 + 4 × 8 bytes in, 8 + 7 + 15 + 5 out.
    assert!(
        server.counters_reach(STEP, |c| c.bytes_in == 51 && c.bytes_out == 35),
        "{}: {:?}",
        H::NAME,
        server.counters()
    );
    stop::<H>(server);
}

/// Serial RTU: a frame cut by more than t3.5 of silence is two fragments,
/// both dropped, though the bytes together would be a valid request; the
/// whole frame afterwards is answered.
pub fn serial_rtu_frame_cut_by_silence_is_dropped<H: Harness>() {
    let Some(pair) = PtyPair::new("silence") else { return };
    let server = start_serial::<H>(&pair, Framing::Rtu, false);
    let mut line = open_client(&pair, BAUD);
    let req = rtu(0x11, &fc3(0x6B, 1));
    line.send(&req[..4]);
    // t3.5 at 19200 baud is under 2 ms.
    std::thread::sleep(Duration::from_millis(60));
    line.send(&req[4..]);
    assert!(
        line.silent_for(Duration::from_millis(300)),
        "{}: split frame not answered",
        H::NAME
    );
    line.send(&req);
    assert_eq!(line.read_n(7), rtu(0x11, &fc3_answer(&[0])));
    stop::<H>(server);
}

/// Serial ASCII (7 data bits): a round trip with the exact frame bytes; a
/// frame written in pieces with pauses between (ASCII has no silence rule)
/// still counts; a wrong LRC is dropped.
pub fn serial_ascii_round_trip<H: Harness>() {
    let Some(pair) = PtyPair::new("ascii") else { return };
    let server = H::start_serial(
        engine(),
        &SerialOptions {
            data_bits: 7,
            ..serial_options(&pair, Framing::Ascii, false)
        },
    );
    let mut line = open_client(&pair, BAUD);
    let fc6 = pdu(0x06, &[0x0001, 0x0003]);
    // The spec-style frame for unit 1, FC6 register 2 = 3.
    assert_eq!(ascii(1, &fc6), b":010600010003F5\r\n".to_vec());
    line.send(&ascii(1, &fc6));
    assert_eq!(line.read_n(17), ascii(1, &fc6));
    line.send(&ascii(1, &fc3(1, 1)));
    let want = ascii(1, &fc3_answer(&[3]));
    assert_eq!(line.read_n(want.len()), want);
    for chunk in ascii(2, &fc3(1, 1)).chunks(4) {
        line.send(chunk);
        std::thread::sleep(Duration::from_millis(15));
    }
    let want = ascii(2, &fc3_answer(&[3]));
    assert_eq!(line.read_n(want.len()), want, "{}: a frame in pieces", H::NAME);
    let mut bad = ascii(2, &fc3(1, 1));
    let n = bad.len();
    bad[n - 3] = if bad[n - 3] == b'0' { b'1' } else { b'0' };
    line.send(&bad);
    assert!(
        line.silent_for(Duration::from_millis(200)),
        "{}: bad LRC not answered",
        H::NAME
    );
    stop::<H>(server);
}

/// Serial RTU and ASCII: an oversized byte-counted request (ADU up to 264
/// bytes, past the 256-byte RTU limit) gets exception 03.
pub fn serial_oversized_quantity_gets_exception_03<H: Harness>() {
    for (framing, frame) in [(Framing::Rtu, rtu as fn(u8, &[u8]) -> Vec<u8>), (Framing::Ascii, ascii)] {
        let Some(pair) = PtyPair::new("oversized") else { return };
        let server = start_serial::<H>(&pair, framing, false);
        let mut line = open_client(&pair, BAUD);
        for req in oversized_requests() {
            line.send(&frame(1, &req));
            let want = frame(1, &[req[0] | 0x80, 0x03]);
            assert_eq!(line.read_n(want.len()), want, "{}: {framing:?} FC{}", H::NAME, req[0]);
        }
        line.send(&frame(1, &fc3(0, 1)));
        let want = frame(1, &fc3_answer(&[0]));
        assert_eq!(line.read_n(want.len()), want, "{}: {framing:?} then FC3", H::NAME);
        stop::<H>(server);
    }
}

/// Serial broadcast (unit 0): FC6 and FC16 executed, never answered; a
/// broadcast read is not answered either.
pub fn serial_broadcast_is_silent<H: Harness>() {
    let Some(pair) = PtyPair::new("broadcast") else { return };
    let server = start_serial::<H>(&pair, Framing::Rtu, false);
    let mut line = open_client(&pair, BAUD);
    line.send(&rtu(0, &pdu(0x06, &[5, 0x002A])));
    assert!(
        line.silent_for(Duration::from_millis(200)),
        "{}: broadcast not answered",
        H::NAME
    );
    line.send(&rtu(1, &fc3(5, 1)));
    assert_eq!(
        line.read_n(7),
        rtu(1, &fc3_answer(&[0x002A])),
        "the broadcast write ran"
    );
    line.send(&rtu(0, &fc16(3, &[0x0101, 0x0202])));
    assert!(
        line.silent_for(Duration::from_millis(200)),
        "{}: FC16 broadcast not answered",
        H::NAME
    );
    line.send(&rtu(0, &fc3(3, 1)));
    assert!(
        line.silent_for(Duration::from_millis(200)),
        "{}: broadcast read not answered",
        H::NAME
    );
    line.send(&rtu(7, &fc3(3, 2)));
    assert_eq!(
        line.read_n(9),
        rtu(7, &fc3_answer(&[0x0101, 0x0202])),
        "the FC16 broadcast ran"
    );
    stop::<H>(server);
}

/// Serial, broadcast off in the engine: unit 0 is neither answered nor executed.
pub fn serial_unit_zero_without_broadcast_is_ignored<H: Harness>() {
    let Some(pair) = PtyPair::new("no-broadcast") else {
        return;
    };
    let server = H::start_serial(plain_engine(), &serial_options(&pair, Framing::Rtu, false));
    let mut line = open_client(&pair, BAUD);
    line.send(&rtu(0, &fc16(3, &[0x0101, 0x0202])));
    assert!(
        line.silent_for(Duration::from_millis(200)),
        "{}: unit 0 not answered",
        H::NAME
    );
    line.send(&rtu(1, &fc3(3, 2)));
    assert_eq!(
        line.read_n(9),
        rtu(1, &fc3_answer(&[0, 0])),
        "{}: write not applied",
        H::NAME
    );
    stop::<H>(server);
}

/// Local echo on: the server's own answer read back from the line is not
/// taken for a request (FC6's answer equals its request), also when it
/// comes back in two pieces further apart than t3.5, or glued to the next
/// request.
pub fn serial_local_echo_is_dropped<H: Harness>() {
    let Some(pair) = PtyPair::new("echo") else { return };
    let server = start_serial::<H>(&pair, Framing::Rtu, true);
    let mut line = open_client(&pair, BAUD);
    let fc6 = rtu(1, &pdu(0x06, &[1, 0x002A]));
    line.send(&fc6);
    let answer = line.read_n(8);
    assert_eq!(answer, fc6);
    line.send(&answer);
    assert!(
        line.silent_for(Duration::from_millis(200)),
        "{}: echo not answered",
        H::NAME
    );
    line.send(&rtu(1, &fc3(1, 1)));
    let answer = line.read_n(7);
    assert_eq!(answer, rtu(1, &fc3_answer(&[0x002A])));
    line.send(&answer);
    // The echo in two pieces.
    line.send(&fc6);
    let answer = line.read_n(8);
    line.send(&answer[..3]);
    std::thread::sleep(Duration::from_millis(30));
    line.send(&answer[3..]);
    assert!(
        line.silent_for(Duration::from_millis(200)),
        "{}: echo in pieces not answered",
        H::NAME
    );
    // An FC16's echo glued to the next request.
    line.send(&rtu(1, &fc16(2, &[0x0B, 0x0C])));
    let answer = line.read_n(8);
    assert_eq!(answer, rtu(1, &pdu(0x10, &[2, 2])));
    let mut glued = answer;
    glued.extend_from_slice(&rtu(1, &fc3(1, 3)));
    line.send(&glued);
    let answer = line.read_n(11);
    assert_eq!(answer, rtu(1, &fc3_answer(&[0x2A, 0x0B, 0x0C])));
    line.send(&answer);
    assert!(
        line.silent_for(Duration::from_millis(200)),
        "{}: no stray answer",
        H::NAME
    );
    line.send(&rtu(1, &fc3(3, 1)));
    assert_eq!(line.read_n(7), rtu(1, &fc3_answer(&[0x0C])));
    stop::<H>(server);
}

// ---- Modbus/TCP Security (TLS) ----

/// A mbaps server (client certificate required, test CA) on `engine`.
fn start_tls<H: Harness>(engine: std::sync::Arc<coilwork_core::Engine>) -> Running {
    start_tls_with::<H>(engine, tls_required(), Duration::from_secs(5))
}

/// The TLS side of a mbaps server: client certificates of the test CA required.
fn tls_required() -> crate::TlsConfig {
    let pki = tls::pki();
    crate::TlsConfig::new(
        vec![tls::cert(&pki.server)],
        tls::key(&pki.server),
        coilwork_tls::TlsClientAuth::Required(tls::roots()),
    )
    .expect("server TLS config")
}

/// A TLS server of `H` on `engine` with the TLS side `config` and `handshake_timeout`.
fn start_tls_with<H: Harness>(
    engine: std::sync::Arc<coilwork_core::Engine>,
    config: crate::TlsConfig,
    handshake_timeout: Duration,
) -> Running {
    H::start_tls(engine, &tcp_defaults(), config, handshake_timeout)
}

/// An engine whose authorizer records roles (and denies writes to "viewer").
fn engine_with_roles() -> (std::sync::Arc<tls::Roles>, std::sync::Arc<coilwork_core::Engine>) {
    let roles = std::sync::Arc::new(tls::Roles::default());
    let engine = tls::engine_with(&roles);
    (roles, engine)
}

/// A client certificate with role "operator" (signed by the CA), over TLS
/// 1.3 and then 1.2: FC16 then FC3, two requests in one TLS write answered
/// in order, and the engine's authorizer saw the role on each.
pub fn tls_role_reaches_the_authorizer<H: Harness>() {
    let (roles, engine) = engine_with_roles();
    let server = start_tls::<H>(engine);
    for (i, version) in [&rustls::version::TLS13, &rustls::version::TLS12]
        .into_iter()
        .enumerate()
    {
        let mut c = tls::tls_connect(
            server.addr(),
            tls::client_config(Some(&tls::pki().operator), &[version]),
        )
        .unwrap_or_else(|e| panic!("{}: handshake failed: {e}", H::NAME));
        assert_eq!(c.conn.protocol_version(), Some(version.version), "{}", H::NAME);
        let v = 0x1000 + i as u16;
        let write = tls::call(&mut c, 1, &fc16(3, &[v, 0xABCD])).expect("FC16 answer");
        assert_eq!(write, pdu(0x10, &[3, 2]), "{}: FC16 answer", H::NAME);
        let read = tls::call(&mut c, 2, &fc3(3, 2)).expect("FC3 answer");
        assert_eq!(read, fc3_answer(&[v, 0xABCD]), "{}: FC3 reads the write", H::NAME);
        let mut two = tls::mbap(3, 1, &fc3(3, 1));
        two.extend_from_slice(&tls::mbap(4, 1, &fc3(4, 1)));
        c.write_all(&two).and_then(|()| c.flush()).expect("send");
        assert_eq!(tls::read_pdu(&mut c, 3).expect("answer 3"), fc3_answer(&[v]));
        assert_eq!(tls::read_pdu(&mut c, 4).expect("answer 4"), fc3_answer(&[0xABCD]));
    }
    let op = Some("operator".to_owned());
    assert_eq!(
        roles.seen(),
        [0x10, 0x03, 0x03, 0x03, 0x10, 0x03, 0x03, 0x03].map(|fc| (op.clone(), fc)),
        "{}: roles seen",
        H::NAME
    );
    assert_eq!(server.counters().handshake_failures, 0, "{}", H::NAME);
    stop::<H>(server);
}

/// Role "viewer" is denied writes by the authorizer: FC16 gets exception 01
/// (nothing written), FC3 still works.
pub fn tls_role_denied_writes<H: Harness>() {
    let (roles, engine) = engine_with_roles();
    let server = start_tls::<H>(engine);
    let mut c = tls::tls_connect(server.addr(), tls::client_config(Some(&tls::pki().viewer), tls::BOTH))
        .unwrap_or_else(|e| panic!("{}: handshake failed: {e}", H::NAME));
    let write = tls::call(&mut c, 1, &fc16(3, &[0x1234])).expect("FC16 answer");
    assert_eq!(write, [0x90, 0x01], "{}: FC16 refused with exception 01", H::NAME);
    let read = tls::call(&mut c, 2, &fc3(3, 1)).expect("FC3 answer");
    assert_eq!(read, fc3_answer(&[0]), "{}: FC3 served, nothing was written", H::NAME);
    let viewer = Some("viewer".to_owned());
    assert_eq!(
        roles.seen(),
        vec![(viewer.clone(), 0x10), (viewer, 0x03)],
        "{}: roles seen",
        H::NAME
    );
    drop(c);
    stop::<H>(server);
}

fn assert_refused<H: Harness>(client: Option<&crate::pki::Identity>, what: &str) {
    let (roles, engine) = engine_with_roles();
    let server = start_tls::<H>(std::sync::Arc::clone(&engine));
    let addr = server.addr();
    assert!(
        tls::refused(addr, tls::client_config(client, tls::BOTH)),
        "{}: {what} refused (TLS 1.3)",
        H::NAME
    );
    assert!(
        tls::refused(addr, tls::client_config(client, &[&rustls::version::TLS12])),
        "{}: {what} refused (TLS 1.2)",
        H::NAME
    );
    assert!(
        server.counters_reach(STEP, |c| c.handshake_failures >= 2),
        "{}: {what}: refusals counted ({:?})",
        H::NAME,
        server.counters()
    );
    assert_eq!(
        tls::engine_calls(&engine),
        0,
        "{}: {what}: the engine never saw a request",
        H::NAME
    );
    assert!(
        roles.seen().is_empty(),
        "{}: {what}: the authorizer was never asked",
        H::NAME
    );
    // A good client is still served afterwards.
    let mut ok = tls::tls_connect(addr, tls::client_config(Some(&tls::pki().operator), tls::BOTH))
        .unwrap_or_else(|e| panic!("{}: handshake failed: {e}", H::NAME));
    assert_eq!(tls::call(&mut ok, 1, &fc3(0, 1)).expect("FC3 answer"), fc3_answer(&[0]));
    drop(ok);
    stop::<H>(server);
}

/// A client without a certificate is refused; the engine sees nothing.
pub fn tls_client_without_certificate_is_refused<H: Harness>() {
    assert_refused::<H>(None, "client without a certificate");
}

/// A client whose certificate comes from another CA is refused.
pub fn tls_certificate_from_another_ca_is_refused<H: Harness>() {
    assert_refused::<H>(Some(&tls::pki().other_ca), "certificate of another CA");
}

/// A certificate whose role extension is there twice, or is not one
/// UTF8String, is refused; the engine sees nothing.
pub fn tls_invalid_role_extension_is_refused<H: Harness>() {
    assert_refused::<H>(Some(&tls::pki().two_roles), "role extension twice");
    assert_refused::<H>(Some(&tls::pki().bad_role), "role extension not a UTF8String");
}

/// A certificate of the CA without the role extension is served; the
/// authorizer is asked with no role.
pub fn tls_certificate_without_role_has_no_role<H: Harness>() {
    let (roles, engine) = engine_with_roles();
    let server = start_tls::<H>(engine);
    let mut c = tls::tls_connect(server.addr(), tls::client_config(Some(&tls::pki().no_role), tls::BOTH))
        .unwrap_or_else(|e| panic!("{}: handshake failed: {e}", H::NAME));
    assert_eq!(tls::call(&mut c, 1, &fc3(0, 2)).expect("FC3"), fc3_answer(&[0, 0]));
    assert_eq!(roles.seen(), [(None, 0x03)], "{}: roles seen", H::NAME);
    drop(c);
    stop::<H>(server);
}

/// Server-only TLS (no client certificates asked for): a client without a
/// certificate is served, with no role.
pub fn tls_server_only_serves_a_client_without_certificate<H: Harness>() {
    let (roles, engine) = engine_with_roles();
    let pki = tls::pki();
    let config = crate::TlsConfig::new(
        vec![tls::cert(&pki.server)],
        tls::key(&pki.server),
        coilwork_tls::TlsClientAuth::None,
    )
    .expect("server TLS config");
    assert!(config.is_server_only());
    let server = start_tls_with::<H>(engine, config, Duration::from_secs(5));
    let mut c = tls::tls_connect(server.addr(), tls::client_config(None, tls::BOTH))
        .unwrap_or_else(|e| panic!("{}: handshake failed: {e}", H::NAME));
    assert_eq!(
        tls::call(&mut c, 1, &fc16(3, &[0xBEEF])).expect("FC16"),
        pdu(0x10, &[3, 1])
    );
    assert_eq!(tls::call(&mut c, 2, &fc3(3, 1)).expect("FC3"), fc3_answer(&[0xBEEF]));
    assert_eq!(roles.seen(), [(None, 0x10), (None, 0x03)], "{}: roles seen", H::NAME);
    drop(c);
    stop::<H>(server);
}

/// A client that connects and never starts its handshake is closed after
/// the handshake timeout and counted as a refusal; the engine sees nothing.
pub fn tls_handshake_timeout_closes_a_silent_client<H: Harness>() {
    let (_roles, engine) = engine_with_roles();
    let server = start_tls_with::<H>(
        std::sync::Arc::clone(&engine),
        tls_required(),
        Duration::from_millis(200),
    );
    let mut raw = Client::connect(server.addr());
    assert!(raw.closed_by_server(STEP), "{}: silent client closed", H::NAME);
    assert!(
        server.counters_reach(STEP, |c| c.handshake_failures == 1),
        "{}: {:?}",
        H::NAME,
        server.counters()
    );
    assert_eq!(tls::engine_calls(&engine), 0, "{}", H::NAME);
    stop::<H>(server);
}

/// A stop while a silent client holds a handshake open (a long handshake
/// timeout) ends the server within [`STOP_WITHIN`].
pub fn tls_stop_cuts_a_handshake_in_progress<H: Harness>() {
    let (_roles, engine) = engine_with_roles();
    let server = start_tls_with::<H>(engine, tls_required(), Duration::from_secs(60));
    let _raw = Client::connect(server.addr());
    assert!(
        server.counters_reach(STEP, |c| c.active == 1),
        "{}: {:?}",
        H::NAME,
        server.counters()
    );
    stop::<H>(server);
}

/// A stop with a request in flight over TLS: the request is answered, the
/// connection closed cleanly (`close_notify`), and the server returns within [`STOP_WITHIN`].
pub fn tls_graceful_shutdown_with_a_request_in_flight<H: Harness>() {
    let (_roles, engine) = engine_with_roles();
    let server = start_tls::<H>(engine);
    let addr = server.addr();
    let mut c = tls::tls_connect(addr, tls::client_config(Some(&tls::pki().operator), tls::BOTH))
        .unwrap_or_else(|e| panic!("{}: handshake failed: {e}", H::NAME));
    assert_eq!(tls::call(&mut c, 1, &fc16(0, &[42])).expect("FC16"), pdu(0x10, &[0, 1]));
    c.write_all(&tls::mbap(2, 1, &fc3(0, 1)))
        .and_then(|()| c.flush())
        .expect("send");
    server.ask_stop();
    let answer = tls::read_pdu(&mut c, 2).unwrap_or_else(|e| panic!("{}: in-flight request unanswered: {e}", H::NAME));
    assert_eq!(answer, fc3_answer(&[42]), "{}: in-flight request answered", H::NAME);
    // Then a clean close (close_notify: end of stream, not an error).
    let mut rest = [0u8; 8];
    let end = std::io::Read::read(&mut c, &mut rest);
    assert!(
        matches!(end, Ok(0)),
        "{}: clean TLS close after the answer: {end:?}",
        H::NAME
    );
    let took = server.stop();
    assert!(took < STOP_WITHIN, "{}: stop took {took:?}", H::NAME);
    assert!(
        std::net::TcpStream::connect_timeout(&addr, STEP).is_err(),
        "{}: no longer accepting",
        H::NAME
    );
}
