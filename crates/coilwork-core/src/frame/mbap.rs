//! MBAP framing: transaction id, protocol id 0, length, unit id, PDU.

use super::Decoded;

/// Size of the MBAP header (transaction id, protocol id, length, unit id).
pub const HEADER_LEN: usize = 7;

/// Looks at the front of `buf` for one MBAP frame.
pub fn decode(buf: &[u8]) -> Decoded {
    let _ = buf;
    Decoded::Incomplete
}

/// Appends the ADU for `pdu` to `out`.
pub fn encode(transaction_id: u16, unit: u8, pdu: &[u8], out: &mut Vec<u8>) {
    let _ = (transaction_id, unit, pdu, out);
}
