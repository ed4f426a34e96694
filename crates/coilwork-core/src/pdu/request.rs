//! Request PDUs: what a client asks, decoded with nom, encoded into a [`PduBuf`].
//!
//! Decisions where the spec leaves room (Modbus Application Protocol v1.1b3):
//! - Function byte 0x00 or >= 0x80 is not a function code at all: exception 01
//!   (never [`Request::Custom`], since no handler can be registered for it).
//!   Every other code the crate does not implement, including reserved public
//!   codes such as 0x09, decodes to [`Request::Custom`]; the engine answers 01
//!   when no handler is registered.
//! - 0x2B checks the MEI type before the length: a missing MEI byte is 03, an
//!   MEI type other than 0x0E is 01, then the length must be exactly 4 bytes.
//! - FC8: an unsupported sub-function is 01 before its data is looked at; the
//!   echo (0x00) accepts 0..=250 data bytes (the PDU limit).
//! - FC20: every 03 check (byte count, then the 253-byte response limit) comes
//!   before the 02 checks on the references, following the general order
//!   "value before address". A record length of 0 is 02 (as an address range
//!   of 0 records is not a valid reference).
//! - FC21: a record length of 0 is 02 like FC20; structural errors (lengths that
//!   do not add up) are 03 and win over 02 wherever they occur.
//! - FC23: the read range is checked for 02 before the write range.

use nom::Parser;
use nom::bytes::complete::take;
use nom::combinator::{all_consuming, rest};
use nom::number::complete::{be_u8, be_u16};

use super::{DecodeError, EncodeError, PduBuf};
use crate::ExceptionCode;
use crate::address::AddressRange;
use crate::diagnostics::DiagnosticCounter;
use crate::frame::MAX_PDU;

/// nom result with no error payload: every parse failure maps to one exception.
pub(super) type PResult<'a, T> = nom::IResult<&'a [u8], T, ()>;

/// One byte.
pub(super) fn u8p(i: &[u8]) -> PResult<'_, u8> {
    be_u8(i)
}

/// One big-endian u16.
pub(super) fn u16p(i: &[u8]) -> PResult<'_, u16> {
    be_u16(i)
}

/// Everything left.
pub(super) fn restp(i: &[u8]) -> PResult<'_, &[u8]> {
    rest(i)
}

/// Exactly `n` bytes.
pub(super) fn takep(i: &[u8], n: usize) -> PResult<'_, &[u8]> {
    take(n)(i)
}

/// Runs `p` over all of `data`; `None` if it fails or leaves bytes over.
pub(super) fn exact<'a, O>(data: &'a [u8], p: impl Parser<&'a [u8], Output = O, Error = ()>) -> Option<O> {
    all_consuming(p).parse(data).ok().map(|(_, o)| o)
}

/// Largest read quantity of FC1/FC2.
pub const MAX_READ_BITS: u16 = 0x07D0;
/// Largest read quantity of FC3/FC4/FC23.
pub const MAX_READ_REGISTERS: u16 = 0x007D;
/// Largest write quantity of FC15.
pub const MAX_WRITE_BITS: u16 = 0x07B0;
/// Largest write quantity of FC16.
pub const MAX_WRITE_REGISTERS: u16 = 0x007B;
/// Largest write quantity of FC23.
pub const MAX_READ_WRITE_REGISTERS: u16 = 0x0079;
/// Largest record number of a file record reference.
pub const MAX_FILE_RECORD: u16 = 0x270F;
/// File record reference type (always 6).
pub const FILE_REFERENCE_TYPE: u8 = 6;

/// True if a file record reference is within the spec's limits (FC20/FC21).
fn file_ref_ok(reference: u8, file: u16, record: u16, length: u16) -> bool {
    reference == FILE_REFERENCE_TYPE
        && file >= 1
        && record <= MAX_FILE_RECORD
        && length >= 1
        && u32::from(record) + u32::from(length) <= 10_000
}

/// Parses one file record header: reference type, file, record, length.
fn file_head(i: &[u8]) -> PResult<'_, (u8, u16, u16, u16)> {
    (u8p, u16p, u16p, u16p).parse(i)
}

/// Checks FC20 sub-requests (after the byte count). `Err(03)` for a bad byte
/// count or a response that would not fit 253 bytes, `Err(02)` for a bad
/// reference.
fn check_reads(raw: &[u8]) -> Result<(), ExceptionCode> {
    let n = raw.len();
    if !(0x07..=0xF5).contains(&n) || !n.is_multiple_of(7) {
        return Err(ExceptionCode::IllegalDataValue);
    }
    // Response: function + data length, then per sub-response length byte,
    // reference type and 2 bytes per record. At most 35 sub-requests of at
    // most 65535 records each: no u32 overflow.
    let mut response = 2u32;
    for c in raw.chunks_exact(7) {
        let (_, (_, _, _, length)) = file_head(c).map_err(|_| ExceptionCode::IllegalDataValue)?;
        response += 2 + 2 * u32::from(length);
    }
    if response > MAX_PDU as u32 {
        return Err(ExceptionCode::IllegalDataValue);
    }
    for c in raw.chunks_exact(7) {
        let (_, (reference, file, record, length)) = file_head(c).map_err(|_| ExceptionCode::IllegalDataValue)?;
        if !file_ref_ok(reference, file, record, length) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
    }
    Ok(())
}

/// Walks FC21 sub-requests (after the data length). `None` if they do not
/// parse exactly; else whether every reference passes `ok` (reference type,
/// file, record, length).
pub(super) fn scan_writes(raw: &[u8], ref_ok: fn(u8, u16, u16, u16) -> bool) -> Option<bool> {
    let mut rest = raw;
    let mut ok = true;
    while !rest.is_empty() {
        let (r, (reference, file, record, length)) = file_head(rest).ok()?;
        // ok: length <= 65535, so 2 * length fits any usize of 32 bits or more.
        let (r, _) = takep(r, usize::from(length) * 2).ok()?;
        ok &= ref_ok(reference, file, record, length);
        rest = r;
    }
    Some(ok)
}

