use super::*;
use crate::frame::checksum::lrc;

fn now() -> Instant {
    Instant::now()
}

fn collect(up: &mut Upstream, t: Instant, bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut got = Vec::new();
    up.handle_input(t, bytes, &mut |e| {
        if let Event::Answer { token, pdu } = e {
            got.push((token, pdu.to_vec()));
        }
    });
    got
}

fn rtu_frame(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    rtu::encode(unit, pdu, &mut v);
    v
}

#[test]
fn mbap_maps_transaction_ids_and_answers_out_of_order() {
    let mut cfg = ClientConfig::new(Framing::Mbap, Duration::from_secs(1));
    cfg.max_in_flight = 4;
    let mut up = Upstream::new(cfg);
    let t = now();
    up.start(t, 100, 1, &[3, 0, 0, 0, 1]).unwrap(); // ok: test code
    up.start(t, 200, 2, &[3, 0, 5, 0, 1]).unwrap(); // ok: test code
    let out = up.output().to_vec();
    assert_eq!(out.len(), 24);
    let (tid_a, tid_b) = (
        u16::from_be_bytes([out[0], out[1]]),
        u16::from_be_bytes([out[12], out[13]]),
    );
    assert_ne!(tid_a, tid_b);
    up.consume_output(out.len());
    assert!(up.output().is_empty());
    let mut answers = Vec::new();
    mbap::encode(tid_b, 2, &[3, 2, 0, 9], &mut answers);
    mbap::encode(tid_a, 1, &[3, 2, 0, 7], &mut answers);
    // Split in the middle of the second answer.
    let first = collect(&mut up, t, &answers[..15]);
    let second = collect(&mut up, t, &answers[15..]);
    assert_eq!(first, vec![(200, vec![3, 2, 0, 9])]);
    assert_eq!(second, vec![(100, vec![3, 2, 0, 7])]);
    assert_eq!(up.in_flight(), 0);
}

/// A request whose function code has the exception bit set gets its
/// server's exception 01 back, not a timeout.
#[test]
fn function_code_with_the_exception_bit_is_answered() {
    let mut up = Upstream::new(ClientConfig::new(Framing::Mbap, Duration::from_secs(1)));
    let t = now();
    up.start(t, 7, 1, &[0xFF]).unwrap(); // ok: test code
    let tid = u16::from_be_bytes([up.output()[0], up.output()[1]]);
    let mut answer = Vec::new();
    mbap::encode(tid, 1, &[0xFF, 0x01], &mut answer);
    assert_eq!(collect(&mut up, t, &answer), vec![(7, vec![0xFF, 0x01])]);
    assert_eq!(up.in_flight(), 0);
}

#[test]
fn mbap_wrong_unit_or_id_or_length_is_not_an_answer() {
    let mut up = Upstream::new(ClientConfig::new(Framing::Mbap, Duration::from_secs(1)));
    let t = now();
    up.start(t, 1, 5, &[3, 0, 0, 0, 2]).unwrap(); // ok: test code
    let tid = u16::from_be_bytes([up.output()[0], up.output()[1]]);
    let mut bad = Vec::new();
    mbap::encode(tid, 6, &[3, 2, 0, 1], &mut bad); // wrong unit
    mbap::encode(tid.wrapping_add(9), 5, &[3, 2, 0, 1], &mut bad); // wrong id
    mbap::encode(tid, 5, &[3, 4, 0, 1], &mut bad); // truncated: byte count 4, 2 bytes
    mbap::encode(tid, 5, &[4, 2, 0, 1], &mut bad); // wrong function
    assert!(collect(&mut up, t, &bad).is_empty());
    assert_eq!(up.counters().unmatched, 4);
    assert_eq!(up.in_flight(), 1);
}

#[test]
fn rtu_exception_answer_and_bad_crc() {
    // A timed line: the rest of a garbled frame is dropped after t3.5 of silence.
    let mut cfg = ClientConfig::new(Framing::Rtu, Duration::from_secs(1));
    cfg.rtu_timing = Some(RtuTiming::new(19200, 11));
    let gap = Duration::from_millis(5);
    let mut up = Upstream::new(cfg);
    let t = now();
    up.start(t, 9, 3, &[6, 0, 1, 0, 2]).unwrap(); // ok: test code
    assert_eq!(up.output(), rtu_frame(3, &[6, 0, 1, 0, 2]).as_slice());
    assert_eq!(up.start(t, 10, 3, &[3, 0, 0, 0, 1]), Err(StartError::NotReady));
    let mut garbled = rtu_frame(3, &[6, 0, 1, 0, 2]);
    garbled[3] ^= 0x40;
    assert!(collect(&mut up, t, &garbled).is_empty());
    assert!(collect(&mut up, t + gap, &rtu_frame(4, &[0x86, 2])).is_empty());
    assert_eq!(
        collect(&mut up, t + gap * 2, &rtu_frame(3, &[0x86, 2])),
        vec![(9, vec![0x86, 2])]
    );
    assert!(up.counters().frame_errors > 0);
    assert_eq!(up.counters().unmatched, 1);
}

