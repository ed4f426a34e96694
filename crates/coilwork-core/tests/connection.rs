//! The connection state machine end to end: bytes in, answers out, for every
//! framing, with any split of the stream, line timing, local echo and UDP.

use coilwork_core::frame::{ascii, mbap, rtu};
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Connection, ConnectionConfig, ConnectionError, Engine, FrameError, Framing, Transport};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn engine() -> Arc<Engine> {
    let device = DeviceContext::with_sizes(1000, 1000, 1000, 1000).unwrap();
    Arc::new(Engine::builder(ServerContext::single(device)).build())
}

fn encode(framing: Framing, tid: u16, unit: u8, pdu: &[u8], out: &mut Vec<u8>) {
    match framing {
        Framing::Mbap => mbap::encode(tid, unit, pdu, out),
        Framing::Rtu => rtu::encode(unit, pdu, out),
        Framing::Ascii => ascii::encode(unit, pdu, ascii::DEFAULT_DELIMITER, out),
    }
}

/// A mix of reads and writes whose answers depend on the order they run in.
fn requests() -> Vec<Vec<u8>> {
    vec![
        vec![0x10, 0x00, 0x05, 0x00, 0x02, 0x04, 0x12, 0x34, 0x56, 0x78],
        vec![0x03, 0x00, 0x04, 0x00, 0x04],
        vec![0x06, 0x00, 0x05, 0xAB, 0xCD],
        vec![0x03, 0x00, 0x05, 0x00, 0x01],
        vec![0x0F, 0x00, 0x03, 0x00, 0x0A, 0x02, 0xCD, 0x01],
        vec![0x01, 0x00, 0x00, 0x00, 0x10],
        vec![0x03, 0x03, 0xE7, 0x00, 0x02], // 999..1001: exception 02
        vec![0x2B, 0x0E, 0x01, 0x00],
    ]
}

fn stream(framing: Framing) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, pdu) in requests().iter().enumerate() {
        encode(framing, i as u16 + 1, 1, pdu, &mut out);
    }
    out
}

fn config(framing: Framing) -> ConnectionConfig {
    ConnectionConfig::stream(framing, Transport::Tcp, None)
}

/// Feeds `chunks` one by one to a fresh connection and returns all output.
fn run(framing: Framing, chunks: &[&[u8]]) -> Vec<u8> {
    let mut conn = Connection::new(engine(), config(framing));
    let now = Instant::now();
    let mut out = Vec::new();
    for c in chunks {
        conn.handle_input(now, c).unwrap();
        out.extend_from_slice(conn.output());
        let n = conn.output().len();
        conn.consume_output(n);
    }
    out
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    for framing in [Framing::Mbap, Framing::Rtu, Framing::Ascii] {
        let whole = run(framing, &[&stream(framing)]);
        // Answer by answer, the same as sending each request alone in order.
        let mut conn = Connection::new(engine(), config(framing));
        let mut expected = Vec::new();
        for (i, pdu) in requests().iter().enumerate() {
            let mut one = Vec::new();
            encode(framing, i as u16 + 1, 1, pdu, &mut one);
            conn.handle_input(Instant::now(), &one).unwrap();
            assert!(conn.has_output(), "{framing:?}: request {i} not answered");
            expected.extend_from_slice(conn.output());
            let n = conn.output().len();
            conn.consume_output(n);
        }
        assert_eq!(whole, expected, "{framing:?}");
    }
}

#[test]
fn mbap_answers_have_the_expected_bytes() {
    let mut req = Vec::new();
    mbap::encode(0x1234, 7, &[0x06, 0x00, 0x01, 0x00, 0x03], &mut req);
    mbap::encode(0x1235, 7, &[0x03, 0x00, 0x01, 0x00, 0x01], &mut req);
    let out = run(Framing::Mbap, &[&req]);
    assert_eq!(
        out,
        [
            0x12, 0x34, 0, 0, 0, 6, 7, 0x06, 0x00, 0x01, 0x00, 0x03, // echo
            0x12, 0x35, 0, 0, 0, 5, 7, 0x03, 0x02, 0x00, 0x03, // value read back
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_split_gives_the_same_answers(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12), f in 0usize..3) {
        let framing = [Framing::Mbap, Framing::Rtu, Framing::Ascii][f];
        let bytes = stream(framing);
        let whole = run(framing, &[&bytes]);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&bytes[last..p]);
            last = p;
        }
        chunks.push(&bytes[last..]);
        prop_assert_eq!(run(framing, &chunks), whole);
    }

    #[test]
    fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), f in 0usize..3) {
        let framing = [Framing::Mbap, Framing::Rtu, Framing::Ascii][f];
        let mut conn = Connection::new(engine(), config(framing));
        let _ = conn.handle_input(Instant::now(), &bytes);
        let _ = conn.handle_datagram(&bytes);
    }
}

