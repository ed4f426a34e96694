//! Response PDUs: what the server answers, encoded into a [`PduBuf`] and
//! decoded (for hooks, tests and clients) with nom.

//!
//! Decoding checks internal consistency only (byte counts against the bytes
//! present, counts within the spec's limits), not whether the response fits a
//! particular request. A FC1/FC2 response does not carry the quantity asked
//! for, so its [`PackedBits`] hold `8 × byte count` bits (padding included).
//! A response whose function byte has the high bit set is an exception
//! response and must be exactly 2 bytes with a defined exception code.

use super::request::{
    DeviceIdCode, FILE_REFERENCE_TYPE, MAX_READ_REGISTERS, MAX_WRITE_BITS, MAX_WRITE_REGISTERS, PackedBits,
    RegisterBytes, exact, push_counted, restp, scan_writes, u8p, u16p,
};
use super::{EncodeError, PduBuf};
use crate::ExceptionCode;
use crate::address::AddressRange;
use crate::frame::MAX_PDU;

/// Largest number of values a FC24 response carries.
pub const MAX_FIFO_COUNT: u16 = 31;
/// Largest number of events a FC12 response carries.
pub const MAX_EVENTS: usize = 64;

/// Largest byte count of a FC1/FC2 response (2000 bits).
const MAX_BIT_BYTES: usize = 250;

/// Zeros to reserve room in a [`PduBuf`] before writing in place.
static ZEROS: [u8; MAX_PDU] = [0; MAX_PDU];

