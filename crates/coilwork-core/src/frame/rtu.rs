//! RTU framing: address, PDU, CRC-16 (low byte first), delimited on a serial
//! line by 3.5 character times of silence and everywhere by the function
//! code's length rules plus the CRC.

use super::{Decoded, PduLength};
use core::time::Duration;

/// Request PDU length from the standard rules for the bytes seen so far
/// (`pdu[0]` is the function code). Custom codes answer [`PduLength::Unknown`]
/// here; the caller asks the custom handler instead.
pub fn request_pdu_length(pdu: &[u8]) -> PduLength {
    let _ = pdu;
    PduLength::Unknown
}

/// Looks at the front of `buf` for one RTU request frame. `custom_length`
/// gives the PDU length of a function code the standard rules do not know
/// (custom function codes); it returns [`PduLength::Unknown`] when nobody
/// knows, in which case the decoder frames by CRC scan.
pub fn decode(buf: &[u8], custom_length: &dyn Fn(&[u8]) -> PduLength) -> Decoded {
    let _ = (buf, custom_length);
    Decoded::Incomplete
}

/// Appends the ADU for `pdu` to `out`.
pub fn encode(unit: u8, pdu: &[u8], out: &mut Vec<u8>) {
    let _ = (unit, pdu, out);
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
    pub fn new(baud_rate: u32, bits_per_char: u32) -> Self {
        let _ = (baud_rate, bits_per_char);
        Self {
            t1_5: Duration::from_micros(750),
            t3_5: Duration::from_micros(1750),
        }
    }
}