#[test]
fn garbage_then_a_good_request_is_answered() {
    for framing in [Framing::Rtu, Framing::Ascii] {
        let mut bytes = vec![0xFF, 0x00, 0x13, 0x37, b'x'];
        encode(framing, 0, 1, &[0x03, 0x00, 0x00, 0x00, 0x01], &mut bytes);
        let out = run(framing, &[&bytes]);
        let mut expected = Vec::new();
        encode(framing, 0, 1, &[0x03, 0x02, 0x00, 0x00], &mut expected);
        assert_eq!(out, expected, "{framing:?}");
    }
}

#[test]
fn mbap_bad_protocol_id_closes_the_connection() {
    let mut conn = Connection::new(engine(), config(Framing::Mbap));
    let err = conn
        .handle_input(Instant::now(), &[0, 1, 0, 9, 0, 6, 1, 3, 0, 0, 0, 1])
        .unwrap_err();
    assert_eq!(err, ConnectionError::Frame(FrameError::BadProtocolId(9)));
    let mut conn = Connection::new(engine(), config(Framing::Mbap));
    // Length 256 could be a byte-counted request: refused once the function code says it is not.
    assert_eq!(conn.handle_input(Instant::now(), &[0, 1, 0, 0, 1, 0, 1]), Ok(()));
    let err = conn.handle_input(Instant::now(), &[3]).unwrap_err();
    assert_eq!(err, ConnectionError::Frame(FrameError::BadLength(256)));
    let mut conn = Connection::new(engine(), config(Framing::Mbap));
    let err = conn.handle_input(Instant::now(), &[0, 1, 0, 0, 1, 11]).unwrap_err();
    assert_eq!(err, ConnectionError::Frame(FrameError::BadLength(267)));
}

#[test]
fn rtu_partial_frame_is_dropped_after_line_silence() {
    let mut cfg = ConnectionConfig::serial(Framing::Rtu, 9600, 11);
    cfg.transport = Transport::Serial;
    let mut conn = Connection::new(engine(), cfg);
    let t0 = Instant::now();
    let mut good = Vec::new();
    rtu::encode(1, &[0x03, 0x00, 0x00, 0x00, 0x01], &mut good);
    // Half a frame, then silence.
    conn.handle_input(t0, &good[..4]).unwrap();
    let deadline = conn.poll_timeout().expect("a partial frame sets a deadline");
    // t3.5 at 9600 baud, 11 bits: 3.5 * 11 / 9600 s ≈ 4.01 ms.
    let wait = deadline - t0;
    assert!(
        wait > Duration::from_micros(3900) && wait < Duration::from_micros(4200),
        "{wait:?}"
    );
    conn.handle_timeout(deadline);
    assert!(!conn.has_partial_frame());
    assert_eq!(conn.poll_timeout(), None);
    // The next whole frame is answered.
    conn.handle_input(deadline + Duration::from_millis(1), &good).unwrap();
    let mut expected = Vec::new();
    rtu::encode(1, &[0x03, 0x02, 0x00, 0x00], &mut expected);
    assert_eq!(conn.output(), &expected[..]);
    assert_eq!(
        engine_bus_errors(&conn),
        1,
        "the truncated frame counts as a bus communication error"
    );
}

fn engine_bus_errors(conn: &Connection) -> u16 {
    use coilwork_core::diagnostics::DiagnosticCounter;
    conn.engine()
        .bus_diagnostics()
        .get(DiagnosticCounter::BusCommunicationError)
}

#[test]
fn local_echo_is_dropped() {
    let mut cfg = ConnectionConfig::serial(Framing::Rtu, 19200, 11);
    cfg.local_echo = true;
    let mut conn = Connection::new(engine(), cfg);
    let now = Instant::now();
    let mut req = Vec::new();
    rtu::encode(1, &[0x06, 0x00, 0x01, 0x00, 0x2A], &mut req);
    conn.handle_input(now, &req).unwrap();
    let answer = conn.output().to_vec();
    assert_eq!(answer, req, "FC6 answers with an echo of the request");
    conn.consume_output(answer.len());
    // The line hands our own answer back, split, then the next request comes.
    conn.handle_input(now, &answer[..3]).unwrap();
    let mut rest = answer[3..].to_vec();
    rtu::encode(1, &[0x03, 0x00, 0x01, 0x00, 0x01], &mut rest);
    conn.handle_input(now, &rest).unwrap();
    let mut expected = Vec::new();
    rtu::encode(1, &[0x03, 0x02, 0x00, 0x2A], &mut expected);
    assert_eq!(conn.output(), &expected[..], "the echo was not taken for a request");
}