/// True for the conformity levels of Read Device Identification.
fn conformity_ok(c: u8) -> bool {
    matches!(c & 0x7F, 0x01..=0x03)
}

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
        let function = pdu.first().copied().unwrap_or(0);
        Self::decode_inner(pdu).ok_or(MalformedResponse { function })
    }

    /// [`Response::decode`] without the error payload.
    fn decode_inner(pdu: &'a [u8]) -> Option<Self> {
        if pdu.len() > MAX_PDU {
            return None;
        }
        let (data, function) = u8p(pdu).ok()?;
        if function >= 0x80 {
            let code = exact(data, u8p)?;
            return Some(Self::Exception {
                function: function & 0x7F,
                exception: ExceptionCode::from_code(code)?,
            });
        }
        if function == 0 {
            return None;
        }
        if !crate::FunctionCode(function).is_standard() {
            return Some(Self::Custom { function, data });
        }
        Some(match function {
            0x01 | 0x02 => {
                let bytes = counted(data)?;
                if bytes.is_empty() || bytes.len() > MAX_BIT_BYTES {
                    return None;
                }
                // ok: len <= 250, so 8 * len <= 2000.
                let bits = PackedBits::new(bytes, u16::try_from(bytes.len() * 8).ok()?)?;
                if function == 0x01 {
                    Self::ReadCoils(bits)
                } else {
                    Self::ReadDiscreteInputs(bits)
                }
            }
            0x03 => Self::ReadHoldingRegisters(registers(data)?),
            0x04 => Self::ReadInputRegisters(registers(data)?),
            0x05 => {
                let (address, value) = exact(data, (u16p, u16p))?;
                let value = match value {
                    0xFF00 => true,
                    0x0000 => false,
                    _ => return None,
                };
                Self::WriteSingleCoil { address, value }
            }
            0x06 => {
                let (address, value) = exact(data, (u16p, u16p))?;
                Self::WriteSingleRegister { address, value }
            }
            0x07 => Self::ReadExceptionStatus(exact(data, u8p)?),
            0x08 => {
                let (sub_function, data) = exact(data, (u16p, restp))?;
                Self::Diagnostics { sub_function, data }
            }
            0x0B => {
                let (status, event_count) = exact(data, (u16p, u16p))?;
                Self::GetCommEventCounter { status, event_count }
            }
            0x0C => {
                let (count, status, event_count, message_count, events) = exact(data, (u8p, u16p, u16p, u16p, restp))?;
                if usize::from(count) != 6 + events.len() || events.len() > MAX_EVENTS {
                    return None;
                }
                Self::GetCommEventLog {
                    status,
                    event_count,
                    message_count,
                    events,
                }
            }
            0x0F | 0x10 => {
                let (start, quantity) = exact(data, (u16p, u16p))?;
                let max = if function == 0x0F {
                    MAX_WRITE_BITS
                } else {
                    MAX_WRITE_REGISTERS
                };
                if quantity > max {
                    return None;
                }
                let range = AddressRange::new(start, quantity)?;
                if function == 0x0F {
                    Self::WriteMultipleCoils(range)
                } else {
                    Self::WriteMultipleRegisters(range)
                }
            }
            0x11 => Self::ReportServerId(counted(data)?),
            0x14 => {
                let raw = counted(data)?;
                if raw.is_empty() || !file_reads_ok(raw) {
                    return None;
                }
                Self::ReadFileRecord(raw)
            }
            0x15 => {
                let raw = counted(data)?;
                if raw.is_empty() || scan_writes_shape(raw) != Some(true) {
                    return None;
                }
                Self::WriteFileRecord(raw)
            }
            0x16 => {
                let (address, and_mask, or_mask) = exact(data, (u16p, u16p, u16p))?;
                Self::MaskWriteRegister {
                    address,
                    and_mask,
                    or_mask,
                }
            }
            0x17 => Self::ReadWriteMultipleRegisters(registers(data)?),
            0x18 => {
                let (byte_count, fifo_count, values) = exact(data, (u16p, u16p, restp))?;
                if fifo_count > MAX_FIFO_COUNT
                    || u32::from(byte_count) != 2 + 2 * u32::from(fifo_count)
                    || values.len() != 2 * usize::from(fifo_count)
                {
                    return None;
                }
                Self::ReadFifoQueue(RegisterBytes::new(values)?)
            }
            0x2B => {
                let (mei, code, conformity, more, next_object_id, count, raw) =
                    exact(data, (u8p, u8p, u8p, u8p, u8p, u8p, restp))?;
                let code = match (mei, code) {
                    (0x0E, 1) => DeviceIdCode::Basic,
                    (0x0E, 2) => DeviceIdCode::Regular,
                    (0x0E, 3) => DeviceIdCode::Extended,
                    (0x0E, 4) => DeviceIdCode::Individual,
                    _ => return None,
                };
                let more_follows = match more {
                    0x00 => false,
                    0xFF => true,
                    _ => return None,
                };
                if !conformity_ok(conformity) {
                    return None;
                }
                Self::ReadDeviceIdentification {
                    code,
                    conformity,
                    more_follows,
                    next_object_id,
                    objects: DeviceIdObjects::new(raw, count)?,
                }
            }
            // is_standard() lists exactly the codes above.
            _ => Self::Custom { function, data },
        })
    }

    /// The function code byte on the wire (with 0x80 for an exception).
    pub fn function(&self) -> u8 {
        match self {
            Self::ReadCoils(_) => 0x01,
            Self::ReadDiscreteInputs(_) => 0x02,
            Self::ReadHoldingRegisters(_) => 0x03,
            Self::ReadInputRegisters(_) => 0x04,
            Self::WriteSingleCoil { .. } => 0x05,
            Self::WriteSingleRegister { .. } => 0x06,
            Self::ReadExceptionStatus(_) => 0x07,
            Self::Diagnostics { .. } => 0x08,
            Self::GetCommEventCounter { .. } => 0x0B,
            Self::GetCommEventLog { .. } => 0x0C,
            Self::WriteMultipleCoils(_) => 0x0F,
            Self::WriteMultipleRegisters(_) => 0x10,
            Self::ReportServerId(_) => 0x11,
            Self::ReadFileRecord(_) => 0x14,
            Self::WriteFileRecord(_) => 0x15,
            Self::MaskWriteRegister { .. } => 0x16,
            Self::ReadWriteMultipleRegisters(_) => 0x17,
            Self::ReadFifoQueue(_) => 0x18,
            Self::ReadDeviceIdentification { .. } => 0x2B,
            Self::Exception { function, .. } => function | 0x80,
            Self::Custom { function, .. } => *function,
        }
    }

    /// Encodes the response into `out` (cleared first).
    ///
    /// Refuses (with [`EncodeError::OutOfRange`]) what [`Response::decode`]
    /// would call malformed, so every encoded response decodes back.
    pub fn encode(&self, out: &mut PduBuf) -> Result<(), EncodeError> {
        use EncodeError::OutOfRange;
        out.clear();
        match *self {
            Self::ReadCoils(bits) | Self::ReadDiscreteInputs(bits) => {
                let bytes = bits.bytes();
                if bytes.is_empty() || bytes.len() > MAX_BIT_BYTES {
                    return Err(OutOfRange("bit count"));
                }
                out.push(self.function())?;
                push_counted(out, bytes)
            }
            Self::ReadHoldingRegisters(values)
            | Self::ReadInputRegisters(values)
            | Self::ReadWriteMultipleRegisters(values) => {
                if values.is_empty() || values.len() > usize::from(MAX_READ_REGISTERS) {
                    return Err(OutOfRange("register count"));
                }
                out.push(self.function())?;
                push_counted(out, values.bytes())
            }
            Self::WriteSingleCoil { address, value } => {
                out.push(0x05)?;
                out.push_u16(address)?;
                out.push_u16(if value { 0xFF00 } else { 0x0000 })
            }
            Self::WriteSingleRegister { address, value } => {
                out.push(0x06)?;
                out.push_u16(address)?;
                out.push_u16(value)
            }
            Self::ReadExceptionStatus(status) => out.extend(&[0x07, status]),
            Self::Diagnostics { sub_function, data } => {
                out.push(0x08)?;
                out.push_u16(sub_function)?;
                out.extend(data)
            }
            Self::GetCommEventCounter { status, event_count } => {
                out.push(0x0B)?;
                out.push_u16(status)?;
                out.push_u16(event_count)
            }
            Self::GetCommEventLog {
                status,
                event_count,
                message_count,
                events,
            } => {
                if events.len() > MAX_EVENTS {
                    return Err(OutOfRange("more than 64 events"));
                }
                out.push(0x0C)?;
                // ok: events.len() <= 64.
                out.push(6 + events.len() as u8)?;
                out.push_u16(status)?;
                out.push_u16(event_count)?;
                out.push_u16(message_count)?;
                out.extend(events)
            }
            Self::WriteMultipleCoils(range) | Self::WriteMultipleRegisters(range) => {
                let max = if matches!(self, Self::WriteMultipleCoils(_)) {
                    MAX_WRITE_BITS
                } else {
                    MAX_WRITE_REGISTERS
                };
                if range.count() > max {
                    return Err(OutOfRange("quantity"));
                }
                out.push(self.function())?;
                out.push_u16(range.start())?;
                out.push_u16(range.count())
            }
            Self::ReportServerId(data) => {
                out.push(0x11)?;
                push_counted(out, data)
            }
            Self::ReadFileRecord(raw) => {
                if raw.is_empty() || !file_reads_ok(raw) {
                    return Err(OutOfRange("file sub-responses"));
                }
                out.push(0x14)?;
                push_counted(out, raw)
            }
            Self::WriteFileRecord(raw) => {
                if raw.is_empty() || scan_writes_shape(raw) != Some(true) {
                    return Err(OutOfRange("file sub-requests"));
                }
                out.push(0x15)?;
                push_counted(out, raw)
            }
            Self::MaskWriteRegister {
                address,
                and_mask,
                or_mask,
            } => {
                out.push(0x16)?;
                out.push_u16(address)?;
                out.push_u16(and_mask)?;
                out.push_u16(or_mask)
            }
            Self::ReadFifoQueue(values) => {
                let n = u16::try_from(values.len()).map_err(|_| OutOfRange("fifo count"))?;
                if n > MAX_FIFO_COUNT {
                    return Err(OutOfRange("fifo count"));
                }
                out.push(0x18)?;
                out.push_u16(2 + 2 * n)?;
                out.push_u16(n)?;
                out.extend(values.bytes())
            }
            Self::ReadDeviceIdentification {
                code,
                conformity,
                more_follows,
                next_object_id,
                objects,
            } => {
                if !conformity_ok(conformity) {
                    return Err(OutOfRange("conformity level"));
                }
                out.extend(&[
                    0x2B,
                    0x0E,
                    code as u8,
                    conformity,
                    if more_follows { 0xFF } else { 0x00 },
                    next_object_id,
                    objects.count(),
                ])?;
                out.extend(objects.raw())
            }
            Self::Exception { function, exception } => {
                if function >= 0x80 {
                    return Err(OutOfRange("exception function code"));
                }
                out.extend(&[function | 0x80, exception.code()])
            }
            Self::Custom { function, data } => {
                if function == 0 || function >= 0x80 || crate::FunctionCode(function).is_standard() {
                    return Err(OutOfRange("custom function code"));
                }
                out.push(function)?;
                out.extend(data)
            }
        }
    }
}

