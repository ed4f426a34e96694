//! Request PDUs: what a client asks, decoded with nom, encoded into a [`PduBuf`].

use super::{DecodeError, EncodeError, PduBuf};
use crate::address::AddressRange;
use crate::diagnostics::DiagnosticCounter;

/// Coil values packed 8 to a byte, least significant bit first, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedBits<'a> {
    bytes: &'a [u8],
    count: u16,
}

impl<'a> PackedBits<'a> {
    /// Wraps `bytes` holding `count` bits; `None` unless `bytes.len() == ceil(count / 8)`.
    pub fn new(bytes: &'a [u8], count: u16) -> Option<Self> {
        if bytes.len() == (count as usize).div_ceil(8) {
            Some(Self { bytes, count })
        } else {
            None
        }
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if there are no bits.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The packed bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Bit `i`; `None` past the end.
    pub fn get(&self, i: usize) -> Option<bool> {
        if i >= self.len() {
            return None;
        }
        self.bytes.get(i / 8).map(|b| b & (1 << (i % 8)) != 0)
    }

    /// The bits in order.
    pub fn iter(&self) -> impl Iterator<Item = bool> + 'a {
        let bytes = self.bytes;
        (0..self.count as usize).map(move |i| bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
    }
}

/// Register values as big-endian byte pairs, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterBytes<'a> {
    bytes: &'a [u8],
}

impl<'a> RegisterBytes<'a> {
    /// Wraps `bytes`; `None` if the length is odd.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() % 2 == 0 {
            Some(Self { bytes })
        } else {
            None
        }
    }

    /// Number of registers.
    pub fn len(&self) -> usize {
        self.bytes.len() / 2
    }

    /// True if there are no registers.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Register `i`; `None` past the end.
    pub fn get(&self, i: usize) -> Option<u16> {
        let b = self.bytes.get(i * 2..i * 2 + 2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// The registers in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]))
    }

    /// Copies the registers into `out` (which must be at least `len()` long);
    /// returns the filled part.
    pub fn copy_into<'o>(&self, out: &'o mut [u16]) -> &'o mut [u16] {
        let n = self.len().min(out.len());
        for (dst, c) in out.iter_mut().zip(self.bytes.chunks_exact(2)) {
            *dst = u16::from_be_bytes([c[0], c[1]]);
        }
        &mut out[..n]
    }
}

/// Which objects a Read Device Identification request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DeviceIdCode {
    /// 0x01: basic objects (0x00..=0x02), stream access.
    Basic = 1,
    /// 0x02: regular objects (0x00..=0x06 and 0x07..=0x7F), stream access.
    Regular = 2,
    /// 0x03: extended objects (0x80..=0xFF too), stream access.
    Extended = 3,
    /// 0x04: one specific object, individual access.
    Individual = 4,
}

/// One file record reference of FC20/FC21: file, first record, record count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileRecordRef {
    /// File number (1..=0xFFFF).
    pub file: u16,
    /// Starting record number (0..=0x270F).
    pub record: u16,
    /// Number of 16-bit records.
    pub length: u16,
}

/// The sub-requests of a Read File Record request (validated at decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRecordReads<'a> {
    raw: &'a [u8],
}

impl<'a> FileRecordReads<'a> {
    /// Wraps raw 7-byte sub-requests that have been validated.
    pub(crate) fn from_validated(raw: &'a [u8]) -> Self {
        Self { raw }
    }

    /// The raw sub-request bytes (after the byte count).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The references in order.
    pub fn iter(&self) -> impl Iterator<Item = FileRecordRef> + 'a {
        self.raw.chunks_exact(7).map(|c| FileRecordRef {
            file: u16::from_be_bytes([c[1], c[2]]),
            record: u16::from_be_bytes([c[3], c[4]]),
            length: u16::from_be_bytes([c[5], c[6]]),
        })
    }
}

/// The sub-requests of a Write File Record request (validated at decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRecordWrites<'a> {
    raw: &'a [u8],
}

impl<'a> FileRecordWrites<'a> {
    /// Wraps raw sub-requests that have been validated.
    pub(crate) fn from_validated(raw: &'a [u8]) -> Self {
        Self { raw }
    }

    /// The raw sub-request bytes (after the request data length).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The references with their data, in order.
    pub fn iter(&self) -> impl Iterator<Item = (FileRecordRef, RegisterBytes<'a>)> + 'a {
        let mut rest = self.raw;
        core::iter::from_fn(move || {
            let head = rest.get(..7)?;
            let r = FileRecordRef {
                file: u16::from_be_bytes([head[1], head[2]]),
                record: u16::from_be_bytes([head[3], head[4]]),
                length: u16::from_be_bytes([head[5], head[6]]),
            };
            let n = 7 + r.length as usize * 2;
            let data = rest.get(7..n)?;
            rest = rest.get(n..).unwrap_or(&[]);
            Some((r, RegisterBytes { bytes: data }))
        })
    }
}

/// A diagnostics (FC 0x08) sub-function request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagnosticRequest<'a> {
    /// 0x00: echo the data.
    ReturnQueryData(&'a [u8]),
    /// 0x01: restart communications (leave listen-only); `clear_log` for data 0xFF00.
    RestartCommunications {
        /// True if the event log is cleared too.
        clear_log: bool,
    },
    /// 0x02: return the diagnostic register.
    ReturnDiagnosticRegister,
    /// 0x03: change the ASCII end-of-message delimiter.
    ChangeAsciiDelimiter(u8),
    /// 0x04: force listen-only mode (never answered).
    ForceListenOnly,
    /// 0x0A: clear counters and the diagnostic register.
    ClearCounters,
    /// 0x0B..=0x12: return one counter.
    ReturnCounter(DiagnosticCounter),
    /// 0x14: clear the overrun counter and flag.
    ClearOverrunCounter,
}

impl DiagnosticRequest<'_> {
    /// The sub-function code.
    pub fn sub_function(&self) -> u16 {
        match self {
            Self::ReturnQueryData(_) => 0x00,
            Self::RestartCommunications { .. } => 0x01,
            Self::ReturnDiagnosticRegister => 0x02,
            Self::ChangeAsciiDelimiter(_) => 0x03,
            Self::ForceListenOnly => 0x04,
            Self::ClearCounters => 0x0A,
            Self::ReturnCounter(c) => c.sub_function(),
            Self::ClearOverrunCounter => 0x14,
        }
    }
}

