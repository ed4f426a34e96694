//! Shared harness for the frame decoder fuzz targets.
//!
//! Each target feeds the fuzzer's bytes through the same loop the
//! `Connection` runs (append, decode the front repeatedly, drop what was
//! used), once whole and once split into chunks, and checks that both give
//! the same frames and that every answer is well formed.

pub mod policy;
pub mod sim;

use coilwork_core::frame::{Decoded, PduLength, ascii, checksum, mbap, rtu};
use coilwork_core::frame::{MAX_ASCII_ADU, MAX_MBAP_ADU, MAX_RTU_ADU};
use coilwork_core::frame::{MAX_COUNTED_ASCII_ADU, MAX_COUNTED_MBAP_ADU, MAX_COUNTED_RTU_ADU};

use coilwork_core::FrameError;

/// One decoded frame: stream offset, unit, transaction id, PDU bytes.
pub type Frame = (usize, u8, u16, Vec<u8>);

/// One skip: stream offset, bytes dropped, why.
pub type Skip = (usize, usize, FrameError);

/// What a stream decoded to: frames, skips, and what is left buffered.
pub type Outcome = (Vec<Frame>, Vec<Skip>, Vec<u8>);

/// Checks a frame's length: at most `plain`, or for a byte-counted request
/// (FC15/16/20/21/23, framed whole past the PDU limit so it gets exception
/// 03) at most `counted`.
pub fn check_len(raw: &[u8], pdu: &[u8], plain: usize, counted: usize) {
    let byte_counted = matches!(pdu.first(), Some(0x0F | 0x10 | 0x14 | 0x15 | 0x17));
    let max = if byte_counted { counted } else { plain };
    assert!(
        raw.len() <= max,
        "frame of {} bytes, PDU {:02X?}",
        raw.len(),
        pdu.first()
    );
}

/// Splits the input: the first byte's low 7 bits give the chunk size (0: the
/// whole stream in one push), its top bit a flag for the target; the rest is
/// the byte stream.
pub fn split_input(data: &[u8]) -> Option<(usize, bool, &[u8])> {
    let (&first, stream) = data.split_first()?;
    let size = usize::from(first & 0x7F);
    Some((
        if size == 0 { stream.len().max(1) } else { size },
        first & 0x80 != 0,
        stream,
    ))
}

/// Runs the Connection's loop over `chunks`, calling `decode(buf, scratch)`
/// and `check` on every frame (with the consumed bytes and the PDU).
/// Returns the frames, the skips and what is left buffered (empty after a
/// fatal error).
pub fn feed<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    mut decode: impl FnMut(&[u8], &mut [u8]) -> Decoded,
    uses_scratch: bool,
    mut check: impl FnMut(&[u8], u8, u16, &[u8]),
) -> Outcome {
    let mut buf = Vec::new();
    let mut skips = Vec::new();
    let mut scratch = [0u8; MAX_COUNTED_RTU_ADU];
    let mut frames = Vec::new();
    let mut at = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while !buf.is_empty() {
            match decode(&buf, &mut scratch) {
                Decoded::Frame {
                    consumed,
                    unit,
                    transaction_id,
                    pdu,
                } => {
                    assert!(
                        consumed > 0 && consumed <= buf.len(),
                        "consumed {consumed} of {}",
                        buf.len()
                    );
                    let source: &[u8] = if uses_scratch { &scratch } else { &buf };
                    let pdu = source
                        .get(pdu.clone())
                        .unwrap_or_else(|| panic!("pdu {pdu:?} out of range"));
                    assert!(!pdu.is_empty(), "empty PDU in a frame");
                    check(&buf[..consumed], unit, transaction_id, pdu);
                    frames.push((at, unit, transaction_id, pdu.to_vec()));
                    buf.drain(..consumed);
                    at += consumed;
                }
                Decoded::Skip { consumed, error } => {
                    assert!(
                        consumed > 0 && consumed <= buf.len(),
                        "skip {consumed} of {}",
                        buf.len()
                    );
                    assert!(!error.is_fatal(), "skip with fatal error {error}");
                    skips.push((at, consumed, error));
                    buf.drain(..consumed);
                    at += consumed;
                }
                Decoded::Incomplete => break,
                Decoded::Fatal(error) => {
                    assert!(error.is_fatal(), "fatal with recoverable error {error}");
                    return (frames, skips, Vec::new());
                }
            }
        }
    }
    (frames, skips, buf)
}