#[test]
fn datagrams_carry_exactly_one_adu() {
    let mut conn = Connection::new(engine(), ConnectionConfig::stream(Framing::Mbap, Transport::Udp, None));
    let mut req = Vec::new();
    mbap::encode(9, 1, &[0x03, 0x00, 0x00, 0x00, 0x01], &mut req);
    conn.handle_datagram(&req).unwrap();
    assert_eq!(conn.output(), &[0, 9, 0, 0, 0, 5, 1, 0x03, 0x02, 0, 0]);
    let n = conn.output().len();
    conn.consume_output(n);
    // Trailing bytes: dropped whole, nothing answered.
    let mut two = req.clone();
    two.push(0);
    assert!(conn.handle_datagram(&two).is_err());
    assert!(!conn.has_output());
    // Truncated: dropped.
    assert!(conn.handle_datagram(&req[..8]).is_err());
    assert!(!conn.has_output());
}

#[test]
fn buffer_cap_is_enforced() {
    let mut cfg = ConnectionConfig::stream(Framing::Ascii, Transport::Tcp, None);
    cfg.max_buffered = 64;
    let mut conn = Connection::new(engine(), cfg);
    // A frame start followed by hex digits that never end.
    let mut bytes = vec![b':'];
    bytes.extend(std::iter::repeat_n(b'0', 100));
    assert_eq!(
        conn.handle_input(Instant::now(), &bytes),
        Err(ConnectionError::BufferFull(64))
    );
}

/// A hook asking for a delivery: FC3 delayed 50 ms and split after 3 bytes
/// with a 20 ms pause; FC6 garbled.
struct DeliveryHook;
impl coilwork_core::engine::RequestHook for DeliveryHook {
    fn delivery(
        &self,
        ctx: &coilwork_core::RequestContext<'_>,
        _request: &coilwork_core::pdu::Request<'_>,
        _response: &[u8],
    ) -> Option<coilwork_core::Delivery> {
        match ctx.function {
            0x03 => Some(coilwork_core::Delivery {
                delay: Duration::from_millis(50),
                split: Some((3, Duration::from_millis(20))),
                garble: false,
            }),
            0x06 => Some(coilwork_core::Delivery {
                garble: true,
                ..Default::default()
            }),
            _ => None,
        }
    }
}

fn hooked(framing: Framing) -> Connection {
    let device = DeviceContext::with_sizes(10, 10, 10, 10).unwrap();
    let engine = Arc::new(
        Engine::builder(ServerContext::single(device))
            .hook(Arc::new(DeliveryHook))
            .build(),
    );
    Connection::new(engine, ConnectionConfig::stream(framing, Transport::Tcp, None))
}

#[test]
fn delivery_pauses_cut_the_output() {
    let mut conn = hooked(Framing::Mbap);
    let mut input = Vec::new();
    encode(Framing::Mbap, 1, 1, &[0x01, 0x00, 0x00, 0x00, 0x01], &mut input); // undelayed, 10 bytes
    encode(Framing::Mbap, 2, 1, &[0x03, 0x00, 0x00, 0x00, 0x01], &mut input); // delayed + split, 11 bytes
    conn.handle_input(Instant::now(), &input).unwrap();
    assert_eq!(conn.output().len(), 21);
    let (pause, bytes) = conn.next_output();
    assert_eq!((pause, bytes.len()), (Duration::ZERO, 10));
    conn.consume_output(10);
    let (pause, bytes) = conn.next_output();
    assert_eq!((pause, bytes), (Duration::from_millis(50), &[0, 2, 0][..]));
    conn.consume_output(3);
    let (pause, bytes) = conn.next_output();
    assert_eq!(
        (pause, bytes),
        (Duration::from_millis(20), &[0, 0, 5, 1, 3, 2, 0, 0][..])
    );
    conn.consume_output(8);
    assert!(!conn.has_output());
    assert_eq!(conn.next_output(), (Duration::ZERO, &[][..]));
}

