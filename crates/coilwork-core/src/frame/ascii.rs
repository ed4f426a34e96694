//! ASCII framing: ':' then hex pairs of address, PDU and LRC, ended by CR and
//! a delimiter (LF by default, changeable by diagnostics sub-function 0x03).

use super::Decoded;

/// Default end-of-message delimiter after CR.
pub const DEFAULT_DELIMITER: u8 = b'\n';

/// Looks at the front of `buf` for one ASCII frame ending in CR `delimiter`.
/// The binary address + PDU is written into `scratch` (at least 256 bytes);
/// in a returned [`Decoded::Frame`] the `pdu` range indexes `scratch`.
pub fn decode(buf: &[u8], delimiter: u8, scratch: &mut [u8]) -> Decoded {
    let _ = (buf, delimiter, scratch);
    Decoded::Incomplete
}

/// Appends the ADU for `pdu` to `out`, ended by CR `delimiter`.
pub fn encode(unit: u8, pdu: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    let _ = (unit, pdu, delimiter, out);
}
