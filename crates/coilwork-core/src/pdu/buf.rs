//! A fixed-capacity buffer for one PDU (at most 253 bytes), on the stack.

use super::EncodeError;
use crate::frame::MAX_PDU;

/// Room kept before the PDU for a frame header (MBAP: 7 bytes; RTU uses
/// the last one for its unit id).
const HEAD: usize = crate::frame::mbap::HEADER_LEN;

/// Room kept after the PDU for a frame trailer (RTU: the CRC).
const TAIL: usize = 2;

/// One PDU being written: function code first, then data. Never allocates.
///
/// The buffer keeps room for a frame header and trailer around the PDU, so
/// a connection frames an answer in place and copies it out once.
#[derive(Clone)]
pub struct PduBuf {
    bytes: [u8; HEAD + MAX_PDU + TAIL],
    len: usize,
}

impl Default for PduBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for PduBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("PduBuf").field(&self.as_slice()).finish()
    }
}

impl PduBuf {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            bytes: [0; HEAD + MAX_PDU + TAIL],
            len: 0,
        }
    }

    /// Empties the buffer.
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Bytes written so far.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(HEAD..HEAD + self.len).unwrap_or(&[])
    }

    /// Number of bytes written.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing was written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left.
    #[inline]
    pub fn remaining(&self) -> usize {
        MAX_PDU - self.len
    }

    /// Appends one byte.
    #[inline]
    pub fn push(&mut self, b: u8) -> Result<(), EncodeError> {
        self.extend(&[b])
    }

    /// Appends a big-endian u16.
    #[inline]
    pub fn push_u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.extend(&v.to_be_bytes())
    }

    /// Appends bytes.
    #[inline]
    pub fn extend(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let end = self.len.checked_add(data.len()).ok_or(EncodeError::TooLong)?;
        if end > MAX_PDU {
            return Err(EncodeError::TooLong);
        }
        let dst = self
            .bytes
            .get_mut(HEAD + self.len..HEAD + end)
            .ok_or(EncodeError::TooLong)?;
        dst.copy_from_slice(data);
        self.len = end;
        Ok(())
    }

    /// Appends `n` bytes filled in by `fill`; nothing is appended if it
    /// fails (or if `n` bytes do not fit: `too_long`).
    #[inline]
    pub(crate) fn append_with<E>(
        &mut self,
        n: usize,
        too_long: E,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let end = match self.len.checked_add(n) {
            Some(end) if end <= MAX_PDU => end,
            _ => return Err(too_long),
        };
        let Some(dst) = self.bytes.get_mut(HEAD + self.len..HEAD + end) else {
            return Err(too_long);
        };
        fill(dst)?;
        self.len = end;
        Ok(())
    }

    /// Mutable view of bytes already written (to patch a count, say).
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        self.bytes.get_mut(HEAD..HEAD + len).unwrap_or(&mut [])
    }

    /// Replaces the content with `data`.
    pub fn set(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        self.clear();
        self.extend(data)
    }

    /// Writes an exception response: `function | 0x80`, `code`.
    #[inline]
    pub fn set_exception(&mut self, function: u8, code: crate::ExceptionCode) {
        self.bytes[HEAD] = function | 0x80;
        self.bytes[HEAD + 1] = code.code();
        self.len = 2;
    }

    /// The PDU framed as an MBAP ADU, header written in place in front of it
    /// (the same bytes as [`crate::frame::mbap::encode`]).
    #[inline]
    pub(crate) fn mbap_adu(&mut self, transaction_id: u16, unit: u8) -> &[u8] {
        // ok: len <= MAX_PDU (253), so len + 1 fits a u16.
        let [l0, l1] = (self.len as u16 + 1).to_be_bytes();
        let [t0, t1] = transaction_id.to_be_bytes();
        self.bytes[..HEAD].copy_from_slice(&[t0, t1, 0, 0, l0, l1, unit]);
        self.bytes.get(..HEAD + self.len).unwrap_or(&[])
    }

    /// The PDU framed as an RTU ADU, unit id and CRC written in place
    /// around it (the same bytes as [`crate::frame::rtu::encode`]).
    #[inline]
    pub(crate) fn rtu_adu(&mut self, unit: u8) -> &[u8] {
        let end = HEAD + self.len;
        self.bytes[HEAD - 1] = unit;
        let crc = crate::frame::checksum::crc16(self.bytes.get(HEAD - 1..end).unwrap_or(&[]));
        if let Some(dst) = self.bytes.get_mut(end..end + TAIL) {
            dst.copy_from_slice(&crc.to_le_bytes());
        }
        self.bytes.get(HEAD - 1..end + TAIL).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{mbap, rtu};

    #[test]
    fn frames_in_place_as_the_encoders_do() {
        let mut b = PduBuf::new();
        for pdu in [&[0x03u8, 0x02, 0x12, 0x34][..], &[0x83, 0x02], &[0xAB; MAX_PDU]] {
            b.set(pdu).unwrap();
            let mut want = Vec::new();
            mbap::encode(0x1501, 0x11, pdu, &mut want);
            assert_eq!(b.mbap_adu(0x1501, 0x11), &want[..]);
            want.clear();
            rtu::encode(0x11, pdu, &mut want);
            assert_eq!(b.rtu_adu(0x11), &want[..]);
            assert_eq!(b.as_slice(), pdu, "the PDU itself is unchanged");
        }
        assert_eq!(b.extend(&[0]), Err(EncodeError::TooLong), "253 bytes at most");
        b.clear();
        assert_eq!(
            b.append_with(254, EncodeError::TooLong, |_| Ok(())),
            Err(EncodeError::TooLong)
        );
        assert_eq!(b.len(), 0);
    }
}