/// A one-byte count and exactly that many bytes.
fn counted(data: &[u8]) -> Option<&[u8]> {
    let (count, bytes) = exact(data, (u8p, restp))?;
    (usize::from(count) == bytes.len()).then_some(bytes)
}

/// FC3/FC4/FC23 data: an even byte count of 2..=250 and the bytes.
fn registers(data: &[u8]) -> Option<RegisterBytes<'_>> {
    let bytes = counted(data)?;
    if bytes.is_empty() || bytes.len() > 2 * usize::from(MAX_READ_REGISTERS) {
        return None;
    }
    RegisterBytes::new(bytes)
}

/// FC20 sub-responses parse exactly: length byte L (odd, >= 3), reference
/// type 6, then L - 1 bytes of record data.
fn file_reads_ok(raw: &[u8]) -> bool {
    let mut rest = raw;
    while let Some((&len, tail)) = rest.split_first() {
        if len < 3 || len % 2 == 0 {
            return false;
        }
        match tail.split_first() {
            Some((&FILE_REFERENCE_TYPE, tail)) => match tail.get(usize::from(len - 1)..) {
                Some(r) => rest = r,
                None => return false,
            },
            _ => return false,
        }
    }
    true
}

/// FC21 echo: sub-requests parse exactly and carry reference type 6 (the
/// other limits are the request's business).
fn scan_writes_shape(raw: &[u8]) -> Option<bool> {
    scan_writes(raw, |reference, _, _, _| reference == FILE_REFERENCE_TYPE)
}

