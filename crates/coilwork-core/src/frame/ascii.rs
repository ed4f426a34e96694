//! ASCII framing: ':' then hex pairs of address, PDU and LRC, ended by CR and
//! a delimiter (LF by default, changeable by diagnostics sub-function 0x03).

use super::checksum::lrc;
use super::{Decoded, MAX_ASCII_ADU, MAX_COUNTED_ASCII_ADU, byte_counted};
use crate::error::FrameError;

/// Default end-of-message delimiter after CR.
pub const DEFAULT_DELIMITER: u8 = b'\n';

/// Character that starts every frame.
const START: u8 = b':';

/// Character before the delimiter that ends every frame.
const CR: u8 = b'\r';

/// Upper-case hex digits for encoding.
const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Looks at the front of `buf` for one ASCII frame ending in CR `delimiter`.
/// The binary address + PDU + LRC is written into `scratch` (at least
/// [`MAX_COUNTED_RTU_ADU`](super::MAX_COUNTED_RTU_ADU) bytes);
/// in a returned [`Decoded::Frame`] the `pdu` range indexes `scratch`.
///
/// - bytes before the first ':' are skipped as [`FrameError::Garbage`];
/// - a ':' before the end restarts the frame: the bytes before it are
///   skipped as [`FrameError::Truncated`];
/// - no CR `delimiter` within [`MAX_ASCII_ADU`] characters skips those
///   characters as [`FrameError::TooLong`]; fewer buffered: wait. A
///   byte-counted request (FC15/16/20/21/23) may take up to
///   [`MAX_COUNTED_ASCII_ADU`] characters, so that one past the spec's PDU
///   limit is read whole and answered with exception 03;
/// - a whole frame with a non-hex character or an odd number of hex digits
///   is skipped as [`FrameError::BadHex`], one whose LRC does not match as
///   [`FrameError::BadLrc`], one without a function code as
///   [`FrameError::EmptyPdu`].
///
/// Hex digits may be upper or lower case. A CR not followed by the
/// delimiter is just a (non-hex) character inside the frame.
pub fn decode(buf: &[u8], delimiter: u8, scratch: &mut [u8]) -> Decoded {
    match buf.iter().position(|&b| b == START) {
        Some(0) => {}
        Some(garbage) => return skip(garbage, FrameError::Garbage(garbage)),
        None if buf.is_empty() => return Decoded::Incomplete,
        None => return skip(buf.len(), FrameError::Garbage(buf.len())),
    }
    let limit = max_adu(buf);
    let window = buf.get(..limit).unwrap_or(buf);
    let mut end = None;
    for (i, &c) in window.iter().enumerate().skip(1) {
        if c == CR && window.get(i + 1) == Some(&delimiter) {
            end = Some(i);
            break;
        }
        if c == START {
            return skip(i, FrameError::Truncated(i));
        }
    }
    let Some(cr) = end else {
        return if window.len() >= limit {
            skip(limit, FrameError::TooLong(limit))
        } else {
            Decoded::Incomplete
        };
    };
    let consumed = cr + 2; // ok: cr + 1 < window.len() <= 537
    let hex = buf.get(1..cr).unwrap_or(&[]);
    if hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return skip(consumed, FrameError::BadHex);
    }
    let Some(binary) = decode_hex(hex, scratch) else {
        // Only with a scratch smaller than documented.
        return skip(consumed, FrameError::TooLong(consumed));
    };
    let binary: &[u8] = binary;
    let Some((&expected, body)) = binary.split_last() else {
        return skip(consumed, FrameError::EmptyPdu);
    };
    let computed = lrc(body);
    if expected != computed {
        return skip(consumed, FrameError::BadLrc { expected, computed });
    }
    match body.split_first() {
        Some((&unit, pdu)) if !pdu.is_empty() => Decoded::Frame {
            consumed,
            unit,
            transaction_id: 0,
            pdu: 1..body.len(),
        },
        _ => skip(consumed, FrameError::EmptyPdu),
    }
}

/// Longest frame, in characters, that may start `buf`: [`MAX_ASCII_ADU`],
/// or [`MAX_COUNTED_ASCII_ADU`] for a byte-counted request (FC15/16/20/21/23)
/// so that one past the spec's PDU limit is read whole and answered with
/// exception 03.
#[inline]
fn max_adu(buf: &[u8]) -> usize {
    let function = match buf.get(3..5) {
        Some(&[hi, lo]) => hex_value(hi).zip(hex_value(lo)).map(|(h, l)| (h << 4) | l),
        _ => None,
    };
    match function.and_then(byte_counted) {
        Some(_) => MAX_COUNTED_ASCII_ADU,
        None => MAX_ASCII_ADU,
    }
}