/// Feeds `stream` whole and in `chunk`-byte pieces and asserts both give the
/// same frames and leftover, and with `same_skips` the same skips too (not
/// for ASCII, where a run of garbage is dropped in as many pieces as it
/// arrived in).
pub fn whole_vs_split(
    stream: &[u8],
    chunk: usize,
    same_skips: bool,
    mut decode: impl FnMut(&[u8], &mut [u8]) -> Decoded,
    uses_scratch: bool,
    mut check: impl FnMut(&[u8], u8, u16, &[u8]),
) {
    let whole = feed([stream], &mut decode, uses_scratch, &mut check);
    let split = feed(stream.chunks(chunk), &mut decode, uses_scratch, &mut check);
    assert_eq!(whole.0, split.0, "split into {chunk}-byte chunks changed the frames");
    assert_eq!(whole.2, split.2, "split into {chunk}-byte chunks changed the leftover");
    if same_skips {
        assert_eq!(whole.1, split.1, "split into {chunk}-byte chunks changed the skips");
    }
}

/// MBAP: a frame re-encodes to exactly the bytes it used.
pub fn fuzz_mbap(data: &[u8]) {
    let Some((chunk, _, stream)) = split_input(data) else {
        return;
    };
    let mut out = Vec::new();
    whole_vs_split(
        stream,
        chunk,
        true,
        |buf, _| mbap::decode(buf),
        false,
        |raw, unit, tid, pdu| {
            check_len(raw, pdu, MAX_MBAP_ADU, MAX_COUNTED_MBAP_ADU);
            out.clear();
            mbap::encode(tid, unit, pdu, &mut out);
            assert_eq!(out, raw, "MBAP re-encode differs");
        },
    );
}

/// Custom length rules exercising every [`PduLength`] answer: 0x41 byte
/// count at pdu[1]; 0x42 always NeedMore; 0x43 Exact(0); 0x44 Exact(300).
pub fn custom_length(pdu: &[u8]) -> PduLength {
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

/// RTU: a frame's CRC really matches and it re-encodes to the bytes it used.
/// The flag switches the custom length rules on.
pub fn fuzz_rtu(data: &[u8]) {
    let Some((chunk, with_custom, stream)) = split_input(data) else {
        return;
    };
    let none = |_: &[u8]| PduLength::Unknown;
    let custom: &dyn Fn(&[u8]) -> PduLength = if with_custom { &custom_length } else { &none };
    let mut out = Vec::new();
    whole_vs_split(
        stream,
        chunk,
        true,
        |buf, _| rtu::decode(buf, custom),
        false,
        |raw, unit, tid, pdu| {
            check_len(raw, pdu, MAX_RTU_ADU, MAX_COUNTED_RTU_ADU);
            assert_eq!(tid, 0);
            assert_eq!(checksum::crc16(raw), 0, "RTU frame with a bad CRC");
            out.clear();
            rtu::encode(unit, pdu, &mut out);
            assert_eq!(out, raw, "RTU re-encode differs");
        },
    );
}

/// ASCII: a frame re-encodes to the bytes it used (hex upper-cased). The
/// flag selects CR instead of LF as the delimiter.
pub fn fuzz_ascii(data: &[u8]) {
    let Some((chunk, cr, stream)) = split_input(data) else {
        return;
    };
    let delimiter = if cr { b'\r' } else { ascii::DEFAULT_DELIMITER };
    let mut out = Vec::new();
    whole_vs_split(
        stream,
        chunk,
        false,
        |buf, scratch| ascii::decode(buf, delimiter, scratch),
        true,
        |raw, unit, tid, pdu| {
            check_len(raw, pdu, MAX_ASCII_ADU, MAX_COUNTED_ASCII_ADU);
            assert_eq!(tid, 0);
            out.clear();
            ascii::encode(unit, pdu, delimiter, &mut out);
            assert_eq!(out, raw.to_ascii_uppercase(), "ASCII re-encode differs");
        },
    );
}