/// Fast path for FC1/FC2 answers: writes `function`, byte count and `bits`
/// packed LSB first into `out` (cleared first). At most 2000 bits.
pub fn write_bits(out: &mut PduBuf, function: u8, bits: &[bool]) -> Result<(), EncodeError> {
    let n = bits.len().div_ceil(8);
    if n > MAX_BIT_BYTES {
        return Err(EncodeError::TooLong);
    }
    out.clear();
    // ok: n <= 250.
    out.extend(&[function, n as u8])?;
    out.extend(ZEROS.get(..n).ok_or(EncodeError::TooLong)?)?;
    let dst = out.as_mut_slice().get_mut(2..).ok_or(EncodeError::TooLong)?;
    for (byte, chunk) in dst.iter_mut().zip(bits.chunks(8)) {
        let mut b = 0u8;
        for (i, &bit) in chunk.iter().enumerate() {
            b |= u8::from(bit) << i;
        }
        *byte = b;
    }
    Ok(())
}

/// Fast path for FC3/FC4/FC23 answers: writes `function`, a one-byte byte
/// count and `values` big-endian into `out` (cleared first). At most 125
/// values. FC24 has a two-byte byte count and a FIFO count: use [`write_fifo`].
pub fn write_registers(out: &mut PduBuf, function: u8, values: &[u16]) -> Result<(), EncodeError> {
    if values.len() > usize::from(MAX_READ_REGISTERS) {
        return Err(EncodeError::TooLong);
    }
    out.clear();
    // ok: len <= 125, so 2 * len <= 250.
    let n = values.len() * 2;
    out.extend(&[function, n as u8])?;
    put_registers(out, values)
}

/// Fast path for FC24 answers: writes 0x18, byte count (2 + 2 × count), FIFO
/// count and `values` big-endian into `out` (cleared first). At most 31 values.
pub fn write_fifo(out: &mut PduBuf, values: &[u16]) -> Result<(), EncodeError> {
    let count = u16::try_from(values.len()).map_err(|_| EncodeError::OutOfRange("fifo count"))?;
    if count > MAX_FIFO_COUNT {
        return Err(EncodeError::OutOfRange("fifo count"));
    }
    out.clear();
    let [b0, b1] = (2 + 2 * count).to_be_bytes();
    let [c0, c1] = count.to_be_bytes();
    out.extend(&[0x18, b0, b1, c0, c1])?;
    put_registers(out, values)
}

/// Appends `values` big-endian, written in place.
fn put_registers(out: &mut PduBuf, values: &[u16]) -> Result<(), EncodeError> {
    let start = out.len();
    let n = values.len().checked_mul(2).ok_or(EncodeError::TooLong)?;
    out.extend(ZEROS.get(..n).ok_or(EncodeError::TooLong)?)?;
    let dst = out.as_mut_slice().get_mut(start..).ok_or(EncodeError::TooLong)?;
    for (pair, v) in dst.chunks_exact_mut(2).zip(values) {
        pair.copy_from_slice(&v.to_be_bytes());
    }
    Ok(())
}
