//! MBAP framing: transaction id, protocol id 0, length, unit id, PDU.

use super::{Decoded, MAX_COUNTED_PDU, byte_counted};
use crate::error::FrameError;

/// Size of the MBAP header (transaction id, protocol id, length, unit id).
pub const HEADER_LEN: usize = 7;

/// Bytes before the length field's count starts (transaction id, protocol id, length).
const PREFIX_LEN: usize = 6;

/// Smallest valid length field: unit id + function code.
const MIN_LENGTH: u16 = 2;

/// Largest valid length field: unit id + a 253-byte PDU.
const MAX_LENGTH: u16 = 254;

/// Largest length field of a byte-counted request: unit id + [`MAX_COUNTED_PDU`].
const MAX_COUNTED_LENGTH: u16 = 1 + MAX_COUNTED_PDU as u16;

/// Looks at the front of `buf` for one MBAP frame.
///
/// A protocol id other than 0 or a length field outside 2..=266 is reported
/// as [`Decoded::Fatal`] as soon as the first 6 bytes are buffered: a stream
/// that carries one can never be resynchronised. A length of 255..=266 is
/// taken only for a byte-counted request (FC15/16/20/21/23) whose byte
/// count agrees with it, so that a request with too large a quantity is
/// read whole and answered with exception 03; any other is fatal once its
/// function code and byte count are buffered.
pub fn decode(buf: &[u8]) -> Decoded {
    let Some(&[t0, t1, p0, p1, l0, l1]) = buf.first_chunk::<PREFIX_LEN>() else {
        return Decoded::Incomplete;
    };
    let protocol = u16::from_be_bytes([p0, p1]);
    if protocol != 0 {
        return Decoded::Fatal(FrameError::BadProtocolId(protocol));
    }
    let length = u16::from_be_bytes([l0, l1]);
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        match oversized(buf, length) {
            Some(true) => {}
            Some(false) => return Decoded::Fatal(FrameError::BadLength(length)),
            None => return Decoded::Incomplete,
        }
    }
    let total = PREFIX_LEN + usize::from(length); // ok: at most 6 + 266
    let Some(&unit) = buf.get(PREFIX_LEN) else {
        return Decoded::Incomplete;
    };
    if buf.len() < total {
        return Decoded::Incomplete;
    }
    Decoded::Frame {
        consumed: total,
        unit,
        transaction_id: u16::from_be_bytes([t0, t1]),
        pdu: HEADER_LEN..total,
    }
}

/// Whether a length field outside 2..=254 frames a byte-counted request:
/// `Some(true)` if the function code is byte-counted and its byte count
/// makes the PDU exactly `length - 1` bytes, `None` until both are
/// buffered, `Some(false)` otherwise.
#[cold]
#[inline(never)]
fn oversized(buf: &[u8], length: u16) -> Option<bool> {
    if !(MAX_LENGTH + 1..=MAX_COUNTED_LENGTH).contains(&length) {
        return Some(false);
    }
    let Some((base, at)) = byte_counted(*buf.get(HEADER_LEN)?) else {
        return Some(false);
    };
    let count = *buf.get(HEADER_LEN + at)?;
    Some(base + usize::from(count) + 1 == usize::from(length))
}

