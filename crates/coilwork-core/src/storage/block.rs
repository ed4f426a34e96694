//! Built-in data blocks: sequential (dense) and sparse.
//!
//! A block holds 16-bit values; a bit table reads a value as `!= 0` and
//! writes `true` as 1, so one block can serve all four tables (pymodbus's
//! shared block). Addresses here are block addresses: the device context maps
//! protocol addresses onto them (zero- or one-based).

use crate::ExceptionCode;

/// Storage for one table (or several sharing it). All methods are all-or-nothing.
pub trait DataBlock: Send + Sync {
    /// Reads `out.len()` values from `start`; 02 if any address is undefined.
    fn read_registers(&self, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode>;
    /// Reads `out.len()` values from `start` as bits (`!= 0`).
    fn read_bits(&self, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode>;
    /// Writes `values` from `start`; nothing is written if any address is undefined.
    fn write_registers(&self, start: u16, values: &[u16]) -> Result<(), ExceptionCode>;
    /// Writes bits (`true` as 1) from `start`; nothing is written on failure.
    fn write_bits(&self, start: u16, values: &[bool]) -> Result<(), ExceptionCode>;
    /// Atomically replaces the value at `address` with `f(old)`; returns the new value.
    fn update(&self, address: u16, f: &mut dyn FnMut(u16) -> u16) -> Result<u16, ExceptionCode>;
    /// Atomically writes `values` at `write_start`, then reads `out.len()` from
    /// `read_start` (FC23); nothing is written if either range is undefined.
    fn write_read(
        &self,
        write_start: u16,
        values: &[u16],
        read_start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode>;
    /// Restores the values the block was built with.
    fn reset(&self);
}

/// A dense block of values at addresses `start .. start + len`.
#[derive(Debug)]
pub struct SequentialBlock {
    _todo: (),
}

impl SequentialBlock {
    /// A block at `start` holding `values` (at most `65536 - start` of them).
    pub fn new(start: u16, values: Vec<u16>) -> Result<Self, crate::error::ConfigError> {
        let _ = (start, values);
        Err(crate::error::ConfigError::BlockTooLarge)
    }

    /// A block of `len` zeros at `start`.
    pub fn zeroed(start: u16, len: usize) -> Result<Self, crate::error::ConfigError> {
        Self::new(start, vec![0; len])
    }

    /// A block of bits at `start` (stored as 0/1).
    pub fn from_bits(start: u16, bits: &[bool]) -> Result<Self, crate::error::ConfigError> {
        Self::new(start, bits.iter().map(|&b| u16::from(b)).collect())
    }
}

/// A block where only listed addresses exist; any other address is exception 02.
#[derive(Debug)]
pub struct SparseBlock {
    _todo: (),
}

impl SparseBlock {
    /// A block holding the given (address, value) pairs.
    pub fn new(values: impl IntoIterator<Item = (u16, u16)>) -> Self {
        let _ = values.into_iter();
        Self { _todo: () }
    }
}
