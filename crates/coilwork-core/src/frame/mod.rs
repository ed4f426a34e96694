//! Frame codecs: MBAP (TCP, UDP, TLS), RTU and ASCII.
//!
//! Decoders are pure functions over a byte slice: they look at the bytes
//! buffered so far and say whether a whole frame sits at the front, how many
//! bytes to drop, or that more bytes are needed. The
//! [`Connection`](crate::Connection) owns the buffer, so any split of the byte stream gives
//! the same frames as the stream fed whole. Encoders append a whole ADU to a
//! caller's `Vec<u8>` (which keeps its capacity, so steady state allocates
//! nothing).

pub mod ascii;
pub mod checksum;
pub mod mbap;
pub mod rtu;

use crate::error::FrameError;
use core::ops::Range;

/// Which framing a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// Modbus Application Protocol header (TCP, UDP, TLS).
    Mbap,
    /// RTU: binary with CRC-16, over a serial line or any byte stream.
    Rtu,
    /// ASCII: ':' + hex + LRC + CR LF.
    Ascii,
}

/// Result of looking at the front of a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame sits at the front of the buffer.
    Frame {
        /// Bytes of the buffer the frame used (drop them afterwards).
        consumed: usize,
        /// Unit identifier (MBAP unit id or serial address).
        unit: u8,
        /// MBAP transaction id; 0 for RTU and ASCII.
        transaction_id: u16,
        /// Where the PDU (function code + data) lies in the buffer. For
        /// ASCII this indexes the decoder's scratch output, see
        /// [`ascii::decode`].
        pdu: Range<usize>,
    },
    /// The front of the buffer may become a frame: wait for more bytes.
    Incomplete,
    /// Drop `consumed` bytes from the front (garbage, bad checksum) and look again.
    Skip {
        /// Bytes to drop.
        consumed: usize,
        /// Why they were dropped (counted by the diagnostics).
        error: FrameError,
    },
    /// The stream can never be valid again (MBAP only): close the connection.
    Fatal(FrameError),
}

/// Length of a request PDU as far as the framing rules can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduLength {
    /// The PDU is exactly this many bytes (function code included).
    Exact(usize),
    /// More bytes of the PDU must be seen before its length is known.
    NeedMore,
    /// The function code has no length rule (unknown code): frame by CRC scan.
    Unknown,
}

/// Largest PDU the protocol allows (function code + data).
pub const MAX_PDU: usize = 253;
/// Largest RTU ADU: address + PDU + CRC.
pub const MAX_RTU_ADU: usize = 256;
/// Largest MBAP ADU: 7-byte header + PDU.
pub const MAX_MBAP_ADU: usize = 260;
/// Largest ASCII ADU in characters: ':' + 2 × (address + PDU + LRC) + CR LF.
pub const MAX_ASCII_ADU: usize = 513;

/// Largest request PDU a byte-counted request can carry: FC23's 10 bytes
/// before its data plus a byte count of 255. Such a request is past
/// [`MAX_PDU`] and always gets exception 03, but it is framed whole so the
/// client gets that answer instead of a dropped connection.
pub const MAX_COUNTED_PDU: usize = 265;
/// Largest RTU ADU of a byte-counted request: address + PDU + CRC.
pub const MAX_COUNTED_RTU_ADU: usize = MAX_COUNTED_PDU + 3;
/// Largest MBAP ADU of a byte-counted request: 7-byte header + PDU.
pub const MAX_COUNTED_MBAP_ADU: usize = MAX_COUNTED_PDU + 7;
/// Largest ASCII ADU of a byte-counted request, in characters.
pub const MAX_COUNTED_ASCII_ADU: usize = 1 + 2 * (MAX_COUNTED_PDU + 2) + 2;

/// For a request that carries a byte count (FC15, FC16, FC20, FC21, FC23):
/// `(base, at)`, the PDU is `base` bytes plus the count found at `pdu[at]`.
pub(crate) fn byte_counted(function: u8) -> Option<(usize, usize)> {
    match function {
        // Write multiple coils / registers: address, quantity, byte count, values.
        0x0F | 0x10 => Some((6, 5)),
        // Read / write file record: byte count, sub-requests.
        0x14 | 0x15 => Some((2, 1)),
        // Read/write multiple registers: read addr/qty, write addr/qty, byte count, values.
        0x17 => Some((10, 9)),
        _ => None,
    }
}
