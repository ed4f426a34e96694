//! Response framing rules: how long an answer PDU is, and RTU answers found
//! in a byte stream by those lengths and their CRC.

use crate::error::FrameError;
use crate::frame::checksum::crc16;
use crate::frame::{Decoded, MAX_RTU_ADU, PduLength};

/// Unit id + CRC around an RTU PDU.
const OVERHEAD: usize = 3;

/// Length of a response PDU (function code included) as far as its first
/// bytes tell. Exception answers are 2 bytes; codes with no fixed rule
/// (0x2B, user codes) are [`PduLength::Unknown`].
pub fn response_pdu_length(pdu: &[u8]) -> PduLength {
    let Some(&function) = pdu.first() else {
        return PduLength::NeedMore;
    };
    if function & 0x80 != 0 {
        return PduLength::Exact(2);
    }
    let byte = |i: usize| pdu.get(i).map(|&b| usize::from(b));
    match function {
        0x01..=0x04 | 0x0C | 0x11 | 0x14 | 0x15 | 0x17 => {
            byte(1).map_or(PduLength::NeedMore, |n| PduLength::Exact(2 + n))
        }
        0x05 | 0x06 | 0x08 | 0x0B | 0x0F | 0x10 => PduLength::Exact(5),
        0x07 => PduLength::Exact(2),
        0x16 => PduLength::Exact(7),
        0x18 => match (byte(1), byte(2)) {
            (Some(hi), Some(lo)) => PduLength::Exact(3 + (hi << 8 | lo)),
            _ => PduLength::NeedMore,
        },
        _ => PduLength::Unknown,
    }
}

/// True if `pdu`'s length is what its function code's response rule says
/// (always true for codes with no rule).
pub fn response_length_ok(pdu: &[u8]) -> bool {
    match response_pdu_length(pdu) {
        PduLength::Exact(n) => n == pdu.len(),
        PduLength::NeedMore => false,
        PduLength::Unknown => !pdu.is_empty(),
    }
}

/// Looks for an RTU answer at the front of `buf`: by its length rule, or
/// for codes with none by the shortest prefix whose CRC matches. A bad CRC
/// drops one byte, so a stream resynchronises on the next good frame.
pub fn decode_rtu_response(buf: &[u8]) -> Decoded {
    let Some((&unit, pdu)) = buf.split_first() else {
        return Decoded::Incomplete;
    };
    match response_pdu_length(pdu) {
        PduLength::Exact(0) => skip_one(FrameError::EmptyPdu),
        PduLength::Exact(len) => exact(buf, unit, len),
        PduLength::NeedMore => Decoded::Incomplete,
        PduLength::Unknown => scan(buf, unit),
    }
}

/// Drops the first byte.
fn skip_one(error: FrameError) -> Decoded {
    Decoded::Skip { consumed: 1, error }
}

/// A frame of `pdu_len` PDU bytes, if its CRC matches.
fn exact(buf: &[u8], unit: u8, pdu_len: usize) -> Decoded {
    let total = pdu_len + OVERHEAD;
    if total > MAX_RTU_ADU {
        return skip_one(FrameError::TooLong(total));
    }
    let Some(frame) = buf.get(..total) else {
        return Decoded::Incomplete;
    };
    let (body, tail) = frame.split_at(total - 2);
    let expected = u16::from_le_bytes([tail[0], tail[1]]);
    let computed = crc16(body);
    if expected == computed {
        Decoded::Frame {
            consumed: total,
            unit,
            transaction_id: 0,
            pdu: 1..total - 2,
        }
    } else {
        skip_one(FrameError::BadCrc { expected, computed })
    }
}

/// The shortest prefix of 4..=256 bytes with a matching CRC.
fn scan(buf: &[u8], unit: u8) -> Decoded {
    let window = buf.get(..MAX_RTU_ADU).unwrap_or(buf);
    for end in 4..=window.len() {
        if window.get(..end).is_some_and(crc_ok) {
            return Decoded::Frame {
                consumed: end,
                unit,
                transaction_id: 0,
                pdu: 1..end - 2,
            };
        }
    }
    if window.len() >= MAX_RTU_ADU {
        skip_one(FrameError::TooLong(MAX_RTU_ADU))
    } else {
        Decoded::Incomplete
    }
}

/// True if the last two bytes of `frame` are the CRC of the rest.
fn crc_ok(frame: &[u8]) -> bool {
    match frame.len().checked_sub(2).and_then(|n| frame.split_at_checked(n)) {
        Some((body, &[lo, hi])) => crc16(body) == u16::from_le_bytes([lo, hi]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::rtu;

    fn framed(unit: u8, pdu: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        rtu::encode(unit, pdu, &mut v);
        v
    }

    #[test]
    fn lengths_of_answers() {
        assert_eq!(response_pdu_length(&[0x03, 4]), PduLength::Exact(6));
        assert_eq!(response_pdu_length(&[0x83]), PduLength::Exact(2));
        assert_eq!(response_pdu_length(&[0x10]), PduLength::Exact(5));
        assert_eq!(response_pdu_length(&[0x18, 0]), PduLength::NeedMore);
        assert_eq!(response_pdu_length(&[0x18, 0, 4]), PduLength::Exact(7));
        assert_eq!(response_pdu_length(&[0x2B]), PduLength::Unknown);
        assert!(response_length_ok(&[0x06, 0, 1, 0, 2]));
        assert!(!response_length_ok(&[0x03, 4, 0, 1]));
    }

    #[test]
    fn rtu_answer_split_anywhere_and_bad_crc_skipped() {
        let frame = framed(7, &[0x03, 2, 0x12, 0x34]);
        for cut in 0..frame.len() {
            assert_eq!(decode_rtu_response(&frame[..cut]), Decoded::Incomplete, "cut {cut}");
        }
        assert!(matches!(
            decode_rtu_response(&frame),
            Decoded::Frame {
                unit: 7,
                consumed: 7,
                ..
            }
        ));
        let mut bad = frame.clone();
        bad[6] ^= 1;
        assert!(matches!(
            decode_rtu_response(&bad),
            Decoded::Skip {
                consumed: 1,
                error: FrameError::BadCrc { .. }
            }
        ));
    }

    #[test]
    fn unknown_code_found_by_crc() {
        let frame = framed(1, &[0x2B, 0x0E, 1, 1, 0, 0, 0]);
        match decode_rtu_response(&frame) {
            Decoded::Frame { consumed, pdu, .. } => {
                assert_eq!(consumed, frame.len());
                assert_eq!(pdu, 1..frame.len() - 2);
            }
            other => panic!("{other:?}"),
        }
    }
}