#[test]
fn rtu_timeout_then_late_answer_dropped() {
    let mut up = Upstream::new(ClientConfig::new(Framing::Rtu, Duration::from_millis(50)));
    let t = now();
    up.start(t, 1, 1, &[3, 0, 0, 0, 1]).unwrap(); // ok: test code
    up.consume_output(8);
    assert_eq!(up.poll_timeout(), Some(t + Duration::from_millis(50)));
    let mut ev = Vec::new();
    up.handle_timeout(t + Duration::from_millis(49), &mut |e| ev.push(e.failure()));
    assert!(ev.is_empty());
    up.handle_timeout(t + Duration::from_millis(50), &mut |e| ev.push(e.failure()));
    assert_eq!(ev, vec![Some(ExceptionCode::GatewayTargetFailedToRespond)]);
    let late = t + Duration::from_millis(60);
    up.start(late, 2, 1, &[4, 0, 0, 0, 1]).unwrap(); // ok: test code
    // The late answer to FC3 does not answer the FC4 request.
    assert!(collect(&mut up, late, &rtu_frame(1, &[3, 2, 0, 1])).is_empty());
    assert_eq!(
        collect(&mut up, late, &rtu_frame(1, &[4, 2, 0, 1])),
        vec![(2, vec![4, 2, 0, 1])]
    );
}

#[test]
fn rtu_partial_answer_dropped_after_silence_and_line_waits_t35() {
    let mut cfg = ClientConfig::new(Framing::Rtu, Duration::from_secs(1));
    cfg.rtu_timing = Some(RtuTiming::new(9600, 11));
    let t35 = cfg.rtu_timing.unwrap().t3_5; // ok: test code
    let mut up = Upstream::new(cfg);
    let t = now();
    up.start(t, 1, 1, &[3, 0, 0, 0, 1]).unwrap(); // ok: test code
    let answer = rtu_frame(1, &[3, 2, 0, 1]);
    assert!(collect(&mut up, t, &answer[..3]).is_empty());
    assert_eq!(up.poll_timeout(), Some(t + t35));
    // The rest after a silence: the first part was dropped, no answer.
    let later = t + t35 * 2;
    assert!(collect(&mut up, later, &answer[3..]).is_empty());
    let again = later + t35 * 2;
    assert_eq!(collect(&mut up, again, &answer), vec![(1, vec![3, 2, 0, 1])]);
    assert!(!up.can_start(again));
    assert!(up.can_start(again + t35));
}

#[test]
fn ascii_answer_with_lrc() {
    let mut up = Upstream::new(ClientConfig::new(Framing::Ascii, Duration::from_secs(1)));
    let t = now();
    up.start(t, 4, 2, &[1, 0, 0, 0, 8]).unwrap(); // ok: test code
    assert!(up.output().starts_with(b":02010000000"));
    let mut good = Vec::new();
    ascii::encode(2, &[1, 1, 0x55], b'\n', &mut good);
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 3] = if bad[n - 3] == b'0' { b'1' } else { b'0' };
    assert!(collect(&mut up, t, &bad).is_empty());
    assert_eq!(collect(&mut up, t, &good), vec![(4, vec![1, 1, 0x55])]);
    assert_eq!(lrc(&[2, 1, 1, 0x55]), lrc(&[2, 1, 1, 0x55]));
}

#[test]
fn broadcast_expects_nothing_and_turns_around() {
    let mut up = Upstream::new(ClientConfig::new(Framing::Rtu, Duration::from_secs(1)));
    let t = now();
    assert_eq!(up.start(t, 1, 0, &[6, 0, 1, 0, 2]), Ok(Started::Broadcast));
    assert_eq!(up.in_flight(), 0);
    assert!(!up.can_start(t));
    assert!(up.can_start(t + Duration::from_millis(100)));
}

#[test]
fn reset_loses_everything_in_flight() {
    let mut cfg = ClientConfig::new(Framing::Mbap, Duration::from_secs(1));
    cfg.max_in_flight = 3;
    let mut up = Upstream::new(cfg);
    let t = now();
    for token in 0..3 {
        up.start(t, token, 1, &[3, 0, 0, 0, 1]).unwrap(); // ok: test code
    }
    assert_eq!(up.start(t, 9, 1, &[3, 0, 0, 0, 1]), Err(StartError::NotReady));
    let mut lost = Vec::new();
    up.reset(&mut |e| lost.push(e.failure()));
    assert_eq!(lost.len(), 3);
    assert!(lost.iter().all(|e| *e == Some(ExceptionCode::GatewayPathUnavailable)));
    assert!(up.output().is_empty());
    assert_eq!(up.start(t, 1, 1, &[]), Err(StartError::BadPdu(0)));
}