#[test]
fn delivery_garbles_each_framing() {
    let write = [0x06, 0x00, 0x01, 0x12, 0x34];
    for framing in [Framing::Mbap, Framing::Rtu, Framing::Ascii] {
        let mut conn = hooked(framing);
        let mut input = Vec::new();
        encode(framing, 7, 1, &write, &mut input);
        conn.handle_input(Instant::now(), &input).unwrap();
        let mut good = Vec::new();
        encode(framing, 7, 1, &write, &mut good); // FC6 echoes the request
        let got = conn.output().to_vec();
        assert_eq!(got.len(), good.len(), "{framing:?}");
        assert_ne!(got, good, "{framing:?}");
        let expected = match framing {
            Framing::Mbap => matches!(mbap::decode(&got), coilwork_core::frame::Decoded::Fatal(_)),
            Framing::Rtu => matches!(
                rtu::decode(&got, &|_| coilwork_core::frame::PduLength::Unknown),
                coilwork_core::frame::Decoded::Skip { .. } | coilwork_core::frame::Decoded::Incomplete
            ),
            Framing::Ascii => {
                let mut scratch = [0u8; 256];
                matches!(
                    ascii::decode(&got, ascii::DEFAULT_DELIMITER, &mut scratch),
                    coilwork_core::frame::Decoded::Skip {
                        error: FrameError::BadLrc { .. },
                        ..
                    }
                )
            }
        };
        assert!(expected, "{framing:?}: {got:02X?} still decodes");
    }
}

/// Byte-counted requests whose quantity breaks the spec limit and whose PDU
/// is past 253 bytes (MBAP length 255..=266): the request with exception 03.
fn oversized_requests() -> Vec<Vec<u8>> {
    let fc = |head: &[u8], count: usize| [head, &vec![0x5A; count]].concat();
    vec![
        // FC16 writing 124 registers (MBAP length 255).
        fc(&[0x10, 0x00, 0x00, 0x00, 124, 248], 248),
        // FC16 with byte count 255 (length 262).
        fc(&[0x10, 0x00, 0x00, 0x00, 124, 255], 255),
        // FC15 writing 2040 coils (length 262).
        fc(&[0x0F, 0x00, 0x00, 0x07, 0xF8, 255], 255),
        // FC23 writing 122 registers (length 255), and with count 255 (266).
        fc(&[0x17, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 122, 244], 244),
        fc(&[0x17, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 122, 255], 255),
        // FC20 and FC21 with byte count 255 (length 258).
        fc(&[0x14, 255], 255),
        fc(&[0x15, 255], 255),
    ]
}

#[test]
fn oversized_byte_counted_requests_get_exception_03() {
    for framing in [Framing::Mbap, Framing::Rtu, Framing::Ascii] {
        for pdu in oversized_requests() {
            let mut req = Vec::new();
            encode(framing, 9, 1, &pdu, &mut req);
            // Then an ordinary request on the same stream: still served.
            encode(framing, 10, 1, &[0x03, 0x00, 0x00, 0x00, 0x01], &mut req);
            let mut want = Vec::new();
            encode(framing, 9, 1, &[pdu[0] | 0x80, 0x03], &mut want);
            encode(framing, 10, 1, &[0x03, 0x02, 0x00, 0x00], &mut want);
            let fc = pdu[0];
            assert_eq!(run(framing, &[&req]), want, "{framing:?} FC{fc}: whole");
            // Split one byte at a time, the answer is the same.
            let bytes: Vec<&[u8]> = req.chunks(1).collect();
            assert_eq!(run(framing, &bytes), want, "{framing:?} FC{fc}: byte by byte");
        }
    }
}

#[test]
fn oversized_byte_counted_request_in_a_datagram_gets_exception_03() {
    let mut conn = Connection::new(engine(), ConnectionConfig::stream(Framing::Mbap, Transport::Udp, None));
    for pdu in oversized_requests() {
        let mut req = Vec::new();
        mbap::encode(3, 1, &pdu, &mut req);
        conn.handle_datagram(&req).unwrap();
        let mut want = Vec::new();
        mbap::encode(3, 1, &[pdu[0] | 0x80, 0x03], &mut want);
        assert_eq!(conn.output(), &want[..]);
        let n = conn.output().len();
        conn.consume_output(n);
    }
}

#[test]
fn mbap_length_past_the_largest_byte_counted_request_still_closes() {
    // FC3 with length 255, and FC16 whose byte count disagrees with length 255.
    for pdu in [vec![0x03; 254], [&[0x10, 0, 0, 0, 124, 247][..], &[0; 248]].concat()] {
        let mut req = Vec::new();
        mbap::encode(1, 1, &pdu, &mut req);
        let mut conn = Connection::new(engine(), config(Framing::Mbap));
        let err = conn.handle_input(Instant::now(), &req).unwrap_err();
        assert_eq!(err, ConnectionError::Frame(FrameError::BadLength(255)));
        assert!(!conn.has_output());
    }
}