/// Checks FC21 sub-requests: 03 for a bad length or structure, 02 for a bad reference.
fn check_writes(raw: &[u8]) -> Result<(), ExceptionCode> {
    if !(0x09..=0xFB).contains(&raw.len()) {
        return Err(ExceptionCode::IllegalDataValue);
    }
    match scan_writes(raw, file_ref_ok) {
        None => Err(ExceptionCode::IllegalDataValue),
        Some(false) => Err(ExceptionCode::IllegalDataAddress),
        Some(true) => Ok(()),
    }
}

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
        if bytes.len().is_multiple_of(2) {
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
        let at = i.checked_mul(2)?;
        let b = self.bytes.get(at..at.checked_add(2)?)?;
        // ok: `b` has exactly 2 bytes.
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
    /// Validates raw 7-byte sub-requests (the bytes after the byte count) as
    /// FC20 decoding does; `None` if a request holding them would be refused.
    pub fn new(raw: &'a [u8]) -> Option<Self> {
        check_reads(raw).ok().map(|()| Self { raw })
    }

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
    /// Validates raw sub-requests (the bytes after the request data length) as
    /// FC21 decoding does; `None` if a request holding them would be refused.
    pub fn new(raw: &'a [u8]) -> Option<Self> {
        check_writes(raw).ok().map(|()| Self { raw })
    }

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
    /// Appends the sub-function code and its data (after the function code).
    fn encode(&self, out: &mut PduBuf) -> Result<(), EncodeError> {
        out.push_u16(self.sub_function())?;
        match *self {
            Self::ReturnQueryData(data) => {
                if data.len() > MAX_PDU - 3 {
                    return Err(EncodeError::TooLong);
                }
                out.extend(data)
            }
            Self::RestartCommunications { clear_log } => out.push_u16(if clear_log { 0xFF00 } else { 0x0000 }),
            Self::ChangeAsciiDelimiter(c) => out.extend(&[c, 0x00]),
            Self::ReturnDiagnosticRegister
            | Self::ForceListenOnly
            | Self::ClearCounters
            | Self::ReturnCounter(_)
            | Self::ClearOverrunCounter => out.push_u16(0x0000),
        }
    }

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
    #[inline]
    pub fn decode(pdu: &'a [u8]) -> Result<Self, DecodeError> {
        // The commonest requests, FC3, FC4 and FC16, checked inline.
        let result = match *pdu {
            [0x03, ref data @ ..] => read_range(data, MAX_READ_REGISTERS).map(Self::ReadHoldingRegisters),
            [0x04, ref data @ ..] => read_range(data, MAX_READ_REGISTERS).map(Self::ReadInputRegisters),
            [0x10, ref data @ ..] => write_registers(data),
            _ => return Self::decode_any(pdu),
        };
        result.map_err(|exception| DecodeError {
            function: pdu.first().copied().unwrap_or(0),
            exception,
        })
    }

    /// [`Request::decode`] for any function. Kept out of line: inlined, its
    /// register saves were paid by every FC3/FC4/FC16 decode too.
    #[inline(never)]
    fn decode_any(pdu: &'a [u8]) -> Result<Self, DecodeError> {
        let Some((&function, data)) = pdu.split_first() else {
            return Err(DecodeError {
                function: 0,
                exception: ExceptionCode::IllegalFunction,
            });
        };
        Self::decode_data(function, data).map_err(|exception| DecodeError { function, exception })
    }

    /// Decodes the data of a request for `function`.
    fn decode_data(function: u8, data: &'a [u8]) -> Result<Self, ExceptionCode> {
        use ExceptionCode::{IllegalDataValue as Value, IllegalFunction};
        Ok(match function {
            0x01 => Self::ReadCoils(read_range(data, MAX_READ_BITS)?),
            0x02 => Self::ReadDiscreteInputs(read_range(data, MAX_READ_BITS)?),
            0x03 => Self::ReadHoldingRegisters(read_range(data, MAX_READ_REGISTERS)?),
            0x04 => Self::ReadInputRegisters(read_range(data, MAX_READ_REGISTERS)?),
            0x05 => {
                let (address, raw) = two_u16(data).ok_or(Value)?;
                let value = match raw {
                    0xFF00 => true,
                    0x0000 => false,
                    _ => return Err(Value),
                };
                Self::WriteSingleCoil { address, value }
            }
            0x06 => {
                let (address, value) = two_u16(data).ok_or(Value)?;
                Self::WriteSingleRegister { address, value }
            }
            0x07 => no_data(data, Self::ReadExceptionStatus)?,
            0x08 => Self::Diagnostics(diagnostic(data)?),
            0x0B => no_data(data, Self::GetCommEventCounter)?,
            0x0C => no_data(data, Self::GetCommEventLog)?,
            0x0F => write_coils(data)?,
            0x10 => write_registers(data)?,
            0x11 => no_data(data, Self::ReportServerId)?,
            0x14 => file_reads(data)?,
            0x15 => file_writes(data)?,
            0x16 => {
                let (address, and_mask, or_mask) = exact(data, (u16p, u16p, u16p)).ok_or(Value)?;
                Self::MaskWriteRegister {
                    address,
                    and_mask,
                    or_mask,
                }
            }
            0x17 => read_write_registers(data)?,
            0x18 => {
                let address = exact(data, u16p).ok_or(Value)?;
                Self::ReadFifoQueue { address }
            }
            0x2B => device_identification(data)?,
            0x00 | 0x80..=0xFF => return Err(IllegalFunction),
            // Exactly the codes `FunctionCode::is_standard` rejects (tested).
            _ => Self::Custom { function, data },
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
    ///
    /// Refuses (with [`EncodeError::OutOfRange`]) what [`Request::decode`] would
    /// refuse, so every encoded request decodes back to `self`.
    pub fn encode(&self, out: &mut PduBuf) -> Result<(), EncodeError> {
        out.clear();
        out.push(self.function())?;
        match *self {
            Self::ReadCoils(r) | Self::ReadDiscreteInputs(r) => push_range(out, r, MAX_READ_BITS),
            Self::ReadHoldingRegisters(r) | Self::ReadInputRegisters(r) => push_range(out, r, MAX_READ_REGISTERS),
            Self::WriteSingleCoil { address, value } => {
                out.push_u16(address)?;
                out.push_u16(if value { 0xFF00 } else { 0x0000 })
            }
            Self::WriteSingleRegister { address, value } => {
                out.push_u16(address)?;
                out.push_u16(value)
            }
            Self::ReadExceptionStatus | Self::GetCommEventCounter | Self::GetCommEventLog | Self::ReportServerId => {
                Ok(())
            }
            Self::Diagnostics(d) => d.encode(out),
            Self::WriteMultipleCoils { range, values } => {
                if values.len() != range.len() {
                    return Err(EncodeError::OutOfRange("coil count differs from range"));
                }
                push_range(out, range, MAX_WRITE_BITS)?;
                push_counted(out, values.bytes())
            }
            Self::WriteMultipleRegisters { range, values } => {
                if values.len() != range.len() {
                    return Err(EncodeError::OutOfRange("register count differs from range"));
                }
                push_range(out, range, MAX_WRITE_REGISTERS)?;
                push_counted(out, values.bytes())
            }
            Self::ReadFileRecord(reads) => push_counted(out, reads.raw()),
            Self::WriteFileRecord(writes) => push_counted(out, writes.raw()),
            Self::MaskWriteRegister {
                address,
                and_mask,
                or_mask,
            } => {
                out.push_u16(address)?;
                out.push_u16(and_mask)?;
                out.push_u16(or_mask)
            }
            Self::ReadWriteMultipleRegisters { read, write, values } => {
                if values.len() != write.len() {
                    return Err(EncodeError::OutOfRange("register count differs from write range"));
                }
                push_range(out, read, MAX_READ_REGISTERS)?;
                push_range(out, write, MAX_READ_WRITE_REGISTERS)?;
                push_counted(out, values.bytes())
            }
            Self::ReadFifoQueue { address } => out.push_u16(address),
            Self::ReadDeviceIdentification { code, object_id } => out.extend(&[0x0E, code as u8, object_id]),
            Self::Custom { function, data } => {
                if function == 0 || function >= 0x80 || crate::FunctionCode(function).is_standard() {
                    return Err(EncodeError::OutOfRange("custom function code"));
                }
                out.extend(data)
            }
        }
    }
}

/// Exactly two big-endian u16s (the hot-path twin of `exact(data, (u16p, u16p))`,
/// without nom's combinator overhead).
#[inline]
fn two_u16(data: &[u8]) -> Option<(u16, u16)> {
    match *data {
        [a0, a1, b0, b1] => Some((u16::from_be_bytes([a0, a1]), u16::from_be_bytes([b0, b1]))),
        _ => None,
    }
}

/// FC15/FC16 header: start, quantity, byte count, then every byte left (the
/// hot-path twin of `exact(data, (u16p, u16p, u8p, restp))`).
#[inline]
fn write_header(data: &[u8]) -> Option<(u16, u16, u8, &[u8])> {
    let (&[s0, s1, q0, q1, count], values) = data.split_first_chunk::<5>()?;
    Some((
        u16::from_be_bytes([s0, s1]),
        u16::from_be_bytes([q0, q1]),
        count,
        values,
    ))
}

/// FC16: start, quantity, byte count and values; quantity 1..=123 and a byte
/// count of twice that, matching the values (03), then range (02).
#[inline]
fn write_registers(data: &[u8]) -> Result<Request<'_>, ExceptionCode> {
    use ExceptionCode::{IllegalDataAddress as Addr, IllegalDataValue as Value};
    let (start, quantity, count, values) = write_header(data).ok_or(Value)?;
    if !(1..=MAX_WRITE_REGISTERS).contains(&quantity)
        || usize::from(count) != usize::from(quantity) * 2
        || values.len() != usize::from(count)
    {
        return Err(Value);
    }
    let values = RegisterBytes::new(values).ok_or(Value)?;
    let range = AddressRange::new(start, quantity).ok_or(Addr)?;
    Ok(Request::WriteMultipleRegisters { range, values })
}

/// FC15: start, quantity 1..=1968, byte count, packed values.
fn write_coils(data: &[u8]) -> Result<Request<'_>, ExceptionCode> {
    use ExceptionCode::{IllegalDataAddress as Addr, IllegalDataValue as Value};
    let (start, quantity, count, values) = write_header(data).ok_or(Value)?;
    if !(1..=MAX_WRITE_BITS).contains(&quantity)
        || usize::from(count) != usize::from(quantity).div_ceil(8)
        || values.len() != usize::from(count)
    {
        return Err(Value);
    }
    let values = PackedBits::new(values, quantity).ok_or(Value)?;
    let range = AddressRange::new(start, quantity).ok_or(Addr)?;
    Ok(Request::WriteMultipleCoils { range, values })
}

/// FC20 and FC21: a byte count and exactly that many bytes of sub-requests.
fn file_data(data: &[u8]) -> Result<&[u8], ExceptionCode> {
    let (count, raw) = exact(data, (u8p, restp)).ok_or(ExceptionCode::IllegalDataValue)?;
    if usize::from(count) != raw.len() {
        return Err(ExceptionCode::IllegalDataValue);
    }
    Ok(raw)
}

/// FC20: byte count, 7-byte sub-requests.
fn file_reads(data: &[u8]) -> Result<Request<'_>, ExceptionCode> {
    let raw = file_data(data)?;
    check_reads(raw)?;
    Ok(Request::ReadFileRecord(FileRecordReads::from_validated(raw)))
}

