//! A fixed-capacity buffer for one PDU (at most 253 bytes), on the stack.

use super::EncodeError;
use crate::frame::MAX_PDU;

/// One PDU being written: function code first, then data. Never allocates.
#[derive(Clone)]
pub struct PduBuf {
    bytes: [u8; MAX_PDU],
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
            bytes: [0; MAX_PDU],
            len: 0,
        }
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// Number of bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left.
    pub fn remaining(&self) -> usize {
        MAX_PDU - self.len
    }

    /// Appends one byte.
    pub fn push(&mut self, b: u8) -> Result<(), EncodeError> {
        self.extend(&[b])
    }

    /// Appends a big-endian u16.
    pub fn push_u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.extend(&v.to_be_bytes())
    }

    /// Appends bytes.
    pub fn extend(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let end = self.len.checked_add(data.len()).ok_or(EncodeError::TooLong)?;
        let dst = self.bytes.get_mut(self.len..end).ok_or(EncodeError::TooLong)?;
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
        let Some(end) = self.len.checked_add(n) else {
            return Err(too_long);
        };
        let Some(dst) = self.bytes.get_mut(self.len..end) else {
            return Err(too_long);
        };
        fill(dst)?;
        self.len = end;
        Ok(())
    }

    /// Mutable view of bytes already written (to patch a count, say).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        self.bytes.get_mut(..len).unwrap_or(&mut [])
    }

    /// Replaces the content with `data`.
    pub fn set(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        self.clear();
        self.extend(data)
    }

    /// Writes an exception response: `function | 0x80`, `code`.
    pub fn set_exception(&mut self, function: u8, code: crate::ExceptionCode) {
        self.bytes[0] = function | 0x80;
        self.bytes[1] = code.code();
        self.len = 2;
    }
}