/// Appends the ADU for `pdu` to `out`.
///
/// `pdu` must be at most [`MAX_PDU`](super::MAX_PDU) bytes; a longer one
/// would not fit the length field and gets a saturated (invalid) length.
pub fn encode(transaction_id: u16, unit: u8, pdu: &[u8], out: &mut Vec<u8>) {
    let length = u16::try_from(pdu.len().saturating_add(1)).unwrap_or(u16::MAX);
    let [t0, t1] = transaction_id.to_be_bytes();
    let [l0, l1] = length.to_be_bytes();
    out.reserve(HEADER_LEN.saturating_add(pdu.len()));
    out.extend_from_slice(&[t0, t1, 0, 0, l0, l1, unit]);
    out.extend_from_slice(pdu);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{MAX_COUNTED_MBAP_ADU, MAX_MBAP_ADU};
    use proptest::prelude::*;

    /// A request from the spec's FC3 example (read 3 registers from 107)
    /// in an MBAP header with transaction 0x1501, unit 0x11.
    const READ_HOLDING: [u8; 12] = [0x15, 0x01, 0x00, 0x00, 0x00, 0x06, 0x11, 0x03, 0x00, 0x6B, 0x00, 0x03];

    #[test]
    fn decodes_spec_request() {
        assert_eq!(
            decode(&READ_HOLDING),
            Decoded::Frame {
                consumed: 12,
                unit: 0x11,
                transaction_id: 0x1501,
                pdu: 7..12,
            }
        );
    }

    #[test]
    fn encode_spec_request() {
        let mut out = vec![0xAA];
        encode(0x1501, 0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03], &mut out);
        assert_eq!(out.first(), Some(&0xAA), "encode appends");
        assert_eq!(&out[1..], &READ_HOLDING);
    }

    #[test]
    fn incomplete_until_whole_frame() {
        for n in 0..READ_HOLDING.len() {
            assert_eq!(decode(&READ_HOLDING[..n]), Decoded::Incomplete, "{n} bytes");
        }
    }

    #[test]
    fn trailing_bytes_are_left() {
        let mut buf = READ_HOLDING.to_vec();
        buf.extend_from_slice(&[0x00, 0x01, 0x00]);
        assert!(matches!(decode(&buf), Decoded::Frame { consumed: 12, .. }));
    }

    #[test]
    fn bad_protocol_id_as_soon_as_header_is_there() {
        let buf = [0x00, 0x01, 0x12, 0x34, 0x00, 0x06];
        assert_eq!(decode(&buf[..5]), Decoded::Incomplete);
        assert_eq!(decode(&buf), Decoded::Fatal(FrameError::BadProtocolId(0x1234)));
    }

    #[test]
    fn bad_length_as_soon_as_header_is_there() {
        for (length, bad) in [
            (0u16, true),
            (1, true),
            (2, false),
            (254, false),
            (255, false),
            (266, false),
            (267, true),
            (0xFFFF, true),
        ] {
            let [l0, l1] = length.to_be_bytes();
            let buf = [0x00, 0x01, 0x00, 0x00, l0, l1];
            let want = if bad {
                Decoded::Fatal(FrameError::BadLength(length))
            } else {
                Decoded::Incomplete
            };
            assert_eq!(decode(&buf), want, "length {length}");
        }
    }

    #[test]
    fn smallest_and_largest_frames() {
        let small = [0x00, 0x07, 0x00, 0x00, 0x00, 0x02, 0x01, 0x07];
        assert_eq!(
            decode(&small),
            Decoded::Frame {
                consumed: 8,
                unit: 1,
                transaction_id: 7,
                pdu: 7..8
            }
        );
        let mut big = vec![0xFF, 0xFF, 0x00, 0x00, 0x00, 0xFE, 0xF7];
        big.extend(std::iter::repeat_n(0x10, 253));
        assert_eq!(big.len(), MAX_MBAP_ADU);
        assert_eq!(
            decode(&big),
            Decoded::Frame {
                consumed: 260,
                unit: 0xF7,
                transaction_id: 0xFFFF,
                pdu: 7..260
            }
        );
    }

    /// An MBAP ADU of `pdu` with its length field computed.
    fn adu(pdu: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(0x0102, 1, pdu, &mut out);
        out
    }

    #[test]
    fn byte_counted_request_past_the_pdu_limit_is_framed_whole() {
        // FC16 writing 124 registers: length 255; FC23 writing 122: 255;
        // FC16 with byte count 255: 262; FC23 with byte count 255: 266.
        let fc16 = |count: u8| [&[0x10, 0, 0, 0, 124, count][..], &vec![0xA5; count.into()]].concat();
        let fc23 = |count: u8| [&[0x17, 0, 0, 0, 1, 0, 0, 0, 122, count][..], &vec![0x5A; count.into()]].concat();
        for pdu in [fc16(248), fc16(255), fc23(244), fc23(255)] {
            let buf = adu(&pdu);
            assert!(buf.len() > MAX_MBAP_ADU && buf.len() <= MAX_COUNTED_MBAP_ADU);
            for n in 0..buf.len() {
                assert_eq!(decode(&buf[..n]), Decoded::Incomplete, "{} of {}", n, buf.len());
            }
            let total = buf.len();
            assert_eq!(
                decode(&buf),
                Decoded::Frame {
                    consumed: total,
                    unit: 1,
                    transaction_id: 0x0102,
                    pdu: 7..total
                }
            );
        }
    }

    #[test]
    fn oversized_length_that_is_not_a_byte_counted_request_is_fatal() {
        let fatal = |buf: &[u8]| {
            let length = u16::from_be_bytes([buf[4], buf[5]]);
            assert_eq!(decode(buf), Decoded::Fatal(FrameError::BadLength(length)), "{buf:02X?}");
        };
        // FC3 and a custom code with length 255: fatal once the function code is in.
        for pdu in [vec![0x03; 254], vec![0x41; 254]] {
            let buf = adu(&pdu);
            assert_eq!(decode(&buf[..7]), Decoded::Incomplete);
            fatal(&buf[..8]);
        }
        // FC16 whose byte count disagrees with the length: fatal once the count is in.
        let mut buf = adu(&[&[0x10, 0, 0, 0, 124, 247][..], &[0; 248]].concat());
        assert_eq!(decode(&buf[..12]), Decoded::Incomplete);
        fatal(&buf[..13]);
        // Length 267 (one past FC23 with byte count 255): fatal at once.
        buf[4..6].copy_from_slice(&267u16.to_be_bytes());
        fatal(&buf[..6]);
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Frame {
            unit: u8,
            transaction_id: u16,
            pdu: Vec<u8>,
        },
        Skip {
            consumed: usize,
            error: FrameError,
        },
        Fatal(FrameError),
    }

    /// What the Connection does: append each chunk, decode the front
    /// repeatedly, drop what was used. Returns the events and what is left.
    fn feed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Event>, Vec<u8>) {
        let mut buf = Vec::new();
        let mut events = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while !buf.is_empty() {
                match decode(&buf) {
                    Decoded::Frame {
                        consumed,
                        unit,
                        transaction_id,
                        pdu,
                    } => {
                        assert!(consumed > 0 && consumed <= buf.len());
                        assert!(pdu.start < pdu.end && pdu.end <= consumed);
                        events.push(Event::Frame {
                            unit,
                            transaction_id,
                            pdu: buf[pdu].to_vec(),
                        });
                        buf.drain(..consumed);
                    }
                    Decoded::Skip { consumed, error } => {
                        assert!(consumed > 0 && consumed <= buf.len());
                        events.push(Event::Skip { consumed, error });
                        buf.drain(..consumed);
                    }
                    Decoded::Incomplete => break,
                    Decoded::Fatal(e) => {
                        // The connection closes: what is left does not matter.
                        events.push(Event::Fatal(e));
                        return (events, Vec::new());
                    }
                }
            }
        }
        (events, buf)
    }

    fn split_at_points(stream: &[u8], points: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = points.iter().map(|p| p.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        cuts.windows(2).map(|w| stream[w[0]..w[1]].to_vec()).collect()
    }

    /// A PDU of 1..=253 bytes, or a byte-counted request past 253 bytes
    /// (FC15/16/20/21/23 with a count that agrees with its length).
    fn pdu_strategy() -> impl Strategy<Value = Vec<u8>> {
        let counted = |fc: u8, head: usize, counts: core::ops::RangeInclusive<usize>| {
            (proptest::collection::vec(any::<u8>(), head), counts).prop_flat_map(move |(head, n)| {
                proptest::collection::vec(any::<u8>(), n)
                    .prop_map(move |d| [vec![fc], head.clone(), vec![n as u8], d].concat())
            })
        };
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 1..=253),
            1 => counted(0x10, 4, 248..=255),
            1 => counted(0x0F, 4, 248..=255),
            1 => counted(0x17, 8, 244..=255),
            1 => counted(0x15, 0, 252..=255),
        ]
    }

    fn frame_strategy() -> impl Strategy<Value = (u16, u8, Vec<u8>)> {
        (any::<u16>(), any::<u8>(), pdu_strategy())
    }

    proptest! {
        #[test]
        fn round_trip((tid, unit, pdu) in frame_strategy()) {
            let mut out = Vec::new();
            encode(tid, unit, &pdu, &mut out);
            prop_assert_eq!(out.len(), HEADER_LEN + pdu.len());
            prop_assert_eq!(
                decode(&out),
                Decoded::Frame { consumed: out.len(), unit, transaction_id: tid, pdu: 7..out.len() }
            );
            prop_assert_eq!(&out[7..], &pdu[..]);
        }

        #[test]
        fn split_invariance(
            frames in proptest::collection::vec(frame_strategy(), 1..6),
            garbage in proptest::collection::vec(any::<u8>(), 0..20),
            garbage_at in any::<prop::sample::Index>(),
            points in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut stream = Vec::new();
            let garbage_at = garbage_at.index(frames.len() + 1);
            for (i, (tid, unit, pdu)) in frames.iter().enumerate() {
                if i == garbage_at {
                    stream.extend_from_slice(&garbage);
                }
                encode(*tid, *unit, pdu, &mut stream);
            }
            if garbage_at == frames.len() {
                stream.extend_from_slice(&garbage);
            }
            let whole = feed([&stream[..]]);
            let chunks = split_at_points(&stream, &points);
            let split = feed(chunks.iter().map(Vec::as_slice));
            let bytewise = feed(stream.chunks(1));
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(&whole, &bytewise);
            // Every frame before the garbage comes out unchanged.
            for (event, (tid, unit, pdu)) in whole.0.iter().zip(&frames[..garbage_at]) {
                prop_assert_eq!(
                    event,
                    &Event::Frame { unit: *unit, transaction_id: *tid, pdu: pdu.clone() }
                );
            }
            if garbage.is_empty() {
                prop_assert_eq!(whole.0.len(), frames.len());
                prop_assert!(whole.1.is_empty());
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            match decode(&bytes) {
                Decoded::Frame { consumed, pdu, .. } => {
                    prop_assert!(consumed <= bytes.len() && pdu.end == consumed && pdu.start == 7);
                }
                Decoded::Skip { .. } => prop_assert!(false, "MBAP never skips"),
                Decoded::Incomplete => prop_assert!(bytes.len() < MAX_COUNTED_MBAP_ADU),
                Decoded::Fatal(e) => prop_assert!(e.is_fatal()),
            }
        }
    }
}
