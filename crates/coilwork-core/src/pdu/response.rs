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
    /// 0x01 (decoded: 8 bits per byte, padding included).
    ReadCoils(PackedBits<'a>),
    /// 0x02 (decoded: 8 bits per byte, padding included).
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
        Self::decode_standard(function, data)
    }

    /// The data of a response to a public function code.
    fn decode_standard(function: u8, data: &'a [u8]) -> Option<Self> {
        Some(match function {
            0x01 | 0x02 => decode_bits(function, data)?,
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
            0x0C => decode_event_log(data)?,
            0x0F | 0x10 => decode_write_echo(function, data)?,
            0x11 => Self::ReportServerId(counted(data)?),
            0x14 => Self::ReadFileRecord(counted(data).filter(|raw| !raw.is_empty() && file_reads_ok(raw))?),
            0x15 => Self::WriteFileRecord(
                counted(data).filter(|raw| !raw.is_empty() && scan_writes_shape(raw) == Some(true))?,
            ),
            0x16 => {
                let (address, and_mask, or_mask) = exact(data, (u16p, u16p, u16p))?;
                Self::MaskWriteRegister {
                    address,
                    and_mask,
                    or_mask,
                }
            }
            0x17 => Self::ReadWriteMultipleRegisters(registers(data)?),
            0x18 => decode_fifo(data)?,
            0x2B => decode_device_id(data)?,
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
                let n = bits.bytes().len();
                encode_counted(
                    out,
                    self.function(),
                    bits.bytes(),
                    (1..=MAX_BIT_BYTES).contains(&n),
                    "bit count",
                )
            }
            Self::ReadHoldingRegisters(values)
            | Self::ReadInputRegisters(values)
            | Self::ReadWriteMultipleRegisters(values) => {
                let ok = (1..=usize::from(MAX_READ_REGISTERS)).contains(&values.len());
                encode_counted(out, self.function(), values.bytes(), ok, "register count")
            }
            Self::WriteSingleCoil { address, value } => {
                encode_words(out, 0x05, &[address, if value { 0xFF00 } else { 0x0000 }])
            }
            Self::WriteSingleRegister { address, value } => encode_words(out, 0x06, &[address, value]),
            Self::ReadExceptionStatus(status) => out.extend(&[0x07, status]),
            Self::Diagnostics { sub_function, data } => {
                encode_words(out, 0x08, &[sub_function])?;
                out.extend(data)
            }
            Self::GetCommEventCounter { status, event_count } => encode_words(out, 0x0B, &[status, event_count]),
            Self::GetCommEventLog {
                status,
                event_count,
                message_count,
                events,
            } => encode_event_log(out, [status, event_count, message_count], events),
            Self::WriteMultipleCoils(range) | Self::WriteMultipleRegisters(range) => {
                encode_write_echo(out, self.function(), range)
            }
            Self::ReportServerId(data) => encode_counted(out, 0x11, data, true, "server id"),
            Self::ReadFileRecord(raw) => {
                let ok = !raw.is_empty() && file_reads_ok(raw);
                encode_counted(out, 0x14, raw, ok, "file sub-responses")
            }
            Self::WriteFileRecord(raw) => {
                let ok = !raw.is_empty() && scan_writes_shape(raw) == Some(true);
                encode_counted(out, 0x15, raw, ok, "file sub-requests")
            }
            Self::MaskWriteRegister {
                address,
                and_mask,
                or_mask,
            } => encode_words(out, 0x16, &[address, and_mask, or_mask]),
            Self::ReadFifoQueue(values) => encode_fifo(out, values),
            Self::ReadDeviceIdentification { .. } => self.encode_device_id(out),
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

    /// FC43 / MEI 14: header, then the objects as they are.
    fn encode_device_id(&self, out: &mut PduBuf) -> Result<(), EncodeError> {
        let Self::ReadDeviceIdentification {
            code,
            conformity,
            more_follows,
            next_object_id,
            objects,
        } = *self
        else {
            return Err(EncodeError::OutOfRange("not a device identification"));
        };
        if !conformity_ok(conformity) {
            return Err(EncodeError::OutOfRange("conformity level"));
        }
        let more = if more_follows { 0xFF } else { 0x00 };
        out.extend(&[
            0x2B,
            0x0E,
            code as u8,
            conformity,
            more,
            next_object_id,
            objects.count(),
        ])?;
        out.extend(objects.raw())
    }
}

/// `function`, then big-endian `words`.
fn encode_words(out: &mut PduBuf, function: u8, words: &[u16]) -> Result<(), EncodeError> {
    out.push(function)?;
    for w in words {
        out.push_u16(*w)?;
    }
    Ok(())
}

/// `function`, a one-byte count and `bytes`; `ok` false refuses them as `what`.
fn encode_counted(
    out: &mut PduBuf,
    function: u8,
    bytes: &[u8],
    ok: bool,
    what: &'static str,
) -> Result<(), EncodeError> {
    if !ok {
        return Err(EncodeError::OutOfRange(what));
    }
    out.push(function)?;
    push_counted(out, bytes)
}

/// FC24: byte count (2 + 2 × count), FIFO count (at most 31), values.
fn encode_fifo(out: &mut PduBuf, values: RegisterBytes<'_>) -> Result<(), EncodeError> {
    let n = u16::try_from(values.len()).map_err(|_| EncodeError::OutOfRange("fifo count"))?;
    if n > MAX_FIFO_COUNT {
        return Err(EncodeError::OutOfRange("fifo count"));
    }
    encode_words(out, 0x18, &[2 + 2 * n, n])?;
    out.extend(values.bytes())
}

/// FC12: byte count, status, event count, message count, events (at most 64).
fn encode_event_log(out: &mut PduBuf, words: [u16; 3], events: &[u8]) -> Result<(), EncodeError> {
    if events.len() > MAX_EVENTS {
        return Err(EncodeError::OutOfRange("more than 64 events"));
    }
    // ok: events.len() <= 64.
    out.extend(&[0x0C, 6 + events.len() as u8])?;
    for w in words {
        out.push_u16(w)?;
    }
    out.extend(events)
}

/// FC15 / FC16 (`function`): the echo of start and quantity.
fn encode_write_echo(out: &mut PduBuf, function: u8, range: AddressRange) -> Result<(), EncodeError> {
    let max = if function == 0x0F {
        MAX_WRITE_BITS
    } else {
        MAX_WRITE_REGISTERS
    };
    if range.count() > max {
        return Err(EncodeError::OutOfRange("quantity"));
    }
    out.push(function)?;
    out.push_u16(range.start())?;
    out.push_u16(range.count())
}

/// FC1 / FC2: a byte count of 1..=250 and the packed bits (padding included).
fn decode_bits(function: u8, data: &[u8]) -> Option<Response<'_>> {
    let bytes = counted(data)?;
    if bytes.is_empty() || bytes.len() > MAX_BIT_BYTES {
        return None;
    }
    // ok: len <= 250, so 8 * len <= 2000.
    let bits = PackedBits::new(bytes, u16::try_from(bytes.len() * 8).ok()?)?;
    Some(if function == 0x01 {
        Response::ReadCoils(bits)
    } else {
        Response::ReadDiscreteInputs(bits)
    })
}

