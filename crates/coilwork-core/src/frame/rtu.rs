//! RTU framing: address, PDU, CRC-16 (low byte first), delimited on a serial
//! line by 3.5 character times of silence and everywhere by the function
//! code's length rules plus the CRC.
//!
//! The decoder does not rely on timing: it finds frames by the request
//! length rules of the function code (or a custom handler's rule) and checks
//! the CRC. A mismatch drops one byte and looks again, so garbage in front
//! of a good frame is shed byte by byte until the frame is found. A function
//! code nobody knows the length of is framed by scanning for the shortest
//! prefix whose CRC matches. On a serial line the Connection additionally
//! discards a partial frame after t3.5 of silence.

use super::checksum::{crc16, crc16_continue, crc16_update};
use super::{Decoded, MAX_COUNTED_RTU_ADU, MAX_RTU_ADU, PduLength, byte_counted};
use crate::error::FrameError;
use core::time::Duration;

/// Address byte + CRC bytes around the PDU.
const OVERHEAD: usize = 3;

/// Shortest RTU frame: address, function code, CRC.
const MIN_ADU: usize = 4;

/// Above this line speed the spec fixes t1.5 and t3.5.
const FIXED_TIMING_ABOVE_BAUD: u32 = 19_200;

/// Bits per character assumed when 0 is given (start + 8 data + parity + stop).
const DEFAULT_BITS_PER_CHAR: u32 = 11;

/// Request PDU length from the standard rules for the bytes seen so far
/// (`pdu[0]` is the function code). Custom codes answer [`PduLength::Unknown`]
/// here; the caller asks the custom handler instead.
///
/// Diagnostics (0x08) sub-function 0x0000 (Return Query Data) may echo any
/// amount of data, so it answers [`PduLength::Unknown`] and is framed by CRC
/// scan; every other sub-function carries exactly 2 data bytes. Encapsulated
/// interface transport (0x2B) is known only for MEI type 0x0E (Read Device
/// Identification); other MEI types answer Unknown.
pub fn request_pdu_length(pdu: &[u8]) -> PduLength {
    let Some(&function) = pdu.first() else {
        return PduLength::NeedMore;
    };
    // `base + byte count at pdu[at]`, once that byte has arrived.
    let counted = |base: usize, at: usize| match pdu.get(at) {
        Some(&count) => PduLength::Exact(base + usize::from(count)), // ok: at most 10 + 255
        None => PduLength::NeedMore,
    };
    match function {
        // Read coils / discrete inputs / holding / input registers, write single coil / register.
        0x01..=0x06 => PduLength::Exact(5),
        // Read exception status, get comm event counter / log, report server id.
        0x07 | 0x0B | 0x0C | 0x11 => PduLength::Exact(1),
        // Diagnostics: sub-function (2) + data (2), except Return Query Data.
        0x08 => match pdu.get(1..3) {
            None => PduLength::NeedMore,
            Some([0x00, 0x00]) => PduLength::Unknown,
            Some(_) => PduLength::Exact(5),
        },
        // Write multiple coils / registers, read / write file record,
        // read/write multiple registers: a header, a byte count, the data.
        0x0F | 0x10 | 0x14 | 0x15 | 0x17 => match byte_counted(function) {
            Some((base, at)) => counted(base, at),
            None => PduLength::Unknown,
        },
        // Mask write register: address, AND mask, OR mask.
        0x16 => PduLength::Exact(7),
        // Read FIFO queue: pointer address.
        0x18 => PduLength::Exact(3),
        // Encapsulated interface transport.
        0x2B => match pdu.get(1) {
            None => PduLength::NeedMore,
            // Read device identification: MEI type, read code, object id.
            Some(0x0E) => PduLength::Exact(4),
            Some(_) => PduLength::Unknown,
        },
        _ => PduLength::Unknown,
    }
}