/// FC21: request data length, sub-requests with their records.
fn file_writes(data: &[u8]) -> Result<Request<'_>, ExceptionCode> {
    let raw = file_data(data)?;
    check_writes(raw)?;
    Ok(Request::WriteFileRecord(FileRecordWrites::from_validated(raw)))
}

/// FC23: read start and quantity, write start and quantity, byte count,
/// values; 03 checks on both quantities first, then the read range's 02.
fn read_write_registers(data: &[u8]) -> Result<Request<'_>, ExceptionCode> {
    use ExceptionCode::{IllegalDataAddress as Addr, IllegalDataValue as Value};
    let (read_start, read_qty, write_start, write_qty, count, values) =
        exact(data, (u16p, u16p, u16p, u16p, u8p, restp)).ok_or(Value)?;
    if !(1..=MAX_READ_REGISTERS).contains(&read_qty)
        || !(1..=MAX_READ_WRITE_REGISTERS).contains(&write_qty)
        || usize::from(count) != usize::from(write_qty) * 2
        || values.len() != usize::from(count)
    {
        return Err(Value);
    }
    let values = RegisterBytes::new(values).ok_or(Value)?;
    let read = AddressRange::new(read_start, read_qty).ok_or(Addr)?;
    let write = AddressRange::new(write_start, write_qty).ok_or(Addr)?;
    Ok(Request::ReadWriteMultipleRegisters { read, write, values })
}

/// FC43: MEI type 0x0E (else 01), read code 1..=4, object id.
fn device_identification(data: &[u8]) -> Result<Request<'_>, ExceptionCode> {
    use ExceptionCode::IllegalDataValue as Value;
    let (rest, mei) = u8p(data).map_err(|_| Value)?;
    if mei != 0x0E {
        return Err(ExceptionCode::IllegalFunction);
    }
    let (code, object_id) = exact(rest, (u8p, u8p)).ok_or(Value)?;
    let code = match code {
        1 => DeviceIdCode::Basic,
        2 => DeviceIdCode::Regular,
        3 => DeviceIdCode::Extended,
        4 => DeviceIdCode::Individual,
        _ => return Err(Value),
    };
    Ok(Request::ReadDeviceIdentification { code, object_id })
}

/// FC1..=FC4: start and quantity, exactly; quantity 1..=`max` (03), then range (02).
#[inline]
fn read_range(data: &[u8], max: u16) -> Result<AddressRange, ExceptionCode> {
    let (start, quantity) = two_u16(data).ok_or(ExceptionCode::IllegalDataValue)?;
    if !(1..=max).contains(&quantity) {
        return Err(ExceptionCode::IllegalDataValue);
    }
    AddressRange::new(start, quantity).ok_or(ExceptionCode::IllegalDataAddress)
}

/// A request that carries no data: anything after the function code is 03.
fn no_data<T>(data: &[u8], request: T) -> Result<T, ExceptionCode> {
    if data.is_empty() {
        Ok(request)
    } else {
        Err(ExceptionCode::IllegalDataValue)
    }
}

/// FC8: sub-function then data.
fn diagnostic(data: &[u8]) -> Result<DiagnosticRequest<'_>, ExceptionCode> {
    use ExceptionCode::IllegalDataValue as Value;
    let (rest, sub) = u16p(data).map_err(|_| Value)?;
    if sub == 0x00 {
        if rest.len() > MAX_PDU - 3 {
            return Err(Value);
        }
        return Ok(DiagnosticRequest::ReturnQueryData(rest));
    }
    let supported = matches!(sub, 0x01..=0x04 | 0x0A | 0x14) || DiagnosticCounter::from_sub_function(sub).is_some();
    if !supported {
        return Err(ExceptionCode::IllegalFunction);
    }
    let value = exact(rest, u16p).ok_or(Value)?;
    let zero = |r: DiagnosticRequest<'static>| if value == 0 { Ok(r) } else { Err(Value) };
    match sub {
        0x01 => match value {
            0x0000 => Ok(DiagnosticRequest::RestartCommunications { clear_log: false }),
            0xFF00 => Ok(DiagnosticRequest::RestartCommunications { clear_log: true }),
            _ => Err(Value),
        },
        0x02 => zero(DiagnosticRequest::ReturnDiagnosticRegister),
        0x03 => {
            let [c, low] = value.to_be_bytes();
            if low == 0 {
                Ok(DiagnosticRequest::ChangeAsciiDelimiter(c))
            } else {
                Err(Value)
            }
        }
        0x04 => zero(DiagnosticRequest::ForceListenOnly),
        0x0A => zero(DiagnosticRequest::ClearCounters),
        0x14 => zero(DiagnosticRequest::ClearOverrunCounter),
        _ => match DiagnosticCounter::from_sub_function(sub) {
            Some(c) => zero(DiagnosticRequest::ReturnCounter(c)),
            None => Err(ExceptionCode::IllegalFunction),
        },
    }
}

/// Start and quantity of a range, refusing quantities above `max`.
fn push_range(out: &mut PduBuf, range: AddressRange, max: u16) -> Result<(), EncodeError> {
    if range.count() > max {
        return Err(EncodeError::OutOfRange("quantity"));
    }
    out.push_u16(range.start())?;
    out.push_u16(range.count())
}