/// Drops `consumed` bytes from the front.
fn skip(consumed: usize, error: FrameError) -> Decoded {
    Decoded::Skip { consumed, error }
}

/// Value of one hex digit, either case.
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Decodes hex pairs into the front of `out` and returns that part, or
/// `None` for an odd count, a non-hex character or an `out` too small.
fn decode_hex<'o>(hex: &[u8], out: &'o mut [u8]) -> Option<&'o mut [u8]> {
    let pairs = hex.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let out = out.get_mut(..pairs.len())?;
    for (pair, byte) in pairs.zip(out.iter_mut()) {
        let (&hi, &lo) = (pair.first()?, pair.get(1)?);
        *byte = (hex_value(hi)? << 4) | hex_value(lo)?;
    }
    Some(out)
}

/// Appends the two upper-case hex digits of `byte`.
fn push_hex(out: &mut Vec<u8>, byte: u8) {
    // ok: both indexes are < 16, the table length.
    out.extend_from_slice(&[HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0x0F)]]);
}

/// Appends the ADU for `pdu` to `out`, ended by CR `delimiter`.
pub fn encode(unit: u8, pdu: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    // ':' + hex of address, PDU and LRC + CR + delimiter.
    out.reserve(pdu.len().saturating_add(2).saturating_mul(2).saturating_add(3));
    out.push(START);
    push_hex(out, unit);
    for &b in pdu {
        push_hex(out, b);
    }
    push_hex(out, lrc(&[unit]).wrapping_add(lrc(pdu)));
    out.extend_from_slice(&[CR, delimiter]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Modicon guide: unit 17 reads 3 holding registers from 40108.
    const MODICON: &[u8] = b":1103006B00037E\r\n";

    fn dec(buf: &[u8]) -> (Decoded, [u8; crate::frame::MAX_COUNTED_RTU_ADU]) {
        let mut scratch = [0u8; crate::frame::MAX_COUNTED_RTU_ADU];
        let d = decode(buf, DEFAULT_DELIMITER, &mut scratch);
        (d, scratch)
    }

    fn ascii(unit: u8, pdu: &[u8], delimiter: u8) -> Vec<u8> {
        let mut out = Vec::new();
        encode(unit, pdu, delimiter, &mut out);
        out
    }

    #[test]
    fn decodes_spec_frame() {
        let (d, scratch) = dec(MODICON);
        assert_eq!(
            d,
            Decoded::Frame {
                consumed: 17,
                unit: 0x11,
                transaction_id: 0,
                pdu: 1..6
            }
        );
        assert_eq!(&scratch[..7], &[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x7E]);
    }

    #[test]
    fn lower_case_hex_is_accepted() {
        let (d, scratch) = dec(b":1103006b00037e\r\n");
        assert_eq!(
            d,
            Decoded::Frame {
                consumed: 17,
                unit: 0x11,
                transaction_id: 0,
                pdu: 1..6
            }
        );
        assert_eq!(&scratch[1..6], &[0x03, 0x00, 0x6B, 0x00, 0x03]);
    }

    #[test]
    fn encodes_spec_frame_upper_case() {
        let mut out = b"x".to_vec();
        encode(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03], b'\n', &mut out);
        assert_eq!(&out[..], &[&b"x"[..], MODICON].concat()[..], "encode appends");
        assert_eq!(
            ascii(0x01, &[0x03, 0x00, 0x00, 0x00, 0x01], b'\n'),
            b":010300000001FB\r\n"
        );
        assert_eq!(ascii(0xAB, &[0xCD], b'!'), b":ABCD88\r!");
    }

    #[test]
    fn incomplete_until_whole_frame() {
        for n in 0..MODICON.len() {
            assert_eq!(dec(&MODICON[..n]).0, Decoded::Incomplete, "{n} bytes");
        }
    }

    #[test]
    fn trailing_bytes_are_left() {
        let mut buf = MODICON.to_vec();
        buf.extend_from_slice(b":01");
        assert!(matches!(dec(&buf).0, Decoded::Frame { consumed: 17, .. }));
    }

    #[test]
    fn garbage_before_start_is_skipped() {
        let mut buf = b"\x00\xFFab\r\n".to_vec();
        buf.extend_from_slice(MODICON);
        assert_eq!(
            dec(&buf).0,
            Decoded::Skip {
                consumed: 6,
                error: FrameError::Garbage(6)
            }
        );
        assert_eq!(
            dec(b"no start here").0,
            Decoded::Skip {
                consumed: 13,
                error: FrameError::Garbage(13)
            }
        );
    }

    #[test]
    fn colon_inside_frame_restarts() {
        let mut buf = b":1103".to_vec();
        buf.extend_from_slice(MODICON);
        assert_eq!(
            dec(&buf).0,
            Decoded::Skip {
                consumed: 5,
                error: FrameError::Truncated(5)
            }
        );
        // Even before the rest has arrived.
        assert_eq!(
            dec(b":11:").0,
            Decoded::Skip {
                consumed: 3,
                error: FrameError::Truncated(3)
            }
        );
    }

    #[test]
    fn bad_hex() {
        for frame in [
            &b":1103006B00037\r\n"[..],
            b":1103006G00037E\r\n",
            b":1103 06B00037E\r\n",
            b":1103006B00037E\r\r\n",
            b":1\r\n",
        ] {
            assert_eq!(
                dec(frame).0,
                Decoded::Skip {
                    consumed: frame.len(),
                    error: FrameError::BadHex
                },
                "{}",
                frame.escape_ascii()
            );
        }
    }

    #[test]
    fn cr_without_delimiter_is_not_the_end() {
        let frame = b":11\rX03006B00037E\r\n";
        assert_eq!(dec(&frame[..5]).0, Decoded::Incomplete);
        assert_eq!(
            dec(frame).0,
            Decoded::Skip {
                consumed: frame.len(),
                error: FrameError::BadHex
            }
        );
    }

    #[test]
    fn bad_lrc() {
        assert_eq!(
            dec(b":1103006B00037F\r\n").0,
            Decoded::Skip {
                consumed: 17,
                error: FrameError::BadLrc {
                    expected: 0x7F,
                    computed: 0x7E
                },
            }
        );
        assert_eq!(
            dec(b":0100\r\n").0,
            Decoded::Skip {
                consumed: 7,
                error: FrameError::BadLrc {
                    expected: 0x00,
                    computed: 0xFF
                }
            }
        );
    }

    #[test]
    fn empty_pdu() {
        for frame in [&b":\r\n"[..], b":00\r\n", b":01FF\r\n"] {
            assert_eq!(
                dec(frame).0,
                Decoded::Skip {
                    consumed: frame.len(),
                    error: FrameError::EmptyPdu
                },
                "{}",
                frame.escape_ascii()
            );
        }
    }

    #[test]
    fn too_long() {
        let mut buf = vec![b':'];
        buf.resize(MAX_ASCII_ADU - 1, b'A');
        assert_eq!(dec(&buf).0, Decoded::Incomplete);
        buf.push(CR);
        assert_eq!(
            dec(&buf).0,
            Decoded::Skip {
                consumed: MAX_ASCII_ADU,
                error: FrameError::TooLong(MAX_ASCII_ADU)
            },
            "the delimiter would be char 514"
        );
        buf.extend_from_slice(b"\n:");
        assert_eq!(
            dec(&buf).0,
            Decoded::Skip {
                consumed: MAX_ASCII_ADU,
                error: FrameError::TooLong(MAX_ASCII_ADU)
            }
        );
    }

    #[test]
    fn largest_frame() {
        let pdu = [0x10u8; 253];
        let frame = ascii(0xF7, &pdu, b'\n');
        assert_eq!(frame.len(), MAX_ASCII_ADU);
        let (d, scratch) = dec(&frame);
        assert_eq!(
            d,
            Decoded::Frame {
                consumed: MAX_ASCII_ADU,
                unit: 0xF7,
                transaction_id: 0,
                pdu: 1..254
            }
        );
        assert_eq!(&scratch[1..254], &pdu[..]);
    }

    #[test]
    fn byte_counted_request_past_the_pdu_limit_is_framed_whole() {
        // FC23 with byte count 255: the longest byte-counted request.
        let pdu = [&[0x17, 0, 0, 0, 1, 0, 0, 0, 122, 255][..], &[0x5A; 255]].concat();
        let frame = ascii(0x01, &pdu, b'\n');
        assert_eq!(frame.len(), MAX_COUNTED_ASCII_ADU);
        assert_eq!(dec(&frame[..frame.len() - 1]).0, Decoded::Incomplete);
        let (d, scratch) = dec(&frame);
        assert_eq!(
            d,
            Decoded::Frame {
                consumed: MAX_COUNTED_ASCII_ADU,
                unit: 1,
                transaction_id: 0,
                pdu: 1..266
            }
        );
        assert_eq!(&scratch[1..266], &pdu[..]);
        // Any other function code is still cut at 513 characters.
        let mut other = frame.clone();
        other[3..5].copy_from_slice(b"41");
        assert_eq!(
            dec(&other).0,
            Decoded::Skip {
                consumed: MAX_ASCII_ADU,
                error: FrameError::TooLong(MAX_ASCII_ADU)
            }
        );
    }

    #[test]
    fn small_scratch_skips() {
        let mut scratch = [0u8; 4];
        assert_eq!(
            decode(MODICON, b'\n', &mut scratch),
            Decoded::Skip {
                consumed: 17,
                error: FrameError::TooLong(17)
            }
        );
    }

    #[test]
    fn other_delimiters() {
        let mut scratch = [0u8; crate::frame::MAX_COUNTED_RTU_ADU];
        let frame = b":1103006B00037E\r!";
        assert_eq!(
            decode(frame, b'!', &mut scratch),
            Decoded::Frame {
                consumed: 17,
                unit: 0x11,
                transaction_id: 0,
                pdu: 1..6
            }
        );
        // With delimiter '!' the default CR LF is not an end.
        assert_eq!(decode(MODICON, b'!', &mut scratch), Decoded::Incomplete);
        // CR as delimiter: the frame ends in CR CR.
        assert_eq!(
            decode(b":1103006B00037E\r\r", b'\r', &mut scratch),
            Decoded::Frame {
                consumed: 17,
                unit: 0x11,
                transaction_id: 0,
                pdu: 1..6
            }
        );
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Frame {
        at: usize,
        unit: u8,
        pdu: Vec<u8>,
    }

    /// What the Connection does on a stream: append each chunk, decode the
    /// front repeatedly, drop what was used. Returns the frames with their
    /// stream offsets and what is left buffered. Checks every answer.
    fn feed<'a>(delimiter: u8, chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Frame>, Vec<u8>) {
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        let mut scratch = [0u8; crate::frame::MAX_COUNTED_RTU_ADU];
        let mut at = 0;
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while !buf.is_empty() {
                match decode(&buf, delimiter, &mut scratch) {
                    Decoded::Frame {
                        consumed,
                        unit,
                        transaction_id,
                        pdu,
                    } => {
                        assert_eq!(transaction_id, 0);
                        assert!(consumed <= buf.len().min(MAX_COUNTED_ASCII_ADU));
                        assert_eq!(pdu.start, 1);
                        assert!(pdu.end > 1);
                        let pdu = scratch[pdu].to_vec();
                        // Re-encoding gives the frame back (modulo hex case).
                        assert_eq!(ascii(unit, &pdu, delimiter), buf[..consumed].to_ascii_uppercase());
                        frames.push(Frame { at, unit, pdu });
                        buf.drain(..consumed);
                        at += consumed;
                    }
                    Decoded::Skip { consumed, .. } => {
                        assert!(consumed > 0 && consumed <= buf.len());
                        buf.drain(..consumed);
                        at += consumed;
                    }
                    Decoded::Incomplete => {
                        assert_eq!(buf[0], START);
                        assert!(buf.len() < MAX_COUNTED_ASCII_ADU);
                        break;
                    }
                    Decoded::Fatal(e) => panic!("ASCII is never fatal: {e}"),
                }
            }
        }
        (frames, buf)
    }

    fn split_at_points(stream: &[u8], points: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = points.iter().map(|p| p.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        cuts.windows(2).map(|w| stream[w[0]..w[1]].to_vec()).collect()
    }

    /// Bytes that look like ASCII frames more often than uniform random ones.
    fn ascii_noise(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"0123456789ABCDEFabcdef".to_vec()),
                1 => Just(b':'),
                1 => Just(b'\r'),
                1 => Just(b'\n'),
                1 => any::<u8>(),
            ],
            0..max,
        )
    }

    /// A unit and a PDU of 1..=253 bytes, or one of a byte-counted function
    /// (FC15/16/20/21/23) past the PDU limit, up to 265 bytes.
    fn frame_strategy() -> impl Strategy<Value = (u8, Vec<u8>)> {
        let counted = (
            prop::sample::select(vec![0x0Fu8, 0x10, 0x14, 0x15, 0x17]),
            proptest::collection::vec(any::<u8>(), 253..=264),
        )
            .prop_map(|(fc, rest)| [vec![fc], rest].concat());
        let pdu = prop_oneof![4 => proptest::collection::vec(any::<u8>(), 1..=253), 1 => counted];
        (any::<u8>(), pdu)
    }

    proptest! {
        #[test]
        fn round_trip((unit, pdu) in frame_strategy(), delimiter in any::<u8>()) {
            let frame = ascii(unit, &pdu, delimiter);
            prop_assert_eq!(frame.len(), 2 * pdu.len() + 7);
            let mut scratch = [0u8; crate::frame::MAX_COUNTED_RTU_ADU];
            prop_assert_eq!(
                decode(&frame, delimiter, &mut scratch),
                Decoded::Frame { consumed: frame.len(), unit, transaction_id: 0, pdu: 1..pdu.len() + 1 }
            );
            prop_assert_eq!(&scratch[1..pdu.len() + 1], &pdu[..]);
            // Lower-case hex decodes the same.
            let lower = frame.to_ascii_lowercase();
            let lower = [&lower[..lower.len() - 2], &frame[frame.len() - 2..]].concat();
            let lower_decoded = decode(&lower, delimiter, &mut scratch);
            prop_assert!(matches!(lower_decoded, Decoded::Frame { .. }), "{:?}", lower_decoded);
        }

        #[test]
        fn split_invariance(
            frames in proptest::collection::vec(frame_strategy(), 1..5),
            garbage in ascii_noise(40),
            garbage_at in any::<prop::sample::Index>(),
            delimiter in prop::sample::select(vec![b'\n', b'\r', b'!', b'0', b':']),
            points in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let garbage_at = garbage_at.index(frames.len() + 1);
            let mut stream = Vec::new();
            for (i, (unit, pdu)) in frames.iter().enumerate() {
                if i == garbage_at {
                    stream.extend_from_slice(&garbage);
                }
                encode(*unit, pdu, delimiter, &mut stream);
            }
            if garbage_at == frames.len() {
                stream.extend_from_slice(&garbage);
            }
            let whole = feed(delimiter, [&stream[..]]);
            let chunks = split_at_points(&stream, &points);
            prop_assert_eq!(&whole, &feed(delimiter, chunks.iter().map(Vec::as_slice)));
            prop_assert_eq!(&whole, &feed(delimiter, stream.chunks(1)));
            let mut at = 0;
            for (frame, (unit, pdu)) in whole.0.iter().zip(&frames[..garbage_at]) {
                prop_assert_eq!(frame, &Frame { at, unit: *unit, pdu: pdu.clone() });
                at += 2 * pdu.len() + 7;
            }
            if garbage.is_empty() {
                prop_assert_eq!(whole.0.len(), frames.len());
                prop_assert!(whole.1.is_empty());
            }
        }

        /// Whatever garbage comes first, the good frame after it is found:
        /// its ':' either ends a garbage skip or restarts a frame begun in
        /// the garbage. (Not with ':' as the delimiter: garbage ending in
        /// ":\r" would take the frame's ':' as its end.)
        #[test]
        fn good_frame_after_garbage_is_found(
            garbage in ascii_noise(600),
            (unit, pdu) in frame_strategy(),
            delimiter in prop::sample::select(vec![b'\n', b'\r', b'!', b'0']),
            points in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut stream = garbage.clone();
            encode(unit, &pdu, delimiter, &mut stream);
            let chunks = split_at_points(&stream, &points);
            let (frames, rest) = feed(delimiter, chunks.iter().map(Vec::as_slice));
            prop_assert_eq!(frames.last(), Some(&Frame { at: garbage.len(), unit, pdu }));
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn random_bytes_never_panic(
            noise in ascii_noise(800),
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            // `feed` checks every answer's invariants.
            let _ = feed(b'\n', [&noise[..]]);
            let _ = feed(b'\n', noise.chunks(7));
            let _ = feed(b'\r', [&bytes[..]]);
        }
    }
}