/// Looks at the front of `buf` for one RTU request frame. `custom_length`
/// gives the PDU length of a function code the standard rules do not know
/// (custom function codes); it returns [`PduLength::Unknown`] when nobody
/// knows, in which case the decoder frames by CRC scan.
///
/// The answer depends only on the bytes at the front, never on how many
/// follow, except that [`Decoded::Incomplete`] may become a frame or a skip
/// once more bytes arrive: any split of a stream decodes the same.
/// - known length: [`Decoded::Incomplete`] until address + PDU + CRC are
///   buffered, then a frame if the CRC matches, else skip 1 byte
///   ([`FrameError::BadCrc`]) to resynchronise; a length past
///   [`MAX_RTU_ADU`] skips 1 byte ([`FrameError::TooLong`]), except for a
///   byte-counted request (FC15/16/20/21/23, up to [`MAX_COUNTED_RTU_ADU`]),
///   which is framed whole so the engine can answer exception 03;
/// - unknown length: the shortest prefix (from 4 bytes up to 256) whose CRC
///   matches is the frame; with no match in 256 buffered bytes skip 1 byte
///   ([`FrameError::TooLong`]), with fewer wait. A request of known length
///   with a good CRC that starts further on and ends no later wins, and the
///   bytes before it are skipped ([`FrameError::Garbage`]); among those the
///   first to start is taken, once every earlier one has arrived whole
///   (it may reach past the first 256 bytes, so up to 522 may wait). A
///   CRC coincidence inside a longer frame (about 1 in 65536 per candidate
///   end) frames it short; the spec's silence-based framing is what
///   disambiguates on a real line.
pub fn decode(buf: &[u8], custom_length: &dyn Fn(&[u8]) -> PduLength) -> Decoded {
    let Some((&unit, pdu)) = buf.split_first() else {
        return Decoded::Incomplete;
    };
    let length = match request_pdu_length(pdu) {
        PduLength::Unknown => custom_length(pdu),
        known => known,
    };
    match length {
        PduLength::Exact(0) => skip_one(FrameError::EmptyPdu),
        PduLength::Exact(pdu_len) => decode_exact(buf, unit, pdu_len),
        // A handler that keeps asking for more past the largest frame is wrong.
        PduLength::NeedMore if buf.len() >= MAX_RTU_ADU => skip_one(FrameError::TooLong(MAX_RTU_ADU)),
        PduLength::NeedMore => Decoded::Incomplete,
        PduLength::Unknown => decode_by_scan(buf, unit, custom_length),
    }
}

/// Drops the first byte: no frame starts there.
fn skip_one(error: FrameError) -> Decoded {
    Decoded::Skip { consumed: 1, error }
}

/// A frame of known PDU length `pdu_len` at the front of `buf`.
///
/// A byte-counted request (FC15/16/20/21/23) may be up to
/// [`MAX_COUNTED_RTU_ADU`] long: one past the spec's PDU limit is framed
/// whole so that it is answered with exception 03.
fn decode_exact(buf: &[u8], unit: u8, pdu_len: usize) -> Decoded {
    let total = pdu_len.saturating_add(OVERHEAD);
    if total > MAX_RTU_ADU && (total > MAX_COUNTED_RTU_ADU || buf.get(1).copied().and_then(byte_counted).is_none()) {
        return skip_one(FrameError::TooLong(total));
    }
    let crc_at = total - 2; // ok: total >= 4 since pdu_len >= 1
    let (Some(body), Some(&[lo, hi])) = (buf.get(..crc_at), buf.get(crc_at..total)) else {
        return Decoded::Incomplete;
    };
    let expected = u16::from_le_bytes([lo, hi]);
    let computed = crc16(body);
    if expected == computed {
        Decoded::Frame {
            consumed: total,
            unit,
            transaction_id: 0,
            pdu: 1..crc_at,
        }
    } else {
        skip_one(FrameError::BadCrc { expected, computed })
    }
}

/// A frame of unknown length: the shortest prefix whose trailing 2 bytes are
/// the CRC of what precedes them — unless a frame of known length with a
/// good CRC starts further on and ends no later, in which case the bytes
/// before it are garbage (so garbage that starts like an unknown code does
/// not hold a good request back until 256 bytes have arrived on a stream with
/// no line timing).
///
/// Known-length candidates are taken in the order they start, as the
/// byte-by-byte resynchronisation of [`decode_exact`] would: a good frame is
/// chosen only once every candidate starting before it has shown a bad CRC.
/// Choosing the one that ends first instead would take a request nested in
/// the data of a longer good frame (say a write inside a file record) for the
/// frame itself. The answer depends only on bytes that have arrived and
/// never changes when more do, so any split of the stream decodes the same.
fn decode_by_scan(buf: &[u8], unit: u8, custom_length: &dyn Fn(&[u8]) -> PduLength) -> Decoded {
    let window = buf.get(..MAX_RTU_ADU).unwrap_or(buf);
    let front = front_crc_end(window);
    match first_known_frame(buf, window.len(), front, custom_length) {
        Candidate::Good(start) => Decoded::Skip {
            consumed: start,
            error: FrameError::Garbage(start),
        },
        Candidate::Pending => Decoded::Incomplete,
        Candidate::None => match front {
            Some(end) => Decoded::Frame {
                consumed: end,
                unit,
                transaction_id: 0,
                pdu: 1..end - 2, // ok: end >= MIN_ADU
            },
            None if window.len() >= MAX_RTU_ADU => skip_one(FrameError::TooLong(MAX_RTU_ADU)),
            None => Decoded::Incomplete,
        },
    }
}

/// End of the shortest prefix of `window` that ends in its own CRC.
fn front_crc_end(window: &[u8]) -> Option<usize> {
    // Candidate CRC positions start after address + function code.
    const HEAD: usize = MIN_ADU - 2;
    let (head, rest) = (window.get(..HEAD)?, window.get(HEAD..)?);
    let mut crc = crc16(head);
    for (i, (&lo, &hi)) in rest.iter().zip(rest.iter().skip(1)).enumerate() {
        if crc == u16::from_le_bytes([lo, hi]) {
            return Some(i + HEAD + 2); // ok: i < window.len() <= 256
        }
        crc = crc16_update(crc, lo);
    }
    None
}