/// FC12: byte count, status, event count, message count, up to 64 events.
fn decode_event_log(data: &[u8]) -> Option<Response<'_>> {
    let (count, status, event_count, message_count, events) = exact(data, (u8p, u16p, u16p, u16p, restp))?;
    if usize::from(count) != 6 + events.len() || events.len() > MAX_EVENTS {
        return None;
    }
    Some(Response::GetCommEventLog {
        status,
        event_count,
        message_count,
        events,
    })
}

/// FC15 / FC16: the echo of start and quantity.
fn decode_write_echo(function: u8, data: &[u8]) -> Option<Response<'_>> {
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
    Some(if function == 0x0F {
        Response::WriteMultipleCoils(range)
    } else {
        Response::WriteMultipleRegisters(range)
    })
}

/// FC24: byte count, FIFO count (at most 31) and the values.
fn decode_fifo(data: &[u8]) -> Option<Response<'_>> {
    let (byte_count, fifo_count, values) = exact(data, (u16p, u16p, restp))?;
    if fifo_count > MAX_FIFO_COUNT
        || u32::from(byte_count) != 2 + 2 * u32::from(fifo_count)
        || values.len() != 2 * usize::from(fifo_count)
    {
        return None;
    }
    Some(Response::ReadFifoQueue(RegisterBytes::new(values)?))
}