/// A decoded request PDU, borrowing its data from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// 0x01.
    ReadCoils(AddressRange),
    /// 0x02.
    ReadDiscreteInputs(AddressRange),
    /// 0x03.
    ReadHoldingRegisters(AddressRange),
    /// 0x04.
    ReadInputRegisters(AddressRange),
    /// 0x05 (value 0xFF00 = on, 0x0000 = off; anything else is exception 03).
    WriteSingleCoil {
        /// Coil address.
        address: u16,
        /// New state.
        value: bool,
    },
    /// 0x06.
    WriteSingleRegister {
        /// Register address.
        address: u16,
        /// New value.
        value: u16,
    },
    /// 0x07.
    ReadExceptionStatus,
    /// 0x08.
    Diagnostics(DiagnosticRequest<'a>),
    /// 0x0B.
    GetCommEventCounter,
    /// 0x0C.
    GetCommEventLog,
    /// 0x0F.
    WriteMultipleCoils {
        /// Addresses written.
        range: AddressRange,
        /// New states, `range.count()` of them.
        values: PackedBits<'a>,
    },
    /// 0x10.
    WriteMultipleRegisters {
        /// Addresses written.
        range: AddressRange,
        /// New values, `range.count()` of them.
        values: RegisterBytes<'a>,
    },
    /// 0x11.
    ReportServerId,
    /// 0x14.
    ReadFileRecord(FileRecordReads<'a>),
    /// 0x15.
    WriteFileRecord(FileRecordWrites<'a>),
    /// 0x16: result = (current AND and_mask) OR (or_mask AND NOT and_mask).
    MaskWriteRegister {
        /// Register address.
        address: u16,
        /// AND mask.
        and_mask: u16,
        /// OR mask.
        or_mask: u16,
    },
    /// 0x17: the write is performed before the read.
    ReadWriteMultipleRegisters {
        /// Registers to read.
        read: AddressRange,
        /// Registers to write.
        write: AddressRange,
        /// Values to write, `write.count()` of them.
        values: RegisterBytes<'a>,
    },
    /// 0x18.
    ReadFifoQueue {
        /// FIFO pointer address.
        address: u16,
    },
    /// 0x2B / MEI 0x0E.
    ReadDeviceIdentification {
        /// Access type.
        code: DeviceIdCode,
        /// First object (stream access) or the object (individual access).
        object_id: u8,
    },
    /// Any code that is not a public function code: the engine hands it to a
    /// registered custom handler, or answers exception 01.
    Custom {
        /// Function code.
        function: u8,
        /// Everything after the function code.
        data: &'a [u8],
    },
}

impl<'a> Request<'a> {
    /// Decodes a request PDU (function code first). Runs the spec's checks in
    /// order: supported function (01), quantity/value/byte count (03),
    /// address + quantity within 65536 (02). A PDU shorter or longer than its
    /// function requires is exception 03. An empty PDU is exception 01 with
    /// function 0.
    pub fn decode(pdu: &'a [u8]) -> Result<Self, DecodeError> {
        let _ = pdu;
        Err(DecodeError {
            function: 0,
            exception: crate::ExceptionCode::IllegalFunction,
        })
    }

    /// The function code.
    pub fn function(&self) -> u8 {
        match self {
            Self::ReadCoils(_) => 0x01,
            Self::ReadDiscreteInputs(_) => 0x02,
            Self::ReadHoldingRegisters(_) => 0x03,
            Self::ReadInputRegisters(_) => 0x04,
            Self::WriteSingleCoil { .. } => 0x05,
            Self::WriteSingleRegister { .. } => 0x06,
            Self::ReadExceptionStatus => 0x07,
            Self::Diagnostics(_) => 0x08,
            Self::GetCommEventCounter => 0x0B,
            Self::GetCommEventLog => 0x0C,
            Self::WriteMultipleCoils { .. } => 0x0F,
            Self::WriteMultipleRegisters { .. } => 0x10,
            Self::ReportServerId => 0x11,
            Self::ReadFileRecord(_) => 0x14,
            Self::WriteFileRecord(_) => 0x15,
            Self::MaskWriteRegister { .. } => 0x16,
            Self::ReadWriteMultipleRegisters { .. } => 0x17,
            Self::ReadFifoQueue { .. } => 0x18,
            Self::ReadDeviceIdentification { .. } => 0x2B,
            Self::Custom { function, .. } => *function,
        }
    }

    /// True for requests that change data (the ones a broadcast executes).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Self::WriteSingleCoil { .. }
                | Self::WriteSingleRegister { .. }
                | Self::WriteMultipleCoils { .. }
                | Self::WriteMultipleRegisters { .. }
                | Self::WriteFileRecord(_)
                | Self::MaskWriteRegister { .. }
                | Self::ReadWriteMultipleRegisters { .. }
        )
    }

    /// Encodes the request into `out` (cleared first).
    pub fn encode(&self, out: &mut PduBuf) -> Result<(), EncodeError> {
        let _ = out;
        Err(EncodeError::TooLong)
    }
}
