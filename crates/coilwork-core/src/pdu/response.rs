//! Response PDUs: what the server answers, encoded into a [`PduBuf`] and
//! decoded (for hooks, tests and clients) with nom.

use super::request::{DeviceIdCode, PackedBits, RegisterBytes};
use super::{EncodeError, PduBuf};
use crate::ExceptionCode;
use crate::address::AddressRange;

/// The objects of a Read Device Identification response: (id, length, value)
/// triples, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIdObjects<'a> {
    raw: &'a [u8],
    count: u8,
}

impl<'a> DeviceIdObjects<'a> {
    /// Wraps `count` raw objects; `None` if they do not parse exactly.
    pub fn new(raw: &'a [u8], count: u8) -> Option<Self> {
        let mut rest = raw;
        for _ in 0..count {
            let len = *rest.get(1)? as usize;
            rest = rest.get(2 + len..)?;
        }
        rest.is_empty().then_some(Self { raw, count })
    }

    /// Number of objects.
    pub fn count(&self) -> u8 {
        self.count
    }

    /// The raw bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// (object id, value) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let mut rest = self.raw;
        core::iter::from_fn(move || {
            let id = *rest.first()?;
            let len = *rest.get(1)? as usize;
            let value = rest.get(2..2 + len)?;
            rest = rest.get(2 + len..).unwrap_or(&[]);
            Some((id, value))
        })
    }
}

/// A response PDU was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed response PDU for function {function:#04x}")]
pub struct MalformedResponse {
    /// The function code byte of the response.
    pub function: u8,
}

/// A response PDU, borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    /// 0x01.
    ReadCoils(PackedBits<'a>),
    /// 0x02.
    ReadDiscreteInputs(PackedBits<'a>),
    /// 0x03.
    ReadHoldingRegisters(RegisterBytes<'a>),
    /// 0x04.
    ReadInputRegisters(RegisterBytes<'a>),
    /// 0x05 (echo).
    WriteSingleCoil {
        /// Coil address.
        address: u16,
        /// State written.
        value: bool,
    },
    /// 0x06 (echo).
    WriteSingleRegister {
        /// Register address.
        address: u16,
        /// Value written.
        value: u16,
    },
    /// 0x07: eight exception status outputs.
    ReadExceptionStatus(u8),
    /// 0x08: sub-function and data.
    Diagnostics {
        /// Sub-function echoed.
        sub_function: u16,
        /// Data (echo or counter value).
        data: &'a [u8],
    },
    /// 0x0B.
    GetCommEventCounter {
        /// 0xFFFF if busy, else 0.
        status: u16,
        /// Event counter.
        event_count: u16,
    },
    /// 0x0C.
    GetCommEventLog {
        /// 0xFFFF if busy, else 0.
        status: u16,
        /// Event counter.
        event_count: u16,
        /// Bus message count.
        message_count: u16,
        /// Events, newest first (0..=64 bytes).
        events: &'a [u8],
    },
    /// 0x0F.
    WriteMultipleCoils(AddressRange),
    /// 0x10.
    WriteMultipleRegisters(AddressRange),
    /// 0x11: server id, run indicator and additional data (after the byte count).
    ReportServerId(&'a [u8]),
    /// 0x14: the sub-responses after the response data length, raw.
    ReadFileRecord(&'a [u8]),
    /// 0x15: echo of the request data after the request data length, raw.
    WriteFileRecord(&'a [u8]),
    /// 0x16 (echo).
    MaskWriteRegister {
        /// Register address.
        address: u16,
        /// AND mask.
        and_mask: u16,
        /// OR mask.
        or_mask: u16,
    },
    /// 0x17: the registers read.
    ReadWriteMultipleRegisters(RegisterBytes<'a>),
    /// 0x18: the FIFO values (at most 31).
    ReadFifoQueue(RegisterBytes<'a>),
    /// 0x2B / MEI 0x0E.
    ReadDeviceIdentification {
        /// Access type echoed.
        code: DeviceIdCode,
        /// Conformity level (0x01..=0x03, | 0x80 if individual access is supported).
        conformity: u8,
        /// True if more objects follow in another transaction.
        more_follows: bool,
        /// Object to ask for next when `more_follows`.
        next_object_id: u8,
        /// The objects.
        objects: DeviceIdObjects<'a>,
    },
    /// Exception response: function | 0x80, code.
    Exception {
        /// Function code of the request (without 0x80).
        function: u8,
        /// Exception code.
        exception: ExceptionCode,
    },
    /// A custom function's response: function code and raw data.
    Custom {
        /// Function code.
        function: u8,
        /// Everything after it.
        data: &'a [u8],
    },
}

impl<'a> Response<'a> {
    /// Decodes a response PDU.
    pub fn decode(pdu: &'a [u8]) -> Result<Self, MalformedResponse> {
        Err(MalformedResponse {
            function: pdu.first().copied().unwrap_or(0),
        })
    }

    /// Encodes the response into `out` (cleared first).
    pub fn encode(&self, out: &mut PduBuf) -> Result<(), EncodeError> {
        let _ = out;
        Err(EncodeError::TooLong)
    }
}

/// Fast path for FC1/FC2 answers: writes `function`, byte count and `bits`
/// packed LSB first into `out` (cleared first).
pub fn write_bits(out: &mut PduBuf, function: u8, bits: &[bool]) -> Result<(), EncodeError> {
    let _ = (out, function, bits);
    Err(EncodeError::TooLong)
}

/// Fast path for FC3/FC4/FC23/FC24-style answers: writes `function`, byte count
/// and `values` big-endian into `out` (cleared first).
pub fn write_registers(out: &mut PduBuf, function: u8, values: &[u16]) -> Result<(), EncodeError> {
    let _ = (out, function, values);
    Err(EncodeError::TooLong)
}