/// FC43 / MEI 14: read device identification.
fn decode_device_id(data: &[u8]) -> Option<Response<'_>> {
    let (mei, code, conformity, more, next_object_id, count, raw) = exact(data, (u8p, u8p, u8p, u8p, u8p, u8p, restp))?;
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
    Some(Response::ReadDeviceIdentification {
        code,
        conformity,
        more_follows,
        next_object_id,
        objects: DeviceIdObjects::new(raw, count)?,
    })
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
    let full = bits.chunks_exact(8);
    let tail = full.remainder();
    let mut dst = dst.iter_mut();
    // `full` first: zip must not take a byte from `dst` once `full` is done.
    for (chunk, byte) in full.zip(dst.by_ref()) {
        if let Ok(eight) = <[bool; 8]>::try_from(chunk) {
            // Byte i of `v` is 0 or 1; the multiply moves bit 8i to bit 56 + i
            // and no partial products overlap, so the top byte is the packing.
            let v = u64::from_le_bytes(eight.map(u8::from));
            *byte = (v.wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8;
        }
    }
    if let Some(byte) = dst.next() {
        *byte = tail.iter().rev().fold(0u8, |acc, &bit| (acc << 1) | u8::from(bit));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::request::tests::{file_writes_strategy, noise_strategy, range_strategy};
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn ok(pdu: &[u8]) -> Response<'_> {
        Response::decode(pdu).unwrap_or_else(|e| panic!("{pdu:02X?}: {e}"))
    }

    fn bad(pdu: &[u8]) {
        assert_eq!(
            Response::decode(pdu),
            Err(MalformedResponse {
                function: pdu.first().copied().unwrap_or(0)
            }),
            "{pdu:02X?}"
        );
    }

    fn encoded(r: &Response<'_>) -> Vec<u8> {
        let mut b = PduBuf::new();
        r.encode(&mut b).unwrap();
        b.as_slice().to_vec()
    }

    fn spec(pdu: &[u8], want: Response<'_>) {
        assert_eq!(ok(pdu), want);
        assert_eq!(encoded(&want), pdu);
    }

    fn range(start: u16, count: u16) -> AddressRange {
        AddressRange::new(start, count).unwrap()
    }

    fn regs(b: &[u8]) -> RegisterBytes<'_> {
        RegisterBytes::new(b).unwrap()
    }

    // ---- Examples of the Modbus Application Protocol v1.1b3, section 6 ----

    #[test]
    fn spec_examples_reads() {
        let pdu = [0x01, 0x03, 0xCD, 0x6B, 0x05];
        let Response::ReadCoils(bits) = ok(&pdu) else {
            panic!("wrong variant")
        };
        assert_eq!(bits.len(), 24, "8 bits per byte: the quantity is not on the wire");
        // Coils 27..20 = CD, 35..28 = 6B, 38..36 = 101.
        assert_eq!(bits.get(0), Some(true));
        assert_eq!(bits.get(1), Some(false));
        assert_eq!(bits.get(18), Some(true));
        assert_eq!(encoded(&ok(&pdu)), pdu);
        spec(
            &[0x02, 0x03, 0xAC, 0xDB, 0x35],
            Response::ReadDiscreteInputs(PackedBits::new(&[0xAC, 0xDB, 0x35], 24).unwrap()),
        );
        let pdu = [0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64];
        let Response::ReadHoldingRegisters(values) = ok(&pdu) else {
            panic!("wrong variant")
        };
        assert_eq!(values.iter().collect::<Vec<_>>(), [555, 0, 100]);
        assert_eq!(encoded(&ok(&pdu)), pdu);
        spec(
            &[0x04, 0x02, 0x00, 0x0A],
            Response::ReadInputRegisters(regs(&[0x00, 0x0A])),
        );
        spec(
            &[
                0x17, 0x0C, 0x00, 0xFE, 0x0A, 0xCD, 0x00, 0x01, 0x00, 0x03, 0x00, 0x0D, 0x00, 0xFF,
            ],
            Response::ReadWriteMultipleRegisters(regs(&[
                0x00, 0xFE, 0x0A, 0xCD, 0x00, 0x01, 0x00, 0x03, 0x00, 0x0D, 0x00, 0xFF,
            ])),
        );
    }

    #[test]
    fn spec_examples_writes() {
        spec(
            &[0x05, 0x00, 0xAC, 0xFF, 0x00],
            Response::WriteSingleCoil {
                address: 172,
                value: true,
            },
        );
        spec(
            &[0x06, 0x00, 0x01, 0x00, 0x03],
            Response::WriteSingleRegister { address: 1, value: 3 },
        );
        spec(
            &[0x0F, 0x00, 0x13, 0x00, 0x0A],
            Response::WriteMultipleCoils(range(19, 10)),
        );
        spec(
            &[0x10, 0x00, 0x01, 0x00, 0x02],
            Response::WriteMultipleRegisters(range(1, 2)),
        );
        spec(
            &[0x16, 0x00, 0x04, 0x00, 0xF2, 0x00, 0x25],
            Response::MaskWriteRegister {
                address: 4,
                and_mask: 0xF2,
                or_mask: 0x25,
            },
        );
    }

    #[test]
    fn spec_examples_serial_line() {
        spec(&[0x07, 0x6D], Response::ReadExceptionStatus(0x6D));
        spec(
            &[0x08, 0x00, 0x00, 0xA5, 0x37],
            Response::Diagnostics {
                sub_function: 0,
                data: &[0xA5, 0x37],
            },
        );
        spec(
            &[0x0B, 0xFF, 0xFF, 0x01, 0x08],
            Response::GetCommEventCounter {
                status: 0xFFFF,
                event_count: 0x0108,
            },
        );
        spec(
            &[0x0C, 0x08, 0x00, 0x00, 0x01, 0x08, 0x01, 0x21, 0x20, 0x00],
            Response::GetCommEventLog {
                status: 0,
                event_count: 0x0108,
                message_count: 0x0121,
                events: &[0x20, 0x00],
            },
        );
        // The spec leaves FC17's content device-specific: server id 0x0A, run indicator ON.
        spec(&[0x11, 0x02, 0x0A, 0xFF], Response::ReportServerId(&[0x0A, 0xFF]));
    }

    #[test]
    fn spec_examples_files_fifo() {
        let pdu = [
            0x14, 0x0C, 0x05, 0x06, 0x0D, 0xFE, 0x00, 0x20, 0x05, 0x06, 0x33, 0xCD, 0x00, 0x40,
        ];
        spec(&pdu, Response::ReadFileRecord(&pdu[2..]));
        let pdu = [
            0x15, 0x0D, 0x06, 0x00, 0x04, 0x00, 0x07, 0x00, 0x03, 0x06, 0xAF, 0x04, 0xBE, 0x10, 0x0D,
        ];
        spec(&pdu, Response::WriteFileRecord(&pdu[2..]));
        spec(
            &[0x18, 0x00, 0x06, 0x00, 0x02, 0x01, 0xB8, 0x12, 0x84],
            Response::ReadFifoQueue(regs(&[0x01, 0xB8, 0x12, 0x84])),
        );
    }

    #[test]
    fn spec_example_device_id() {
        // The spec prints 0x0D as the length of "Product code XX"; the string has
        // 15 bytes, so the consistent length 0x0F is used here.
        let mut pdu = vec![0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, 0x03];
        pdu.extend_from_slice(&[0x00, 0x16]);
        pdu.extend_from_slice(b"Company identification");
        pdu.extend_from_slice(&[0x01, 0x0F]);
        pdu.extend_from_slice(b"Product code XX");
        pdu.extend_from_slice(&[0x02, 0x05]);
        pdu.extend_from_slice(b"V2.11");
        let Response::ReadDeviceIdentification {
            code,
            conformity,
            more_follows,
            next_object_id,
            objects,
        } = ok(&pdu)
        else {
            panic!("wrong variant")
        };
        assert_eq!(code, DeviceIdCode::Basic);
        assert_eq!(conformity, 0x01);
        assert!(!more_follows);
        assert_eq!(next_object_id, 0);
        assert_eq!(
            objects.iter().collect::<Vec<_>>(),
            [
                (0x00, &b"Company identification"[..]),
                (0x01, &b"Product code XX"[..]),
                (0x02, &b"V2.11"[..]),
            ]
        );
        assert_eq!(encoded(&ok(&pdu)), pdu);
        // With the printed 0x0D the objects no longer parse exactly.
        pdu[7 + 2 + 22 + 1] = 0x0D;
        bad(&pdu);
    }

    #[test]
    fn exceptions_and_custom() {
        spec(
            &[0x81, 0x02],
            Response::Exception {
                function: 0x01,
                exception: ExceptionCode::IllegalDataAddress,
            },
        );
        spec(
            &[0xAB, 0x01],
            Response::Exception {
                function: 0x2B,
                exception: ExceptionCode::IllegalFunction,
            },
        );
        spec(
            &[0x41, 0x01, 0x02],
            Response::Custom {
                function: 0x41,
                data: &[1, 2],
            },
        );
        bad(&[0x83, 0x09]); // undefined exception code
        bad(&[0x83, 0x02, 0x00]); // long
        bad(&[0x83]); // short
        bad(&[0x00]);
        bad(&[]);
        let mut b = PduBuf::new();
        let r = Response::Exception {
            function: 0x83,
            exception: ExceptionCode::IllegalFunction,
        };
        assert!(matches!(r.encode(&mut b), Err(EncodeError::OutOfRange(_))));
        let r = Response::Custom {
            function: 0x03,
            data: &[],
        };
        assert!(matches!(r.encode(&mut b), Err(EncodeError::OutOfRange(_))));
    }

    #[test]
    fn malformed_responses() {
        bad(&[0x01, 0x03, 0xCD, 0x6B]); // byte count 3, 2 bytes
        bad(&[0x01, 0x02, 0xCD, 0x6B, 0x05]); // byte count 2, 3 bytes
        bad(&[0x01, 0x00]); // no bits
        bad(&[0x01]);
        bad(&[0x03, 0x03, 0x02, 0x2B, 0x00]); // odd byte count
        bad(&[0x03, 0x00]); // no registers
        bad(&[0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00]); // short
        let mut r = vec![0x03, 0xFC];
        r.resize(2 + 0xFC, 0);
        bad(&r); // 126 registers
        bad(&[0x05, 0x00, 0xAC, 0x12, 0x34]); // bad coil value
        bad(&[0x06, 0x00, 0x01, 0x00]);
        bad(&[0x07]);
        bad(&[0x08, 0x00]);
        bad(&[0x0B, 0xFF, 0xFF, 0x01]);
        bad(&[0x0C, 0x07, 0x00, 0x00, 0x01, 0x08, 0x01, 0x21, 0x20, 0x00]); // byte count != 6 + events
        let mut log = vec![0x0C, 6 + 65, 0, 0, 0, 0, 0, 0];
        log.resize(8 + 65, 0);
        bad(&log); // 65 events
        bad(&[0x0F, 0xFF, 0xFF, 0x00, 0x02]); // range overflow
        bad(&[0x10, 0x00, 0x01, 0x00, 0x00]); // quantity 0
        bad(&[0x10, 0x00, 0x01, 0x00, 0x7C]); // quantity 124
        bad(&[0x11, 0x03, 0x0A, 0xFF]);
        bad(&[0x14, 0x04, 0x04, 0x06, 0x0D, 0xFE]); // sub-response length even
        bad(&[0x14, 0x04, 0x03, 0x07, 0x0D, 0xFE]); // reference type 7
        bad(&[0x14, 0x05, 0x05, 0x06, 0x0D, 0xFE, 0x00]); // sub-response truncated
        bad(&[0x14, 0x00]);
        bad(&[0x15, 0x09, 0x06, 0x00, 0x04, 0x00, 0x07, 0x00, 0x02, 0x06, 0xAF]); // 2 records, 1 present
        bad(&[0x16, 0x00, 0x04, 0x00, 0xF2, 0x00]);
        bad(&[0x18, 0x00, 0x04, 0x00, 0x02, 0x01, 0xB8, 0x12, 0x84]); // byte count != 2 + 2 * fifo count
        bad(&[0x18, 0x00, 0x06, 0x00, 0x02, 0x01, 0xB8, 0x12]); // values short
        let mut fifo = vec![0x18, 0x00, 0x42, 0x00, 0x20];
        fifo.resize(5 + 64, 0);
        bad(&fifo); // fifo count 32
        bad(&[0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x02, b'A']); // object length 2, 1 byte
        bad(&[0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, 0x02, 0x00, 0x01, b'A']); // 2 objects, 1 present
        bad(&[0x2B, 0x0E, 0x05, 0x01, 0x00, 0x00, 0x00]); // read code 5
        bad(&[0x2B, 0x0E, 0x01, 0x04, 0x00, 0x00, 0x00]); // conformity 4
        bad(&[0x2B, 0x0E, 0x01, 0x01, 0x01, 0x00, 0x00]); // more follows 0x01
        bad(&[0x2B, 0x0D, 0x01, 0x01, 0x00, 0x00, 0x00]); // MEI 0x0D
    }

    // ---- Fast paths ----

    #[test]
    fn write_bits_packs_lsb_first() {
        let mut b = PduBuf::new();
        // Coils 20..=38 of the FC1 example: CD 6B 05.
        let bits: Vec<bool> = [0xCDu8, 0x6B, 0x05]
            .iter()
            .flat_map(|byte| (0..8).map(move |i| byte & (1 << i) != 0))
            .take(19)
            .collect();
        write_bits(&mut b, 0x01, &bits).unwrap();
        assert_eq!(b.as_slice(), [0x01, 0x03, 0xCD, 0x6B, 0x05]);
        write_bits(&mut b, 0x02, &[true]).unwrap();
        assert_eq!(b.as_slice(), [0x02, 0x01, 0x01]);
        write_bits(&mut b, 0x02, &[true; 2000]).unwrap();
        assert_eq!(b.len(), 252);
        assert!(b.as_slice()[2..].iter().all(|&x| x == 0xFF));
        assert_eq!(write_bits(&mut b, 0x01, &[false; 2001]), Err(EncodeError::TooLong));
    }

    #[test]
    fn write_registers_and_fifo() {
        let mut b = PduBuf::new();
        write_registers(&mut b, 0x03, &[555, 0, 100]).unwrap();
        assert_eq!(b.as_slice(), [0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64]);
        write_registers(&mut b, 0x04, &[0x0A]).unwrap();
        assert_eq!(b.as_slice(), [0x04, 0x02, 0x00, 0x0A]);
        write_registers(&mut b, 0x03, &[0xABCD; 125]).unwrap();
        assert_eq!(b.len(), 252);
        assert_eq!(write_registers(&mut b, 0x03, &[0; 126]), Err(EncodeError::TooLong));
        write_fifo(&mut b, &[0x01B8, 0x1284]).unwrap();
        assert_eq!(b.as_slice(), [0x18, 0x00, 0x06, 0x00, 0x02, 0x01, 0xB8, 0x12, 0x84]);
        write_fifo(&mut b, &[]).unwrap();
        assert_eq!(b.as_slice(), [0x18, 0x00, 0x02, 0x00, 0x00]);
        write_fifo(&mut b, &[7; 31]).unwrap();
        assert_eq!(b.len(), 67);
        assert!(Response::decode(b.as_slice()).is_ok());
        assert!(matches!(write_fifo(&mut b, &[0; 32]), Err(EncodeError::OutOfRange(_))));
    }

    // ---- Property tests ----

    /// A response with its borrowed data held in owned buffers.
    #[derive(Debug, Clone)]
    enum OwnedResponse {
        Plain(Response<'static>),
        Bits(u8, Vec<u8>),
        Registers(u8, Vec<u8>),
        Diagnostics(u16, Vec<u8>),
        EventLog(u16, u16, u16, Vec<u8>),
        ServerId(Vec<u8>),
        ReadFile(Vec<u8>),
        WriteFile(Vec<u8>),
        Fifo(Vec<u8>),
        DeviceId(DeviceIdCode, u8, bool, u8, u8, Vec<u8>),
        Custom(u8, Vec<u8>),
    }

    impl OwnedResponse {
        fn borrow(&self) -> Response<'_> {
            match self {
                Self::Plain(r) => *r,
                Self::Bits(f, b) => {
                    let bits = PackedBits::new(b, (b.len() * 8) as u16).unwrap();
                    if *f == 1 {
                        Response::ReadCoils(bits)
                    } else {
                        Response::ReadDiscreteInputs(bits)
                    }
                }
                Self::Registers(f, b) => match f {
                    3 => Response::ReadHoldingRegisters(regs(b)),
                    4 => Response::ReadInputRegisters(regs(b)),
                    _ => Response::ReadWriteMultipleRegisters(regs(b)),
                },
                Self::Diagnostics(sub_function, data) => Response::Diagnostics {
                    sub_function: *sub_function,
                    data,
                },
                Self::EventLog(status, event_count, message_count, events) => Response::GetCommEventLog {
                    status: *status,
                    event_count: *event_count,
                    message_count: *message_count,
                    events,
                },
                Self::ServerId(d) => Response::ReportServerId(d),
                Self::ReadFile(d) => Response::ReadFileRecord(d),
                Self::WriteFile(d) => Response::WriteFileRecord(d),
                Self::Fifo(d) => Response::ReadFifoQueue(regs(d)),
                Self::DeviceId(code, conformity, more_follows, next_object_id, count, raw) => {
                    Response::ReadDeviceIdentification {
                        code: *code,
                        conformity: *conformity,
                        more_follows: *more_follows,
                        next_object_id: *next_object_id,
                        objects: DeviceIdObjects::new(raw, *count).unwrap(),
                    }
                }
                Self::Custom(function, data) => Response::Custom {
                    function: *function,
                    data,
                },
            }
        }
    }

    fn exception_strategy() -> impl Strategy<Value = ExceptionCode> {
        proptest::sample::select((0..=255u8).filter_map(ExceptionCode::from_code).collect::<Vec<_>>())
    }

    fn plain_strategy() -> impl Strategy<Value = Response<'static>> {
        prop_oneof![
            (any::<u16>(), any::<bool>()).prop_map(|(address, value)| Response::WriteSingleCoil { address, value }),
            (any::<u16>(), any::<u16>()).prop_map(|(address, value)| Response::WriteSingleRegister { address, value }),
            any::<u8>().prop_map(Response::ReadExceptionStatus),
            (any::<u16>(), any::<u16>())
                .prop_map(|(status, event_count)| Response::GetCommEventCounter { status, event_count }),
            range_strategy(MAX_WRITE_BITS).prop_map(Response::WriteMultipleCoils),
            range_strategy(MAX_WRITE_REGISTERS).prop_map(Response::WriteMultipleRegisters),
            (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(address, and_mask, or_mask)| {
                Response::MaskWriteRegister {
                    address,
                    and_mask,
                    or_mask,
                }
            }),
            (0..0x80u8, exception_strategy())
                .prop_map(|(function, exception)| Response::Exception { function, exception }),
        ]
    }

    /// FC20 sub-responses: 1..=20 of them, each length byte, type 6, records.
    fn file_reads_strategy() -> impl Strategy<Value = Vec<u8>> {
        (1..=20usize).prop_flat_map(|n| {
            let max_records = (251 / n - 2) / 2;
            vec((1..=max_records).prop_flat_map(|k| vec(any::<u8>(), 2 * k)), n).prop_map(|subs| {
                let mut raw = Vec::new();
                for data in subs {
                    raw.push((data.len() + 1) as u8);
                    raw.push(6);
                    raw.extend_from_slice(&data);
                }
                raw
            })
        })
    }

    fn device_id_strategy() -> impl Strategy<Value = OwnedResponse> {
        (
            proptest::sample::select(vec![
                DeviceIdCode::Basic,
                DeviceIdCode::Regular,
                DeviceIdCode::Extended,
                DeviceIdCode::Individual,
            ]),
            proptest::sample::select(vec![0x01u8, 0x02, 0x03, 0x81, 0x82, 0x83]),
            any::<bool>(),
            any::<u8>(),
            vec((any::<u8>(), vec(any::<u8>(), 0..=20)), 0..=8),
        )
            .prop_map(|(code, conformity, more, next, objects)| {
                let mut raw = Vec::new();
                for (id, value) in &objects {
                    raw.push(*id);
                    raw.push(value.len() as u8);
                    raw.extend_from_slice(value);
                }
                OwnedResponse::DeviceId(code, conformity, more, next, objects.len() as u8, raw)
            })
    }

    fn response_strategy() -> impl Strategy<Value = OwnedResponse> {
        prop_oneof![
            4 => plain_strategy().prop_map(OwnedResponse::Plain),
            1 => (1..=2u8, vec(any::<u8>(), 1..=250)).prop_map(|(f, b)| OwnedResponse::Bits(f, b)),
            1 => (proptest::sample::select(vec![3u8, 4, 0x17]), vec(any::<[u8; 2]>(), 1..=125))
                .prop_map(|(f, v)| OwnedResponse::Registers(f, v.concat())),
            1 => (any::<u16>(), vec(any::<u8>(), 0..=250)).prop_map(|(s, d)| OwnedResponse::Diagnostics(s, d)),
            1 => (any::<u16>(), any::<u16>(), any::<u16>(), vec(any::<u8>(), 0..=64))
                .prop_map(|(s, e, m, ev)| OwnedResponse::EventLog(s, e, m, ev)),
            1 => vec(any::<u8>(), 0..=251).prop_map(OwnedResponse::ServerId),
            1 => file_reads_strategy().prop_map(OwnedResponse::ReadFile),
            1 => file_writes_strategy().prop_map(OwnedResponse::WriteFile),
            1 => vec(any::<[u8; 2]>(), 0..=31).prop_map(|v| OwnedResponse::Fifo(v.concat())),
            1 => device_id_strategy(),
            1 => (
                (1u8..=0x7F).prop_filter("not a public code", |f| !crate::FunctionCode(*f).is_standard()),
                vec(any::<u8>(), 0..=252)
            )
                .prop_map(|(f, d)| OwnedResponse::Custom(f, d)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn response_round_trips(owned in response_strategy()) {
            let response = owned.borrow();
            let mut buf = PduBuf::new();
            response.encode(&mut buf).unwrap();
            let bytes = buf.as_slice().to_vec();
            prop_assert_eq!(bytes[0], response.function());
            prop_assert_eq!(Response::decode(&bytes), Ok(response));
        }

        #[test]
        fn response_decode_never_panics_and_reencodes(bytes in noise_strategy()) {
            if let Ok(response) = Response::decode(&bytes) {
                let mut buf = PduBuf::new();
                response.encode(&mut buf).unwrap();
                prop_assert_eq!(buf.as_slice(), &bytes[..]);
            }
        }

        #[test]
        fn fast_paths_match_encode(bits in vec(any::<bool>(), 1..=2000), values in vec(any::<u16>(), 1..=125)) {
            let mut fast = PduBuf::new();
            write_bits(&mut fast, 0x01, &bits).unwrap();
            let Ok(Response::ReadCoils(decoded)) = Response::decode(fast.as_slice()) else {
                panic!("write_bits output does not decode");
            };
            prop_assert_eq!(decoded.iter().take(bits.len()).collect::<Vec<_>>(), bits.clone());
            prop_assert!(decoded.iter().skip(bits.len()).all(|b| !b), "padding is zero");

            write_registers(&mut fast, 0x03, &values).unwrap();
            let Ok(Response::ReadHoldingRegisters(decoded)) = Response::decode(fast.as_slice()) else {
                panic!("write_registers output does not decode");
            };
            prop_assert_eq!(decoded.iter().collect::<Vec<_>>(), values.clone());

            let fifo = &values[..values.len().min(31)];
            write_fifo(&mut fast, fifo).unwrap();
            let Ok(Response::ReadFifoQueue(decoded)) = Response::decode(fast.as_slice()) else {
                panic!("write_fifo output does not decode");
            };
            prop_assert_eq!(decoded.iter().collect::<Vec<_>>(), fifo.to_vec());
        }
    }
}