/// A one-byte count followed by the bytes.
pub(super) fn push_counted(out: &mut PduBuf, bytes: &[u8]) -> Result<(), EncodeError> {
    let n = u8::try_from(bytes.len()).map_err(|_| EncodeError::TooLong)?;
    out.push(n)?;
    out.extend(bytes)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use ExceptionCode::{IllegalDataAddress as Addr, IllegalDataValue as Value, IllegalFunction as Func};
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn ok(pdu: &[u8]) -> Request<'_> {
        Request::decode(pdu).unwrap_or_else(|e| panic!("{pdu:02X?}: {e}"))
    }

    fn err(pdu: &[u8]) -> ExceptionCode {
        let e = Request::decode(pdu).expect_err("decode should fail");
        assert_eq!(e.function, pdu[0], "function of {pdu:02X?}");
        e.exception
    }

    fn encoded(r: &Request<'_>) -> Vec<u8> {
        let mut b = PduBuf::new();
        r.encode(&mut b).unwrap();
        b.as_slice().to_vec()
    }

    /// Decodes the spec's example, checks the fields, and that it encodes back.
    fn spec(pdu: &[u8], want: Request<'_>) {
        assert_eq!(ok(pdu), want);
        assert_eq!(encoded(&want), pdu);
    }

    fn range(start: u16, count: u16) -> AddressRange {
        AddressRange::new(start, count).unwrap()
    }

    // ---- Examples of the Modbus Application Protocol v1.1b3, section 6 ----

    #[test]
    fn spec_examples_reads() {
        spec(&[0x01, 0x00, 0x13, 0x00, 0x13], Request::ReadCoils(range(19, 19)));
        spec(
            &[0x02, 0x00, 0xC4, 0x00, 0x16],
            Request::ReadDiscreteInputs(range(196, 22)),
        );
        spec(
            &[0x03, 0x00, 0x6B, 0x00, 0x03],
            Request::ReadHoldingRegisters(range(107, 3)),
        );
        spec(
            &[0x04, 0x00, 0x08, 0x00, 0x01],
            Request::ReadInputRegisters(range(8, 1)),
        );
    }

    #[test]
    fn spec_examples_single_writes() {
        spec(
            &[0x05, 0x00, 0xAC, 0xFF, 0x00],
            Request::WriteSingleCoil {
                address: 172,
                value: true,
            },
        );
        spec(
            &[0x05, 0x00, 0xAC, 0x00, 0x00],
            Request::WriteSingleCoil {
                address: 172,
                value: false,
            },
        );
        spec(
            &[0x06, 0x00, 0x01, 0x00, 0x03],
            Request::WriteSingleRegister { address: 1, value: 3 },
        );
        spec(
            &[0x16, 0x00, 0x04, 0x00, 0xF2, 0x00, 0x25],
            Request::MaskWriteRegister {
                address: 4,
                and_mask: 0x00F2,
                or_mask: 0x0025,
            },
        );
    }

    #[test]
    fn spec_examples_no_data() {
        spec(&[0x07], Request::ReadExceptionStatus);
        spec(&[0x0B], Request::GetCommEventCounter);
        spec(&[0x0C], Request::GetCommEventLog);
        spec(&[0x11], Request::ReportServerId);
    }

    #[test]
    fn spec_examples_multiple_writes() {
        let pdu = [0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01];
        let Request::WriteMultipleCoils { range: r, values } = ok(&pdu) else {
            panic!("wrong variant")
        };
        assert_eq!(r, range(19, 10));
        // CD 01: coils 20..27 = 1,0,1,1,0,0,1,1 (LSB first), 28 = 1, 29 = 0.
        let bits: Vec<bool> = values.iter().collect();
        assert_eq!(bits, [true, false, true, true, false, false, true, true, true, false]);
        assert_eq!(encoded(&ok(&pdu)), pdu);

        let pdu = [0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02];
        let Request::WriteMultipleRegisters { range: r, values } = ok(&pdu) else {
            panic!("wrong variant")
        };
        assert_eq!(r, range(1, 2));
        assert_eq!(values.iter().collect::<Vec<_>>(), [0x000A, 0x0102]);
        assert_eq!(encoded(&ok(&pdu)), pdu);

        let pdu = [
            0x17, 0x00, 0x03, 0x00, 0x06, 0x00, 0x0E, 0x00, 0x03, 0x06, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF,
        ];
        let Request::ReadWriteMultipleRegisters { read, write, values } = ok(&pdu) else {
            panic!("wrong variant")
        };
        assert_eq!(read, range(3, 6));
        assert_eq!(write, range(14, 3));
        assert_eq!(values.iter().collect::<Vec<_>>(), [0xFF, 0xFF, 0xFF]);
        assert_eq!(encoded(&ok(&pdu)), pdu);
    }

    #[test]
    fn spec_examples_files_fifo_device_id() {
        let pdu = [
            0x14, 0x0E, 0x06, 0x00, 0x04, 0x00, 0x01, 0x00, 0x02, 0x06, 0x00, 0x03, 0x00, 0x09, 0x00, 0x02,
        ];
        let Request::ReadFileRecord(reads) = ok(&pdu) else {
            panic!("wrong variant")
        };
        assert_eq!(
            reads.iter().collect::<Vec<_>>(),
            [
                FileRecordRef {
                    file: 4,
                    record: 1,
                    length: 2
                },
                FileRecordRef {
                    file: 3,
                    record: 9,
                    length: 2
                },
            ]
        );
        assert_eq!(encoded(&ok(&pdu)), pdu);

        let pdu = [
            0x15, 0x0D, 0x06, 0x00, 0x04, 0x00, 0x07, 0x00, 0x03, 0x06, 0xAF, 0x04, 0xBE, 0x10, 0x0D,
        ];
        let Request::WriteFileRecord(writes) = ok(&pdu) else {
            panic!("wrong variant")
        };
        let subs: Vec<_> = writes.iter().collect();
        assert_eq!(subs.len(), 1);
        assert_eq!(
            subs[0].0,
            FileRecordRef {
                file: 4,
                record: 7,
                length: 3
            }
        );
        assert_eq!(subs[0].1.iter().collect::<Vec<_>>(), [0x06AF, 0x04BE, 0x100D]);
        assert_eq!(encoded(&ok(&pdu)), pdu);

        spec(&[0x18, 0x04, 0xDE], Request::ReadFifoQueue { address: 0x04DE });
        spec(
            &[0x2B, 0x0E, 0x01, 0x00],
            Request::ReadDeviceIdentification {
                code: DeviceIdCode::Basic,
                object_id: 0,
            },
        );
        spec(
            &[0x2B, 0x0E, 0x04, 0x81],
            Request::ReadDeviceIdentification {
                code: DeviceIdCode::Individual,
                object_id: 0x81,
            },
        );
    }

    #[test]
    fn spec_examples_diagnostics() {
        use DiagnosticRequest as D;
        spec(
            &[0x08, 0x00, 0x00, 0xA5, 0x37],
            Request::Diagnostics(D::ReturnQueryData(&[0xA5, 0x37])),
        );
        spec(&[0x08, 0x00, 0x00], Request::Diagnostics(D::ReturnQueryData(&[])));
        spec(
            &[0x08, 0x00, 0x01, 0x00, 0x00],
            Request::Diagnostics(D::RestartCommunications { clear_log: false }),
        );
        spec(
            &[0x08, 0x00, 0x01, 0xFF, 0x00],
            Request::Diagnostics(D::RestartCommunications { clear_log: true }),
        );
        spec(
            &[0x08, 0x00, 0x02, 0x00, 0x00],
            Request::Diagnostics(D::ReturnDiagnosticRegister),
        );
        spec(
            &[0x08, 0x00, 0x03, 0x3A, 0x00],
            Request::Diagnostics(D::ChangeAsciiDelimiter(b':')),
        );
        spec(
            &[0x08, 0x00, 0x04, 0x00, 0x00],
            Request::Diagnostics(D::ForceListenOnly),
        );
        spec(&[0x08, 0x00, 0x0A, 0x00, 0x00], Request::Diagnostics(D::ClearCounters));
        for c in DiagnosticCounter::ALL {
            let [hi, lo] = c.sub_function().to_be_bytes();
            spec(&[0x08, hi, lo, 0x00, 0x00], Request::Diagnostics(D::ReturnCounter(c)));
        }
        spec(
            &[0x08, 0x00, 0x14, 0x00, 0x00],
            Request::Diagnostics(D::ClearOverrunCounter),
        );
    }

    #[test]
    fn custom_and_invalid_codes() {
        assert_eq!(
            Request::decode(&[]).unwrap_err(),
            DecodeError {
                function: 0,
                exception: Func
            }
        );
        assert_eq!(err(&[0x00, 0x01]), Func);
        assert_eq!(err(&[0x80]), Func);
        assert_eq!(err(&[0x83, 0x00, 0x00, 0x00, 0x01]), Func);
        spec(
            &[0x41, 0x01, 0x02],
            Request::Custom {
                function: 0x41,
                data: &[1, 2],
            },
        );
        spec(
            &[0x09],
            Request::Custom {
                function: 0x09,
                data: &[],
            },
        );
        spec(
            &[0x7F, 0xFF],
            Request::Custom {
                function: 0x7F,
                data: &[0xFF],
            },
        );
        let mut b = PduBuf::new();
        for f in [0x00, 0x03, 0x2B, 0x80] {
            let r = Request::Custom { function: f, data: &[] };
            assert!(matches!(r.encode(&mut b), Err(EncodeError::OutOfRange(_))), "{f:#x}");
        }
    }

    #[test]
    fn custom_iff_not_standard() {
        for f in 0..=255u8 {
            let custom = matches!(Request::decode(&[f]), Ok(Request::Custom { .. }));
            let expected = (1..0x80).contains(&f) && !crate::FunctionCode(f).is_standard();
            assert_eq!(custom, expected, "{f:#04x}");
        }
    }

    // ---- Exception branches, one per limit ----

    #[test]
    fn fc1_fc2_limits() {
        for fc in [0x01, 0x02] {
            assert_eq!(err(&[fc, 0x00, 0x00, 0x00, 0x00]), Value, "quantity 0");
            assert_eq!(err(&[fc, 0x00, 0x00, 0x07, 0xD1]), Value, "quantity 2001");
            assert_eq!(ok(&[fc, 0x00, 0x00, 0x07, 0xD0]).function(), fc);
            assert_eq!(err(&[fc, 0xF8, 0x31, 0x07, 0xD0]), Addr, "0xF831 + 2000 > 65536");
            assert!(Request::decode(&[fc, 0xF8, 0x30, 0x07, 0xD0]).is_ok(), "ends at 65536");
            assert_eq!(err(&[fc, 0xFF, 0xFF, 0x00, 0x02]), Addr);
            // Quantity is checked before the address.
            assert_eq!(err(&[fc, 0xFF, 0xFF, 0x07, 0xD1]), Value);
            assert_eq!(err(&[fc, 0x00, 0x13, 0x00]), Value, "short");
            assert_eq!(err(&[fc]), Value, "no data");
            assert_eq!(err(&[fc, 0x00, 0x13, 0x00, 0x13, 0x00]), Value, "long");
        }
    }

    #[test]
    fn fc3_fc4_limits() {
        for fc in [0x03, 0x04] {
            assert_eq!(err(&[fc, 0x00, 0x00, 0x00, 0x00]), Value, "quantity 0");
            assert_eq!(err(&[fc, 0x00, 0x00, 0x00, 0x7E]), Value, "quantity 126");
            assert!(Request::decode(&[fc, 0x00, 0x00, 0x00, 0x7D]).is_ok());
            assert_eq!(err(&[fc, 0xFF, 0x84, 0x00, 0x7D]), Addr, "0xFF84 + 125 > 65536");
            assert!(Request::decode(&[fc, 0xFF, 0x83, 0x00, 0x7D]).is_ok());
            assert_eq!(err(&[fc, 0x00, 0x6B, 0x00]), Value, "short");
            assert_eq!(err(&[fc, 0x00, 0x6B, 0x00, 0x03, 0x00]), Value, "long");
        }
    }

    #[test]
    fn fc5_fc6_limits() {
        assert_eq!(err(&[0x05, 0x00, 0xAC, 0x00, 0x01]), Value, "coil value 0x0001");
        assert_eq!(err(&[0x05, 0x00, 0xAC, 0xFF, 0xFF]), Value, "coil value 0xFFFF");
        assert_eq!(err(&[0x05, 0x00, 0xAC, 0x00, 0xFF]), Value, "coil value 0x00FF");
        assert_eq!(err(&[0x05, 0x00, 0xAC, 0xFF]), Value, "short");
        assert_eq!(err(&[0x05, 0x00, 0xAC, 0xFF, 0x00, 0x00]), Value, "long");
        assert!(Request::decode(&[0x05, 0xFF, 0xFF, 0xFF, 0x00]).is_ok(), "last coil");
        assert_eq!(err(&[0x06, 0x00, 0x01, 0x00]), Value, "short");
        assert_eq!(err(&[0x06, 0x00, 0x01, 0x00, 0x03, 0x00]), Value, "long");
    }

    #[test]
    fn no_data_functions_refuse_data() {
        for fc in [0x07, 0x0B, 0x0C, 0x11] {
            assert_eq!(err(&[fc, 0x00]), Value, "{fc:#x}");
        }
    }

    #[test]
    fn fc8_limits() {
        for sub in [0x05u16, 0x06, 0x09, 0x13, 0x15, 0x16, 0xFFFF] {
            let [hi, lo] = sub.to_be_bytes();
            assert_eq!(err(&[0x08, hi, lo, 0x00, 0x00]), Func, "sub-function {sub:#x}");
            // Unsupported sub-function wins over bad data.
            assert_eq!(err(&[0x08, hi, lo, 0x00]), Func);
        }
        assert_eq!(err(&[0x08]), Value, "no sub-function");
        assert_eq!(err(&[0x08, 0x00]), Value, "half a sub-function");
        assert_eq!(err(&[0x08, 0x00, 0x01, 0x00, 0x01]), Value, "restart data");
        assert_eq!(err(&[0x08, 0x00, 0x01, 0xFF, 0xFF]), Value, "restart data");
        assert_eq!(err(&[0x08, 0x00, 0x03, 0x3A, 0x01]), Value, "delimiter low byte");
        for sub in [0x02u8, 0x04, 0x0A, 0x0B, 0x0E, 0x12, 0x14] {
            assert_eq!(err(&[0x08, 0x00, sub, 0x00, 0x01]), Value, "{sub:#x} data");
            assert_eq!(err(&[0x08, 0x00, sub, 0x00]), Value, "{sub:#x} short");
            assert_eq!(err(&[0x08, 0x00, sub, 0x00, 0x00, 0x00]), Value, "{sub:#x} long");
            assert_eq!(err(&[0x08, 0x00, sub]), Value, "{sub:#x} no data");
        }
        let mut echo = vec![0x08, 0x00, 0x00];
        echo.resize(253, 0x55);
        assert!(Request::decode(&echo).is_ok(), "echo of 250 bytes");
        echo.push(0x55);
        assert_eq!(err(&echo), Value, "echo past 253 bytes");
    }

    #[test]
    fn fc15_limits() {
        assert_eq!(err(&[0x0F, 0x00, 0x13, 0x00, 0x00, 0x00]), Value, "quantity 0");
        let mut pdu = vec![0x0F, 0x00, 0x00, 0x07, 0xB1, 0xF7];
        pdu.resize(6 + 0xF7, 0);
        assert_eq!(err(&pdu), Value, "quantity 1969");
        let mut pdu = vec![0x0F, 0x00, 0x00, 0x07, 0xB0, 0xF6];
        pdu.resize(6 + 0xF6, 0);
        assert!(Request::decode(&pdu).is_ok(), "quantity 1968");
        assert_eq!(
            err(&[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x01, 0xCD]),
            Value,
            "byte count 1 for 10 coils"
        );
        assert_eq!(
            err(&[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x03, 0xCD, 0x01, 0x00]),
            Value,
            "byte count 3"
        );
        assert_eq!(err(&[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD]), Value, "byte missing");
        assert_eq!(
            err(&[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01, 0x00]),
            Value,
            "byte extra"
        );
        assert_eq!(
            err(&[0x0F, 0xFF, 0xFF, 0x00, 0x02, 0x01, 0x03]),
            Addr,
            "address overflow"
        );
        assert_eq!(err(&[0x0F, 0x00, 0x13, 0x00]), Value, "short");
    }

    #[test]
    fn fc16_limits() {
        assert_eq!(err(&[0x10, 0x00, 0x01, 0x00, 0x00, 0x00]), Value, "quantity 0");
        let mut pdu = vec![0x10, 0x00, 0x00, 0x00, 0x7C, 0xF8];
        pdu.resize(6 + 0xF8, 0);
        assert_eq!(err(&pdu), Value, "quantity 124");
        let mut pdu = vec![0x10, 0x00, 0x00, 0x00, 0x7B, 0xF6];
        pdu.resize(6 + 0xF6, 0);
        assert!(Request::decode(&pdu).is_ok(), "quantity 123");
        assert_eq!(
            err(&[0x10, 0x00, 0x01, 0x00, 0x02, 0x03, 0x00, 0x0A, 0x01]),
            Value,
            "byte count 3"
        );
        assert_eq!(
            err(&[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01]),
            Value,
            "byte missing"
        );
        assert_eq!(
            err(&[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02, 0x03]),
            Value,
            "byte extra"
        );
        assert_eq!(
            err(&[0x10, 0xFF, 0xFF, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02]),
            Addr,
            "address overflow"
        );
        assert_eq!(err(&[0x10, 0x00, 0x01, 0x00, 0x02]), Value, "short");
    }

    fn fc20(subs: &[[u8; 7]]) -> Vec<u8> {
        let mut pdu = vec![0x14, (subs.len() * 7) as u8];
        for s in subs {
            pdu.extend_from_slice(s);
        }
        pdu
    }

    fn sub(reference: u8, file: u16, record: u16, length: u16) -> [u8; 7] {
        let [f0, f1] = file.to_be_bytes();
        let [r0, r1] = record.to_be_bytes();
        let [l0, l1] = length.to_be_bytes();
        [reference, f0, f1, r0, r1, l0, l1]
    }

    #[test]
    fn fc20_limits() {
        assert_eq!(err(&[0x14, 0x00]), Value, "byte count 0");
        assert_eq!(err(&[0x14, 0x06, 6, 0, 1, 0, 0, 0]), Value, "byte count 6");
        let mut pdu = fc20(&[sub(6, 1, 0, 1); 36]);
        assert_eq!(pdu[1], 0xFC);
        assert_eq!(err(&pdu), Value, "byte count 0xFC");
        pdu = fc20(&[sub(6, 1, 0, 1); 35]);
        assert!(Request::decode(&pdu).is_ok(), "byte count 0xF5");
        let mut pdu = fc20(&[sub(6, 1, 0, 1)]);
        pdu[1] = 8;
        pdu.push(0);
        assert_eq!(err(&pdu), Value, "byte count 8, not a multiple of 7");
        let mut pdu = fc20(&[sub(6, 1, 0, 1)]);
        pdu.push(0);
        assert_eq!(err(&pdu), Value, "byte count != bytes present");
        assert_eq!(err(&[0x14]), Value, "no byte count");
        assert_eq!(err(&fc20(&[sub(7, 1, 0, 1)])), Addr, "reference type 7");
        assert_eq!(err(&fc20(&[sub(6, 0, 0, 1)])), Addr, "file 0");
        assert_eq!(err(&fc20(&[sub(6, 1, 0x2710, 1)])), Addr, "record 10000");
        assert!(
            Request::decode(&fc20(&[sub(6, 0xFFFF, 0x270F, 1)])).is_ok(),
            "record 9999"
        );
        assert_eq!(err(&fc20(&[sub(6, 1, 9990, 11)])), Addr, "record + length > 10000");
        assert!(
            Request::decode(&fc20(&[sub(6, 1, 9990, 10)])).is_ok(),
            "record + length = 10000"
        );
        assert_eq!(err(&fc20(&[sub(6, 1, 0, 0)])), Addr, "length 0");
        assert_eq!(
            err(&fc20(&[sub(6, 1, 0, 1), sub(6, 0, 0, 1)])),
            Addr,
            "second sub-request"
        );
        // Response size: 2 + (2 + 2 * 124) = 252 fits, 125 records do not.
        assert!(Request::decode(&fc20(&[sub(6, 1, 0, 124)])).is_ok());
        assert_eq!(err(&fc20(&[sub(6, 1, 0, 125)])), Value, "response over 253 bytes");
        assert_eq!(
            err(&fc20(&[sub(6, 1, 0, 62), sub(6, 1, 0, 62)])),
            Value,
            "2 + 126 + 126"
        );
        // 03 (response size) wins over 02 (file 0).
        assert_eq!(err(&fc20(&[sub(6, 0, 0, 200)])), Value);
    }

    fn fc21(subs: &[(u8, u16, u16, &[u16])]) -> Vec<u8> {
        let mut pdu = vec![0x15, 0];
        for (reference, file, record, data) in subs {
            pdu.extend_from_slice(&sub(*reference, *file, *record, data.len() as u16));
            for v in *data {
                pdu.extend_from_slice(&v.to_be_bytes());
            }
        }
        pdu[1] = (pdu.len() - 2) as u8;
        pdu
    }

    #[test]
    fn fc21_limits() {
        assert!(Request::decode(&fc21(&[(6, 1, 0, &[1])])).is_ok(), "data length 9");
        let pdu = [0x15, 0x08, 6, 0, 1, 0, 0, 0, 0, 0];
        assert_eq!(err(&pdu), Value, "data length 8");
        let data = [0u16; 122];
        let pdu = fc21(&[(6, 1, 0, &data)]);
        assert_eq!(pdu[1], 0xFB);
        assert!(Request::decode(&pdu).is_ok(), "data length 0xFB");
        let data = [0u16; 123];
        let pdu = fc21(&[(6, 1, 0, &data)]);
        assert_eq!(pdu[1], 0xFD);
        assert_eq!(err(&pdu), Value, "data length 0xFD");
        let mut pdu = fc21(&[(6, 1, 0, &[1, 2])]);
        pdu.push(0);
        assert_eq!(err(&pdu), Value, "data length != bytes present");
        let mut pdu = fc21(&[(6, 1, 0, &[1, 2])]);
        pdu[8] = 3; // record length 3 but 2 registers present
        assert_eq!(err(&pdu), Value, "sub-request longer than data");
        let mut pdu = fc21(&[(6, 1, 0, &[1, 2, 3])]);
        pdu[8] = 2; // 2 records, then 2 stray bytes
        assert_eq!(err(&pdu), Value, "stray bytes after sub-request");
        assert_eq!(err(&[0x15]), Value, "no data length");
        assert_eq!(err(&fc21(&[(5, 1, 0, &[1])])), Addr, "reference type 5");
        assert_eq!(err(&fc21(&[(6, 0, 0, &[1])])), Addr, "file 0");
        assert_eq!(err(&fc21(&[(6, 1, 0x2710, &[1])])), Addr, "record 10000");
        assert_eq!(err(&fc21(&[(6, 1, 9999, &[1, 2])])), Addr, "record + length > 10000");
        assert_eq!(err(&fc21(&[(6, 1, 0, &[1]), (6, 1, 0, &[])])), Addr, "length 0");
        // A structural error after a bad reference is still 03.
        let mut pdu = fc21(&[(6, 0, 0, &[1]), (6, 1, 0, &[1])]);
        pdu.pop();
        pdu[1] -= 1;
        assert_eq!(err(&pdu), Value);
    }

    #[test]
    fn fc22_fc24_limits() {
        assert_eq!(err(&[0x16, 0x00, 0x04, 0x00, 0xF2, 0x00]), Value, "short");
        assert_eq!(err(&[0x16, 0x00, 0x04, 0x00, 0xF2, 0x00, 0x25, 0x00]), Value, "long");
        assert_eq!(err(&[0x18, 0x04]), Value, "short");
        assert_eq!(err(&[0x18, 0x04, 0xDE, 0x00]), Value, "long");
    }

    fn fc23(rs: u16, rq: u16, ws: u16, wq: u16, count: u8, values: usize) -> Vec<u8> {
        let mut pdu = vec![0x17];
        for v in [rs, rq, ws, wq] {
            pdu.extend_from_slice(&v.to_be_bytes());
        }
        pdu.push(count);
        pdu.resize(pdu.len() + values, 0xAB);
        pdu
    }

    #[test]
    fn fc23_limits() {
        assert!(Request::decode(&fc23(0, 125, 0, 121, 242, 242)).is_ok());
        assert_eq!(err(&fc23(0, 0, 0, 1, 2, 2)), Value, "read quantity 0");
        assert_eq!(err(&fc23(0, 126, 0, 1, 2, 2)), Value, "read quantity 126");
        assert_eq!(err(&fc23(0, 1, 0, 0, 0, 0)), Value, "write quantity 0");
        assert_eq!(err(&fc23(0, 1, 0, 122, 244, 244)), Value, "write quantity 122");
        assert_eq!(err(&fc23(0, 1, 0, 3, 5, 5)), Value, "byte count 5 for 3 registers");
        assert_eq!(err(&fc23(0, 1, 0, 3, 6, 5)), Value, "byte missing");
        assert_eq!(err(&fc23(0, 1, 0, 3, 6, 7)), Value, "byte extra");
        assert_eq!(err(&fc23(0xFFFF, 2, 0, 1, 2, 2)), Addr, "read range overflow");
        assert_eq!(err(&fc23(0, 1, 0xFFFF, 2, 4, 4)), Addr, "write range overflow");
        assert_eq!(err(&[0x17, 0x00, 0x03, 0x00, 0x06, 0x00, 0x0E, 0x00]), Value, "short");
    }

    #[test]
    fn fc43_limits() {
        assert_eq!(err(&[0x2B, 0x0D, 0x01, 0x00]), Func, "MEI 0x0D (CANopen)");
        assert_eq!(err(&[0x2B, 0x0F]), Func, "MEI 0x0F, whatever the length");
        assert_eq!(err(&[0x2B]), Value, "no MEI type");
        assert_eq!(err(&[0x2B, 0x0E, 0x01]), Value, "short");
        assert_eq!(err(&[0x2B, 0x0E, 0x01, 0x00, 0x00]), Value, "long");
        assert_eq!(err(&[0x2B, 0x0E, 0x00, 0x00]), Value, "read code 0");
        assert_eq!(err(&[0x2B, 0x0E, 0x05, 0x00]), Value, "read code 5");
    }

    #[test]
    fn encode_refuses_what_decode_refuses() {
        let mut b = PduBuf::new();
        let too_many = Request::ReadHoldingRegisters(range(0, 126));
        assert_eq!(too_many.encode(&mut b), Err(EncodeError::OutOfRange("quantity")));
        let mismatch = Request::WriteMultipleRegisters {
            range: range(0, 2),
            values: RegisterBytes::new(&[0, 1]).unwrap(),
        };
        assert!(matches!(mismatch.encode(&mut b), Err(EncodeError::OutOfRange(_))));
        let long = [0u8; 251];
        let echo = Request::Diagnostics(DiagnosticRequest::ReturnQueryData(&long));
        assert_eq!(echo.encode(&mut b), Err(EncodeError::TooLong));
        assert!(FileRecordReads::new(&sub(6, 0, 0, 1)).is_none());
        assert!(FileRecordReads::new(&sub(6, 1, 0, 1)).is_some());
        assert!(FileRecordWrites::new(&[6, 0, 1, 0, 0, 0, 1, 0xAB, 0xCD]).is_some());
        assert!(FileRecordWrites::new(&[6, 0, 1, 0, 0, 0, 1, 0xAB]).is_none());
    }

    #[test]
    fn register_bytes_get_is_total() {
        let r = RegisterBytes::new(&[0x12, 0x34, 0x56, 0x78]).unwrap();
        assert_eq!(r.get(1), Some(0x5678));
        assert_eq!(r.get(2), None);
        assert_eq!(r.get(usize::MAX / 2), None);
        assert_eq!(r.get(usize::MAX), None);
    }

    // ---- Property tests ----

    /// A request with its borrowed data held in owned buffers.
    #[derive(Debug, Clone)]
    pub(crate) enum OwnedRequest {
        Plain(Request<'static>),
        Echo(Vec<u8>),
        Coils(AddressRange, Vec<u8>),
        Registers(AddressRange, Vec<u8>),
        ReadFile(Vec<u8>),
        WriteFile(Vec<u8>),
        ReadWrite(AddressRange, AddressRange, Vec<u8>),
        Custom(u8, Vec<u8>),
    }

    impl OwnedRequest {
        pub(crate) fn borrow(&self) -> Request<'_> {
            match self {
                Self::Plain(r) => *r,
                Self::Echo(d) => Request::Diagnostics(DiagnosticRequest::ReturnQueryData(d)),
                Self::Coils(range, v) => Request::WriteMultipleCoils {
                    range: *range,
                    values: PackedBits::new(v, range.count()).unwrap(),
                },
                Self::Registers(range, v) => Request::WriteMultipleRegisters {
                    range: *range,
                    values: RegisterBytes::new(v).unwrap(),
                },
                Self::ReadFile(raw) => Request::ReadFileRecord(FileRecordReads::new(raw).unwrap()),
                Self::WriteFile(raw) => Request::WriteFileRecord(FileRecordWrites::new(raw).unwrap()),
                Self::ReadWrite(read, write, v) => Request::ReadWriteMultipleRegisters {
                    read: *read,
                    write: *write,
                    values: RegisterBytes::new(v).unwrap(),
                },
                Self::Custom(function, data) => Request::Custom {
                    function: *function,
                    data,
                },
            }
        }
    }

    /// A valid address range of 1..=`max` addresses.
    pub(crate) fn range_strategy(max: u16) -> impl Strategy<Value = AddressRange> {
        (1..=max).prop_flat_map(|q| (0..=(0x1_0000 - u32::from(q)), Just(q)).prop_map(|(s, q)| range(s as u16, q)))
    }

    fn diagnostic_strategy() -> impl Strategy<Value = DiagnosticRequest<'static>> {
        use DiagnosticRequest as D;
        prop_oneof![
            any::<bool>().prop_map(|clear_log| D::RestartCommunications { clear_log }),
            Just(D::ReturnDiagnosticRegister),
            any::<u8>().prop_map(D::ChangeAsciiDelimiter),
            Just(D::ForceListenOnly),
            Just(D::ClearCounters),
            proptest::sample::select(DiagnosticCounter::ALL.to_vec()).prop_map(D::ReturnCounter),
            Just(D::ClearOverrunCounter),
        ]
    }

    fn plain_strategy() -> impl Strategy<Value = Request<'static>> {
        prop_oneof![
            range_strategy(MAX_READ_BITS).prop_map(Request::ReadCoils),
            range_strategy(MAX_READ_BITS).prop_map(Request::ReadDiscreteInputs),
            range_strategy(MAX_READ_REGISTERS).prop_map(Request::ReadHoldingRegisters),
            range_strategy(MAX_READ_REGISTERS).prop_map(Request::ReadInputRegisters),
            (any::<u16>(), any::<bool>()).prop_map(|(address, value)| Request::WriteSingleCoil { address, value }),
            (any::<u16>(), any::<u16>()).prop_map(|(address, value)| Request::WriteSingleRegister { address, value }),
            Just(Request::ReadExceptionStatus),
            diagnostic_strategy().prop_map(Request::Diagnostics),
            Just(Request::GetCommEventCounter),
            Just(Request::GetCommEventLog),
            Just(Request::ReportServerId),
            (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(address, and_mask, or_mask)| {
                Request::MaskWriteRegister {
                    address,
                    and_mask,
                    or_mask,
                }
            }),
            any::<u16>().prop_map(|address| Request::ReadFifoQueue { address }),
            (
                proptest::sample::select(vec![
                    DeviceIdCode::Basic,
                    DeviceIdCode::Regular,
                    DeviceIdCode::Extended,
                    DeviceIdCode::Individual
                ]),
                any::<u8>()
            )
                .prop_map(|(code, object_id)| Request::ReadDeviceIdentification { code, object_id }),
        ]
    }

    /// Valid FC20 sub-requests: 1..=35, lengths small enough for the response to fit.
    fn file_reads_strategy() -> impl Strategy<Value = Vec<u8>> {
        (1..=35usize).prop_flat_map(|n| {
            let max_len = ((251 / n - 2) / 2) as u16;
            vec(
                (1..=max_len).prop_flat_map(|len| (1..=u16::MAX, 0..=(10_000 - len).min(MAX_FILE_RECORD), Just(len))),
                n,
            )
            .prop_map(|subs| subs.iter().flat_map(|&(f, r, l)| sub(6, f, r, l)).collect())
        })
    }

    /// Valid FC21 sub-requests with data, at most 0xFB bytes in all.
    pub(crate) fn file_writes_strategy() -> impl Strategy<Value = Vec<u8>> {
        (1..=27usize).prop_flat_map(|n| {
            let max_len = ((251 / n - 7) / 2) as u16;
            vec(
                (1..=max_len).prop_flat_map(|len| {
                    (
                        1..=u16::MAX,
                        0..=(10_000 - len).min(MAX_FILE_RECORD),
                        Just(len),
                        vec(any::<u8>(), 2 * usize::from(len)),
                    )
                }),
                n,
            )
            .prop_map(|subs| {
                let mut raw = Vec::new();
                for (f, r, l, data) in subs {
                    raw.extend_from_slice(&sub(6, f, r, l));
                    raw.extend_from_slice(&data);
                }
                raw
            })
        })
    }

    fn custom_code() -> impl Strategy<Value = u8> {
        (1u8..=0x7F).prop_filter("not a public code", |f| !crate::FunctionCode(*f).is_standard())
    }

    fn request_strategy() -> impl Strategy<Value = OwnedRequest> {
        prop_oneof![
            4 => plain_strategy().prop_map(OwnedRequest::Plain),
            1 => vec(any::<u8>(), 0..=250).prop_map(OwnedRequest::Echo),
            1 => range_strategy(MAX_WRITE_BITS).prop_flat_map(|r| {
                (Just(r), vec(any::<u8>(), r.len().div_ceil(8))).prop_map(|(r, v)| OwnedRequest::Coils(r, v))
            }),
            1 => range_strategy(MAX_WRITE_REGISTERS).prop_flat_map(|r| {
                (Just(r), vec(any::<u8>(), r.len() * 2)).prop_map(|(r, v)| OwnedRequest::Registers(r, v))
            }),
            1 => file_reads_strategy().prop_map(OwnedRequest::ReadFile),
            1 => file_writes_strategy().prop_map(OwnedRequest::WriteFile),
            1 => (range_strategy(MAX_READ_REGISTERS), range_strategy(MAX_READ_WRITE_REGISTERS)).prop_flat_map(
                |(read, write)| {
                    (Just(read), Just(write), vec(any::<u8>(), write.len() * 2))
                        .prop_map(|(read, write, v)| OwnedRequest::ReadWrite(read, write, v))
                }
            ),
            1 => (custom_code(), vec(any::<u8>(), 0..=252)).prop_map(|(f, d)| OwnedRequest::Custom(f, d)),
        ]
    }

    /// Random bytes, half of them behind a public function code.
    pub(crate) fn noise_strategy() -> impl Strategy<Value = Vec<u8>> {
        let codes = vec![
            0x01u8, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x0B, 0x0C, 0x0F, 0x10, 0x11, 0x14, 0x15, 0x16, 0x17,
            0x18, 0x2B, 0x80, 0x83, 0x41,
        ];
        prop_oneof![
            vec(any::<u8>(), 0..=300),
            (proptest::sample::select(codes), vec(any::<u8>(), 0..=260)).prop_map(|(f, mut rest)| {
                rest.insert(0, f);
                rest
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn request_round_trips(owned in request_strategy()) {
            let request = owned.borrow();
            let mut buf = PduBuf::new();
            request.encode(&mut buf).unwrap();
            let bytes = buf.as_slice().to_vec();
            prop_assert_eq!(Request::decode(&bytes), Ok(request));
        }

        #[test]
        fn fast_field_readers_match_nom(data in proptest::collection::vec(any::<u8>(), 0..12)) {
            prop_assert_eq!(two_u16(&data), exact(&data, (u16p, u16p)));
            prop_assert_eq!(write_header(&data), exact(&data, (u16p, u16p, u8p, restp)));
        }

        #[test]
        fn request_decode_never_panics_and_reencodes(bytes in noise_strategy()) {
            if let Ok(request) = Request::decode(&bytes) {
                // Whatever decodes encodes back to the same bytes.
                let mut buf = PduBuf::new();
                if bytes.len() <= MAX_PDU {
                    request.encode(&mut buf).unwrap();
                    prop_assert_eq!(buf.as_slice(), &bytes[..]);
                }
            }
        }
    }
}