/// What the known-length frames starting after the front of a window say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidate {
    /// The first one that counts has a good CRC and starts here.
    Good(usize),
    /// One that counts has not fully arrived and every one before it has a
    /// bad CRC: wait.
    Pending,
    /// None that counts has a good CRC.
    None,
}

/// Looks at the frames of known length that start in `buf` after its front
/// and before `window` bytes, in order. With a front frame that ends at
/// `front_end`, those that would end after it are left out. A frame may
/// reach past the window: skipping up to its start would bring it in.
fn first_known_frame(
    buf: &[u8],
    window: usize,
    front_end: Option<usize>,
    custom_length: &dyn Fn(&[u8]) -> PduLength,
) -> Candidate {
    for start in 1..window {
        let Some(candidate) = buf.get(start..) else { break };
        let Some(pdu) = candidate.get(1..) else { break };
        let len = match request_pdu_length(pdu) {
            PduLength::Unknown => custom_length(pdu),
            known => known,
        };
        match len {
            // Its length byte is still to come (unless the front frame ends
            // first, or a custom rule keeps asking past the largest frame).
            PduLength::NeedMore if front_end.is_none() && candidate.len() < MAX_RTU_ADU => {
                return Candidate::Pending;
            }
            PduLength::Exact(pdu_len) if pdu_len > 0 => {
                let end = start.saturating_add(pdu_len.saturating_add(OVERHEAD));
                if front_end.is_some_and(|front| end > front) {
                    continue;
                }
                // Too long a frame skips; an incomplete one is waited for.
                match decode_exact(candidate, 0, pdu_len) {
                    Decoded::Frame { .. } => return Candidate::Good(start),
                    Decoded::Incomplete => return Candidate::Pending,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Candidate::None
}

/// Appends the ADU for `pdu` to `out`.
pub fn encode(unit: u8, pdu: &[u8], out: &mut Vec<u8>) {
    out.reserve(pdu.len().saturating_add(OVERHEAD));
    out.push(unit);
    out.extend_from_slice(pdu);
    let crc = crc16_continue(crc16(&[unit]), pdu);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Inter-character (t1.5) and inter-frame (t3.5) silences for a line speed
/// and character size in bits (start + data + parity + stop, usually 11).
/// Above 19200 baud the spec fixes them at 750 µs and 1.75 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtuTiming {
    /// t1.5: the longest gap allowed inside a frame.
    pub t1_5: Duration,
    /// t3.5: the silence that ends a frame.
    pub t3_5: Duration,
}

impl RtuTiming {
    /// Timing for `baud_rate` bits/s with `bits_per_char` bits per character.
    /// A baud rate of 0 gets the fixed high-speed values; 0 bits per
    /// character is taken as 11.
    pub fn new(baud_rate: u32, bits_per_char: u32) -> Self {
        if baud_rate == 0 || baud_rate > FIXED_TIMING_ABOVE_BAUD {
            return Self {
                t1_5: Duration::from_micros(750),
                t3_5: Duration::from_micros(1750),
            };
        }
        let bits = if bits_per_char == 0 {
            DEFAULT_BITS_PER_CHAR
        } else {
            bits_per_char
        };
        // `tenths` tenths of a character time, in nanoseconds; u128 cannot overflow.
        let silence = |tenths: u128| {
            let nanos = u128::from(bits) * tenths * 100_000_000 / u128::from(baud_rate);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        };
        Self {
            t1_5: silence(15),
            t3_5: silence(35),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MAX_COUNTED_PDU;
    use proptest::prelude::*;

    /// Spec-style request: unit 1 reads 10 holding registers from 0.
    const READ_10: [u8; 8] = [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD];
    /// Modicon guide: unit 17 reads 3 holding registers from 40108.
    const MODICON: [u8; 8] = [0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87];

    fn no_custom(_: &[u8]) -> PduLength {
        PduLength::Unknown
    }

    /// Custom rules used by the tests:
    /// 0x41: byte count at pdu[1] then that many bytes; 0x42: always NeedMore
    /// (a broken handler); 0x43: Exact(0); 0x44: Exact(300).
    fn custom(pdu: &[u8]) -> PduLength {
        match pdu.first() {
            Some(0x41) => pdu
                .get(1)
                .map_or(PduLength::NeedMore, |&n| PduLength::Exact(2 + usize::from(n))),
            Some(0x42) => PduLength::NeedMore,
            Some(0x43) => PduLength::Exact(0),
            Some(0x44) => PduLength::Exact(300),
            _ => PduLength::Unknown,
        }
    }

    fn rtu(unit: u8, pdu: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(unit, pdu, &mut out);
        out
    }

    #[test]
    fn length_rules() {
        use PduLength::*;
        let cases: &[(&[u8], PduLength)] = &[
            (&[], NeedMore),
            (&[0x01], Exact(5)),
            (&[0x03, 0x00], Exact(5)),
            (&[0x06], Exact(5)),
            (&[0x07], Exact(1)),
            (&[0x0B], Exact(1)),
            (&[0x0C], Exact(1)),
            (&[0x11], Exact(1)),
            (&[0x08], NeedMore),
            (&[0x08, 0x00], NeedMore),
            (&[0x08, 0x00, 0x00], Unknown),
            (&[0x08, 0x00, 0x01], Exact(5)),
            (&[0x08, 0x00, 0x0A, 0x00], Exact(5)),
            (&[0x0F, 0, 0, 0, 0], NeedMore),
            (&[0x0F, 0, 0, 0, 10, 2], Exact(8)),
            (&[0x10, 0, 1, 0, 2, 4], Exact(10)),
            (&[0x10, 0, 1, 0, 2, 0xFF], Exact(261)),
            (&[0x14], NeedMore),
            (&[0x14, 7], Exact(9)),
            (&[0x15, 0x0D], Exact(15)),
            (&[0x16], Exact(7)),
            (&[0x17, 0, 0, 0, 0, 0, 0, 0, 0], NeedMore),
            (&[0x17, 0, 0, 0, 0, 0, 0, 0, 0, 4], Exact(14)),
            (&[0x18], Exact(3)),
            (&[0x2B], NeedMore),
            (&[0x2B, 0x0E], Exact(4)),
            (&[0x2B, 0x0D], Unknown),
            (&[0x00], Unknown),
            (&[0x09], Unknown),
            (&[0x41, 3], Unknown),
            (&[0x83], Unknown),
        ];
        for (pdu, want) in cases {
            assert_eq!(request_pdu_length(pdu), *want, "{pdu:02x?}");
        }
    }

    #[test]
    fn decodes_spec_frames() {
        assert_eq!(
            decode(&READ_10, &no_custom),
            Decoded::Frame {
                consumed: 8,
                unit: 1,
                transaction_id: 0,
                pdu: 1..6
            }
        );
        assert_eq!(
            decode(&MODICON, &no_custom),
            Decoded::Frame {
                consumed: 8,
                unit: 0x11,
                transaction_id: 0,
                pdu: 1..6
            }
        );
    }

    #[test]
    fn encodes_spec_frames() {
        assert_eq!(rtu(0x01, &READ_10[1..6]), READ_10);
        let mut out = vec![0xEE];
        encode(0x11, &MODICON[1..6], &mut out);
        assert_eq!(&out[..], &[&[0xEE][..], &MODICON].concat()[..], "encode appends");
    }

    #[test]
    fn incomplete_until_whole_frame() {
        for n in 0..READ_10.len() {
            assert_eq!(decode(&READ_10[..n], &no_custom), Decoded::Incomplete, "{n} bytes");
        }
    }

    #[test]
    fn bad_crc_skips_one_byte() {
        let mut frame = READ_10;
        frame[7] = 0xCE;
        assert_eq!(
            decode(&frame, &no_custom),
            Decoded::Skip {
                consumed: 1,
                error: FrameError::BadCrc {
                    expected: 0xCEC5,
                    computed: 0xCDC5
                },
            }
        );
    }

    #[test]
    fn write_multiple_waits_for_byte_count() {
        let frame = rtu(0x05, &[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02]);
        assert_eq!(frame.len(), 13);
        for n in 0..frame.len() {
            assert_eq!(decode(&frame[..n], &no_custom), Decoded::Incomplete, "{n} bytes");
        }
        assert_eq!(
            decode(&frame, &no_custom),
            Decoded::Frame {
                consumed: 13,
                unit: 5,
                transaction_id: 0,
                pdu: 1..11
            }
        );
    }

    #[test]
    fn length_past_max_adu_skips() {
        // A custom rule past 256 bytes: skipped at once.
        let long = |_: &[u8]| PduLength::Exact(254);
        assert_eq!(
            decode(&[0x01, 0x41], &long),
            Decoded::Skip {
                consumed: 1,
                error: FrameError::TooLong(257)
            }
        );
        // FC16 with byte count 247: ADU exactly 256, allowed.
        let mut pdu = vec![0x10, 0x00, 0x00, 0x00, 0x7B, 0xF7];
        pdu.extend(std::iter::repeat_n(0x5A, 247));
        assert_eq!(pdu.len(), 253);
        let frame = rtu(0x01, &pdu);
        assert_eq!(
            decode(&frame, &no_custom),
            Decoded::Frame {
                consumed: 256,
                unit: 1,
                transaction_id: 0,
                pdu: 1..254
            }
        );
    }

    #[test]
    fn byte_counted_request_past_the_pdu_limit_is_framed_whole() {
        // FC16 writing 124 registers (ADU 257), FC16 with byte count 255
        // (264), FC23 with byte count 255 (268, the longest).
        let fc16 = |count: u8| [&[0x10, 0, 0, 0, 124, count][..], &vec![0xA5; count.into()]].concat();
        let fc23 = [&[0x17, 0, 0, 0, 1, 0, 0, 0, 122, 255][..], &[0x5A; 255]].concat();
        for pdu in [fc16(248), fc16(255), fc23] {
            let frame = rtu(0x01, &pdu);
            assert!(frame.len() > MAX_RTU_ADU && frame.len() <= MAX_COUNTED_RTU_ADU);
            for n in 0..frame.len() {
                assert_eq!(decode(&frame[..n], &no_custom), Decoded::Incomplete, "{n} bytes");
            }
            let total = frame.len();
            assert_eq!(
                decode(&frame, &no_custom),
                Decoded::Frame {
                    consumed: total,
                    unit: 1,
                    transaction_id: 0,
                    pdu: 1..total - 2
                }
            );
        }
    }

    #[test]
    fn unknown_code_framed_by_crc_scan() {
        let frame = rtu(0x09, &[0x64, 0x01, 0x02, 0x03]);
        for n in 0..frame.len() {
            assert_eq!(decode(&frame[..n], &no_custom), Decoded::Incomplete, "{n} bytes");
        }
        let mut buf = frame.clone();
        buf.extend_from_slice(&READ_10);
        assert_eq!(
            decode(&buf, &no_custom),
            Decoded::Frame {
                consumed: 7,
                unit: 9,
                transaction_id: 0,
                pdu: 1..5
            }
        );
        // The shortest frame: address, function code, CRC.
        let short = rtu(0x01, &[0x65]);
        assert_eq!(
            decode(&short, &no_custom),
            Decoded::Frame {
                consumed: 4,
                unit: 1,
                transaction_id: 0,
                pdu: 1..2
            }
        );
    }

    /// `n` bytes that are all unknown function codes (so no request of known
    /// length starts anywhere) and where no prefix has a matching CRC
    /// (checked independently of the decoder).
    fn unknown_codes(n: usize) -> Vec<u8> {
        let buf: Vec<u8> = (0..n).map(|i| 0x64 + (i * 7 % 11) as u8).collect();
        assert!(!(4..=n).any(|end| crc16(&buf[..end]) == 0), "pick another test buffer");
        buf
    }

    #[test]
    fn unknown_code_without_crc_match_in_256_bytes_skips() {
        let mut buf = unknown_codes(256);
        assert_eq!(decode(&buf[..255], &no_custom), Decoded::Incomplete);
        // The last byte could start a request until its function code is seen.
        assert_eq!(decode(&buf, &no_custom), Decoded::Incomplete);
        buf.push(0x64);
        assert_eq!(
            decode(&buf, &no_custom),
            Decoded::Skip {
                consumed: 1,
                error: FrameError::TooLong(256)
            }
        );
        // More bytes do not change the answer: the scan stops at 256.
        buf.extend_from_slice(&READ_10);
        assert_eq!(
            decode(&buf, &no_custom),
            Decoded::Skip {
                consumed: 1,
                error: FrameError::TooLong(256)
            }
        );
    }

    #[test]
    fn a_request_reaching_past_the_scan_window_is_waited_for() {
        // The same unknown-code bytes, with READ_10 starting at byte 250: it
        // ends at 258, past the 256 the front's CRC scan looks at.
        let mut buf = unknown_codes(250);
        buf.extend_from_slice(&READ_10);
        for n in 250..buf.len() {
            assert_eq!(decode(&buf[..n], &no_custom), Decoded::Incomplete, "{n} bytes");
        }
        assert_eq!(
            decode(&buf, &no_custom),
            Decoded::Skip {
                consumed: 250,
                error: FrameError::Garbage(250)
            }
        );
        // With a bad CRC it is not a request, and the front is dropped.
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert_eq!(
            decode(&buf, &no_custom),
            Decoded::Skip {
                consumed: 1,
                error: FrameError::TooLong(256)
            }
        );
    }

    #[test]
    fn diagnostics_return_query_data_is_scanned() {
        let echo = rtu(0x01, &[0x08, 0x00, 0x00, 0xA5, 0x37, 0x11, 0x22]);
        assert_eq!(
            decode(&echo, &no_custom),
            Decoded::Frame {
                consumed: 10,
                unit: 1,
                transaction_id: 0,
                pdu: 1..8
            }
        );
        let counters = rtu(0x01, &[0x08, 0x00, 0x0A, 0x00, 0x00]);
        assert_eq!(
            decode(&counters, &no_custom),
            Decoded::Frame {
                consumed: 8,
                unit: 1,
                transaction_id: 0,
                pdu: 1..6
            }
        );
    }

    #[test]
    fn read_device_identification() {
        let frame = rtu(0x01, &[0x2B, 0x0E, 0x01, 0x00]);
        assert_eq!(
            decode(&frame, &no_custom),
            Decoded::Frame {
                consumed: 7,
                unit: 1,
                transaction_id: 0,
                pdu: 1..5
            }
        );
    }

    #[test]
    fn custom_lengths() {
        let frame = rtu(0x02, &[0x41, 0x03, 0xAA, 0xBB, 0xCC]);
        for n in 0..frame.len() {
            assert_eq!(decode(&frame[..n], &custom), Decoded::Incomplete, "{n} bytes");
        }
        assert_eq!(
            decode(&frame, &custom),
            Decoded::Frame {
                consumed: 8,
                unit: 2,
                transaction_id: 0,
                pdu: 1..6
            }
        );
        // Standard codes never reach the custom rule.
        assert_eq!(
            decode(&READ_10, &|_: &[u8]| PduLength::Exact(1)),
            Decoded::Frame {
                consumed: 8,
                unit: 1,
                transaction_id: 0,
                pdu: 1..6
            }
        );
        // A handler that always wants more gives up at 256 bytes.
        let mut stuck = vec![0x01, 0x42];
        stuck.resize(255, 0);
        assert_eq!(decode(&stuck, &custom), Decoded::Incomplete);
        stuck.push(0);
        assert_eq!(
            decode(&stuck, &custom),
            Decoded::Skip {
                consumed: 1,
                error: FrameError::TooLong(256)
            }
        );
        assert_eq!(
            decode(&[0x01, 0x43, 0x00, 0x00], &custom),
            Decoded::Skip {
                consumed: 1,
                error: FrameError::EmptyPdu
            }
        );
        assert_eq!(
            decode(&[0x01, 0x44], &custom),
            Decoded::Skip {
                consumed: 1,
                error: FrameError::TooLong(303)
            }
        );
    }

    #[test]
    fn garbage_before_good_frame_is_shed_byte_by_byte() {
        // Each garbage offset reads as FC 7 (1-byte PDU) whose CRC does not
        // match, so every garbage byte is skipped and the frame is found.
        let mut stream = vec![0x07, 0x07, 0x07];
        stream.extend_from_slice(&READ_10);
        let (events, rest) = feed(&no_custom, [&stream[..]]);
        assert!(rest.is_empty());
        assert_eq!(events.len(), 4, "{events:?}");
        for (at, event) in events[..3].iter().enumerate() {
            assert!(
                matches!(event, Event::Skip { at: a, consumed: 1, error: FrameError::BadCrc { .. } } if *a == at),
                "{event:?}"
            );
        }
        assert_eq!(
            events[3],
            Event::Frame {
                at: 3,
                consumed: 8,
                unit: 1,
                pdu: READ_10[1..6].to_vec()
            }
        );
    }

    #[test]
    fn a_request_nested_in_a_longer_frame_after_garbage_is_not_taken_for_it() {
        // A write file record whose record data carries a whole RTU write
        // (unit 1, FC6, good CRC), sent to unit 30 after one noise byte. The
        // noise reads as unit 0 with function code 30 (unknown), so the
        // decoder scans; the nested write ends first but the file record
        // starts first, and the file record is the frame.
        let nested = rtu(0x01, &[0x06, 0x00, 0x01, 0x12, 0x34]);
        let mut record = vec![0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x05];
        record.extend_from_slice(&nested);
        record.extend_from_slice(&[0x00, 0x00]); // 5 registers of record data
        assert_eq!(record.len(), 7 + 10);
        let mut pdu = vec![0x15, u8::try_from(record.len()).unwrap()];
        pdu.extend_from_slice(&record);
        let frame = rtu(30, &pdu);
        let mut stream = vec![0x00];
        stream.extend_from_slice(&frame);
        let want = vec![
            Event::Skip {
                at: 0,
                consumed: 1,
                error: FrameError::Garbage(1),
            },
            Event::Frame {
                at: 1,
                consumed: frame.len(),
                unit: 30,
                pdu,
            },
        ];
        assert_eq!(feed(&no_custom, [&stream[..]]), (want.clone(), Vec::new()));
        assert_eq!(feed(&no_custom, stream.chunks(1)), (want, Vec::new()));
        // While the file record is still arriving, the decoder waits.
        let cut = 1 + 2 + 7 + nested.len();
        assert_eq!(decode(&stream[..cut], &no_custom), Decoded::Incomplete);
    }

    #[test]
    fn timing() {
        let t = RtuTiming::new(9600, 11);
        assert_eq!(t.t1_5, Duration::from_nanos(1_718_750));
        assert_eq!(t.t3_5, Duration::from_nanos(4_010_416));
        let t = RtuTiming::new(19_200, 11);
        assert_eq!(t.t1_5, Duration::from_nanos(859_375));
        assert_eq!(t.t3_5, Duration::from_nanos(2_005_208));
        let t = RtuTiming::new(1200, 10);
        assert_eq!(t.t1_5, Duration::from_micros(12_500));
        assert_eq!(t.t3_5, Duration::from_nanos(29_166_666));
        let fixed = RtuTiming {
            t1_5: Duration::from_micros(750),
            t3_5: Duration::from_micros(1750),
        };
        assert_eq!(RtuTiming::new(19_201, 11), fixed);
        assert_eq!(RtuTiming::new(115_200, 11), fixed);
        assert_eq!(RtuTiming::new(0, 11), fixed);
        assert_eq!(RtuTiming::new(0, 0), fixed);
        assert_eq!(RtuTiming::new(9600, 0), RtuTiming::new(9600, 11));
        // Extreme inputs do not overflow.
        let slow = RtuTiming::new(1, u32::MAX);
        assert!(slow.t3_5 > slow.t1_5);
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Frame {
            at: usize,
            consumed: usize,
            unit: u8,
            pdu: Vec<u8>,
        },
        Skip {
            at: usize,
            consumed: usize,
            error: FrameError,
        },
    }

    /// What the Connection does on a stream: append each chunk, decode the
    /// front repeatedly, drop what was used. Events carry their stream offset.
    fn feed<'a>(
        custom_length: &dyn Fn(&[u8]) -> PduLength,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<Event>, Vec<u8>) {
        let mut buf = Vec::new();
        let mut events = Vec::new();
        let mut at = 0;
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while !buf.is_empty() {
                match decode(&buf, custom_length) {
                    Decoded::Frame {
                        consumed,
                        unit,
                        transaction_id,
                        pdu,
                    } => {
                        assert_eq!(transaction_id, 0);
                        assert!(consumed >= MIN_ADU && consumed <= buf.len().min(MAX_COUNTED_RTU_ADU));
                        assert_eq!(pdu, 1..consumed - 2);
                        assert_eq!(crc16(&buf[..consumed]), 0, "frame CRC really matches");
                        events.push(Event::Frame {
                            at,
                            consumed,
                            unit,
                            pdu: buf[pdu].to_vec(),
                        });
                        buf.drain(..consumed);
                        at += consumed;
                    }
                    Decoded::Skip { consumed, error } => {
                        assert!(consumed >= 1 && consumed <= buf.len());
                        events.push(Event::Skip { at, consumed, error });
                        buf.drain(..consumed);
                        at += consumed;
                    }
                    Decoded::Incomplete => {
                        // A frame starting at the 256th byte ends by the 523rd.
                        assert!(buf.len() < MAX_RTU_ADU + MAX_COUNTED_RTU_ADU - 1, "{}", buf.len());
                        break;
                    }
                    Decoded::Fatal(e) => panic!("RTU is never fatal: {e}"),
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

    fn bytes(len: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), len)
    }

    /// A request PDU that follows a known length rule (standard or the
    /// tests' custom 0x41), 1..=265 bytes (byte-counted requests up to a
    /// count of 255, past the 253-byte PDU limit).
    fn request_pdu() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (1u8..=6, bytes(4)).prop_map(|(fc, d)| [vec![fc], d].concat()),
            prop::sample::select(vec![0x07u8, 0x0B, 0x0C, 0x11]).prop_map(|fc| vec![fc]),
            (1u16.., bytes(2)).prop_map(|(sub, d)| [vec![0x08], sub.to_be_bytes().to_vec(), d].concat()),
            (prop::sample::select(vec![0x0Fu8, 0x10]), bytes(4), 0usize..=255).prop_flat_map(
                |(fc, head, n)| bytes(n).prop_map(move |d| { [vec![fc], head.clone(), vec![n as u8], d].concat() })
            ),
            (prop::sample::select(vec![0x14u8, 0x15]), 0usize..=255)
                .prop_flat_map(|(fc, n)| bytes(n).prop_map(move |d| [vec![fc, n as u8], d].concat())),
            bytes(6).prop_map(|d| [vec![0x16], d].concat()),
            (bytes(8), 0usize..=255).prop_flat_map(
                |(head, n)| bytes(n).prop_map(move |d| { [vec![0x17], head.clone(), vec![n as u8], d].concat() })
            ),
            bytes(2).prop_map(|d| [vec![0x18], d].concat()),
            bytes(2).prop_map(|d| [vec![0x2B, 0x0E], d].concat()),
            (0usize..=251).prop_flat_map(|n| bytes(n).prop_map(move |d| [vec![0x41, n as u8], d].concat())),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(unit in any::<u8>(), pdu in request_pdu()) {
            prop_assert!((1..=MAX_COUNTED_PDU).contains(&pdu.len()));
            let frame = rtu(unit, &pdu);
            prop_assert_eq!(frame.len(), pdu.len() + 3);
            prop_assert_eq!(
                decode(&frame, &custom),
                Decoded::Frame { consumed: frame.len(), unit, transaction_id: 0, pdu: 1..frame.len() - 2 }
            );
            prop_assert_eq!(&frame[1..frame.len() - 2], &pdu[..]);
        }

        /// Unknown codes are framed by CRC scan: the whole frame, unless a
        /// shorter prefix happens to end in its own CRC, or a request of
        /// known length with a good CRC lies inside and ends no later (real
        /// coincidences, about 1 in 65536 per candidate end). Both CRCs are
        /// checked here without the decoder; the length rules are the ones
        /// `length_rules` pins.
        #[test]
        fn round_trip_unknown_code(unit in any::<u8>(), fc in 0x64u8..=0x6E, data in proptest::collection::vec(any::<u8>(), 0..=252)) {
            let pdu = [vec![fc], data].concat();
            let frame = rtu(unit, &pdu);
            let first_match = (MIN_ADU..=frame.len()).find(|&end| crc16(&frame[..end]) == 0);
            let end = first_match.unwrap_or(0);
            let nested = (1..frame.len()).find(|&start| {
                let Some(PduLength::Exact(n @ 1..)) = frame.get(start + 1..).map(request_pdu_length) else {
                    return false;
                };
                start + n + OVERHEAD <= end && crc16(&frame[start..start + n + OVERHEAD]) == 0
            });
            let want = match nested {
                Some(start) => Decoded::Skip { consumed: start, error: FrameError::Garbage(start) },
                None => Decoded::Frame { consumed: end, unit, transaction_id: 0, pdu: 1..end - 2 },
            };
            prop_assert_eq!(decode(&frame, &no_custom), want);
        }

        #[test]
        fn split_invariance(
            frames in proptest::collection::vec((any::<u8>(), request_pdu()), 1..5),
            garbage in proptest::collection::vec(any::<u8>(), 0..24),
            garbage_at in any::<prop::sample::Index>(),
            points in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let garbage_at = garbage_at.index(frames.len() + 1);
            let mut stream = Vec::new();
            for (i, (unit, pdu)) in frames.iter().enumerate() {
                if i == garbage_at {
                    stream.extend_from_slice(&garbage);
                }
                encode(*unit, pdu, &mut stream);
            }
            if garbage_at == frames.len() {
                stream.extend_from_slice(&garbage);
            }
            let whole = feed(&custom, [&stream[..]]);
            let chunks = split_at_points(&stream, &points);
            prop_assert_eq!(&whole, &feed(&custom, chunks.iter().map(Vec::as_slice)));
            prop_assert_eq!(&whole, &feed(&custom, stream.chunks(1)));
            // The frames before the garbage come out first, unchanged.
            let mut at = 0;
            for (event, (unit, pdu)) in whole.0.iter().zip(&frames[..garbage_at]) {
                prop_assert_eq!(event, &Event::Frame { at, consumed: pdu.len() + 3, unit: *unit, pdu: pdu.clone() });
                at += pdu.len() + 3;
            }
            if garbage.is_empty() {
                prop_assert_eq!(whole.0.len(), frames.len());
                prop_assert!(whole.1.is_empty());
            }
        }

        /// A good frame after random garbage is found, unless a window
        /// starting in the garbage and reaching into the frame happens to end
        /// in its own CRC (a real, valid-looking frame: about 1 in 65536 per
        /// candidate; `feed` checks its CRC independently). 268 bytes of
        /// padding after the frame settle every wait for more bytes.
        #[test]
        fn good_frame_after_garbage_is_found(
            garbage in proptest::collection::vec(any::<u8>(), 0..24),
            unit in any::<u8>(),
            pdu in request_pdu(),
            points in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let frame = rtu(unit, &pdu);
            let mut stream = garbage.clone();
            stream.extend_from_slice(&frame);
            stream.extend(std::iter::repeat_n(0x07, MAX_COUNTED_RTU_ADU));
            let chunks = split_at_points(&stream, &points);
            let (events, _) = feed(&custom, chunks.iter().map(Vec::as_slice));
            let g = garbage.len();
            let good = Event::Frame { at: g, consumed: frame.len(), unit, pdu: pdu.clone() };
            let swallowed = events.iter().any(|e| matches!(e, Event::Frame { at, consumed, .. } if *at < g && at + consumed > g));
            if !swallowed {
                prop_assert!(events.contains(&good), "{:?}", events);
                // Nothing else starts inside the good frame.
                let inside = |at: usize| at > g && at < g + frame.len();
                for event in &events {
                    let (Event::Skip { at, .. } | Event::Frame { at, .. }) = event;
                    prop_assert!(!inside(*at), "{:?}", event);
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            // `feed` checks every answer's invariants.
            let _ = feed(&custom, [&bytes[..]]);
            let _ = feed(&no_custom, bytes.chunks(3));
        }
    }
}
