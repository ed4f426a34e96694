//! Built-in data blocks: sequential (dense) and sparse.
//!
//! A block holds 16-bit values; a bit table reads a value as `!= 0` and
//! writes `true` as 1, so one block can serve all four tables (pymodbus's
//! shared block). Addresses here are block addresses: the device context maps
//! protocol addresses onto them (zero- or one-based).

use super::seqlock::{SeqCells, load, store};
use crate::ExceptionCode;
use crate::error::ConfigError;
use core::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Exception 02, the answer for any undefined address.
const BAD_ADDRESS: ExceptionCode = ExceptionCode::IllegalDataAddress;

/// Takes the read lock, recovering from poisoning (a panicking writer can
/// leave at most one value updated: every write is a single copy).
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the write lock, recovering from poisoning.
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Number of registers in `len` big-endian bytes; `None` if `len` is odd.
#[inline]
pub(crate) fn be_len(len: usize) -> Option<usize> {
    len.is_multiple_of(2).then_some(len / 2)
}

/// Copies `src` into `dst` as bits (`!= 0`).
fn to_bits(src: &[u16], dst: &mut [bool]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s != 0;
    }
}

/// Copies bits from `src` into `dst` (`true` as 1).
fn from_bits(src: &[bool], dst: &mut [u16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = u16::from(*s);
    }
}

/// Writes `values` big-endian into `out` (two bytes each; the wire format of registers).
/// Eight at a time (one vector), then one at a time.
#[inline]
pub(crate) fn encode_be(values: &[u16], out: &mut [u8]) {
    let (out, _) = out.as_chunks_mut::<2>();
    let n = values.len().min(out.len());
    let (Some(values), Some(out)) = (values.get(..n), out.get_mut(..n)) else {
        return;
    };
    let (src8, src_rest) = values.as_chunks::<8>();
    let (dst8, dst_rest) = out.as_chunks_mut::<8>();
    for (d, s) in dst8.iter_mut().zip(src8) {
        for (d, s) in d.iter_mut().zip(s) {
            *d = s.to_be_bytes();
        }
    }
    for (d, s) in dst_rest.iter_mut().zip(src_rest) {
        *d = s.to_be_bytes();
    }
}

/// Reads big-endian pairs of `bytes` into `out` (as many as both hold).
#[inline]
pub(crate) fn decode_be(bytes: &[u8], out: &mut [u16]) {
    let (pairs, _) = bytes.as_chunks::<2>();
    for (d, s) in out.iter_mut().zip(pairs) {
        *d = u16::from_be_bytes(*s);
    }
}

/// Most registers one request reads or writes (FC3/FC4: 125; FC16: 123).
const MAX_REGISTERS: usize = 125;

/// Reads `out.len() / 2` registers with `read` into a stack buffer and
/// writes them big-endian into `out`: the default of every `*_be` read.
/// 04 for an odd length or more than 125 registers.
pub(crate) fn read_be_with(
    out: &mut [u8],
    read: impl FnOnce(&mut [u16]) -> Result<(), ExceptionCode>,
) -> Result<(), ExceptionCode> {
    let mut buf = [0u16; MAX_REGISTERS];
    let regs = be_len(out.len())
        .and_then(|n| buf.get_mut(..n))
        .ok_or(ExceptionCode::ServerDeviceFailure)?;
    read(regs)?;
    encode_be(regs, out);
    Ok(())
}

/// Decodes the big-endian registers of `bytes` into a stack buffer and
/// hands them to `write`: the default of every `*_be` write. 04 for an odd
/// length or more than 125 registers.
pub(crate) fn write_be_with(
    bytes: &[u8],
    write: impl FnOnce(&[u16]) -> Result<(), ExceptionCode>,
) -> Result<(), ExceptionCode> {
    let mut buf = [0u16; MAX_REGISTERS];
    let regs = be_len(bytes.len())
        .and_then(|n| buf.get_mut(..n))
        .ok_or(ExceptionCode::ServerDeviceFailure)?;
    decode_be(bytes, regs);
    write(regs)
}

/// Storage for one table (or several sharing it). All methods are all-or-nothing.
pub trait DataBlock: Send + Sync {
    /// Reads `out.len()` values from `start`; 02 if any address is undefined.
    fn read_registers(&self, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode>;

    /// Reads `out.len() / 2` values from `start` into `out` as big-endian
    /// bytes (the wire format of an FC3/FC4 answer), at most 125 values;
    /// 04 for an odd length or more than 125. The default reads with
    /// [`DataBlock::read_registers`] and encodes; blocks override it to
    /// encode straight from their storage.
    fn read_registers_be(&self, start: u16, out: &mut [u8]) -> Result<(), ExceptionCode> {
        read_be_with(out, |regs| self.read_registers(start, regs))
    }
    /// Writes the big-endian values in `bytes` (the data of an FC16
    /// request: `bytes.len() / 2` values, at most 125) from `start`, all or
    /// nothing; 04 for an odd length or more than 125. The default decodes
    /// and calls [`DataBlock::write_registers`]; blocks override it to
    /// decode straight into their storage.
    fn write_registers_be(&self, start: u16, bytes: &[u8]) -> Result<(), ExceptionCode> {
        write_be_with(bytes, |regs| self.write_registers(start, regs))
    }

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
///
/// Readers copy the values without taking a lock (a sequence lock: they
/// write nothing shared, so readers on many cores do not contend); writers
/// take turns. A reader sees a multi-register write whole or not at all.
pub struct SequentialBlock {
    start: u16,
    initial: Box<[u16]>,
    values: SeqCells,
}

impl core::fmt::Debug for SequentialBlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SequentialBlock")
            .field("start", &self.start)
            .field("len", &self.initial.len())
            .finish_non_exhaustive()
    }
}

impl SequentialBlock {
    /// A block at `start` holding `values` (at most `65536 - start` of them).
    pub fn new(start: u16, values: Vec<u16>) -> Result<Self, ConfigError> {
        let end = usize::from(start).checked_add(values.len());
        if end.is_none_or(|end| end > 0x1_0000) {
            return Err(ConfigError::BlockTooLarge);
        }
        Ok(Self {
            start,
            values: SeqCells::new(&values),
            initial: values.into_boxed_slice(),
        })
    }

    /// A block of `len` zeros at `start`.
    pub fn zeroed(start: u16, len: usize) -> Result<Self, ConfigError> {
        if usize::from(start).checked_add(len).is_none_or(|end| end > 0x1_0000) {
            return Err(ConfigError::BlockTooLarge);
        }
        Self::new(start, vec![0; len])
    }

    /// A block of bits at `start` (stored as 0/1).
    pub fn from_bits(start: u16, bits: &[bool]) -> Result<Self, ConfigError> {
        Self::new(start, bits.iter().map(|&b| u16::from(b)).collect())
    }

    /// First address of the block.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Number of addresses in the block.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True if the block holds no address.
    pub fn is_empty(&self) -> bool {
        self.values.len() == 0
    }

    /// A snapshot of the current values, from [`SequentialBlock::start`] on.
    pub fn values(&self) -> Vec<u16> {
        self.values.snapshot()
    }

    /// Indexes of `len` values from `start`, or 02 if they leave the block.
    fn span(&self, start: u16, len: usize) -> Result<Range<usize>, ExceptionCode> {
        let offset = usize::from(start.checked_sub(self.start).ok_or(BAD_ADDRESS)?);
        let end = offset.checked_add(len).ok_or(BAD_ADDRESS)?;
        if end > self.values.len() {
            return Err(BAD_ADDRESS);
        }
        Ok(offset..end)
    }
}

impl DataBlock for SequentialBlock {
    fn read_registers(&self, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
        let span = self.span(start, out.len())?;
        self.values.read(span, |cells| load(cells, out)).ok_or(BAD_ADDRESS)
    }

    #[inline]
    fn read_registers_be(&self, start: u16, out: &mut [u8]) -> Result<(), ExceptionCode> {
        let n = be_len(out.len())
            .filter(|&n| n <= MAX_REGISTERS)
            .ok_or(ExceptionCode::ServerDeviceFailure)?;
        let span = self.span(start, n)?;
        let (pairs, _) = out.as_chunks_mut::<2>();
        self.values
            .read(span, |cells| {
                for (d, c) in pairs.iter_mut().zip(cells) {
                    *d = c.load(Ordering::Relaxed).to_be_bytes();
                }
            })
            .ok_or(BAD_ADDRESS)
    }

    fn read_bits(&self, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        let span = self.span(start, out.len())?;
        self.values
            .read(span, |cells| {
                for (d, c) in out.iter_mut().zip(cells) {
                    *d = c.load(Ordering::Relaxed) != 0;
                }
            })
            .ok_or(BAD_ADDRESS)
    }

    fn write_registers(&self, start: u16, values: &[u16]) -> Result<(), ExceptionCode> {
        let span = self.span(start, values.len())?;
        self.values.write(span, |cells| store(cells, values)).ok_or(BAD_ADDRESS)
    }

    #[inline]
    fn write_registers_be(&self, start: u16, bytes: &[u8]) -> Result<(), ExceptionCode> {
        let n = be_len(bytes.len())
            .filter(|&n| n <= MAX_REGISTERS)
            .ok_or(ExceptionCode::ServerDeviceFailure)?;
        let span = self.span(start, n)?;
        let (pairs, _) = bytes.as_chunks::<2>();
        self.values
            .write(span, |cells| {
                for (c, pair) in cells.iter().zip(pairs) {
                    c.store(u16::from_be_bytes(*pair), Ordering::Relaxed);
                }
            })
            .ok_or(BAD_ADDRESS)
    }

    fn write_bits(&self, start: u16, values: &[bool]) -> Result<(), ExceptionCode> {
        let span = self.span(start, values.len())?;
        self.values
            .write(span, |cells| {
                for (c, b) in cells.iter().zip(values) {
                    c.store(u16::from(*b), Ordering::Relaxed);
                }
            })
            .ok_or(BAD_ADDRESS)
    }

    fn update(&self, address: u16, f: &mut dyn FnMut(u16) -> u16) -> Result<u16, ExceptionCode> {
        let span = self.span(address, 1)?;
        self.values
            .write(span, |cells| {
                cells.first().map(|cell| {
                    let new = f(cell.load(Ordering::Relaxed));
                    cell.store(new, Ordering::Relaxed);
                    new
                })
            })
            .flatten()
            .ok_or(BAD_ADDRESS)
    }

    fn write_read(
        &self,
        write_start: u16,
        values: &[u16],
        read_start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        // Both ranges are checked before anything is written.
        let write_span = self.span(write_start, values.len())?;
        let read_span = self.span(read_start, out.len())?;
        self.values.write_all(|cells| {
            let (Some(w), Some(r)) = (cells.get(write_span), cells.get(read_span)) else {
                return Err(BAD_ADDRESS);
            };
            store(w, values);
            load(r, out);
            Ok(())
        })
    }

    fn reset(&self) {
        self.values.write_all(|cells| store(cells, &self.initial));
    }
}

/// The contents of a sparse block: parallel vectors sorted by address.
#[derive(Debug, Default)]
struct Sparse {
    /// Defined addresses, strictly increasing.
    addresses: Vec<u16>,
    /// Current value of each address.
    values: Vec<u16>,
    /// Value of each address on reset.
    initial: Vec<u16>,
}

impl Sparse {
    /// Indexes of `len` consecutive addresses from `start`, or 02 if any is undefined.
    ///
    /// The addresses are sorted and distinct, so `len` entries from the one
    /// at `start` are consecutive exactly when the last is `start + len - 1`.
    fn span(&self, start: u16, len: usize) -> Result<Range<usize>, ExceptionCode> {
        let first = self.addresses.binary_search(&start).map_err(|_| BAD_ADDRESS)?;
        let Some(last_offset) = len.checked_sub(1) else {
            return Ok(first..first);
        };
        let last_index = first.checked_add(last_offset).ok_or(BAD_ADDRESS)?;
        let last = self.addresses.get(last_index).ok_or(BAD_ADDRESS)?;
        if Some(usize::from(*last)) != usize::from(start).checked_add(last_offset) {
            return Err(BAD_ADDRESS);
        }
        Ok(first..last_index.checked_add(1).ok_or(BAD_ADDRESS)?)
    }
}

/// A block where only listed addresses exist; any other address is exception 02.
///
/// A range read or write needs every address in it to exist; otherwise it
/// fails with 02 and nothing is written. Addresses are kept sorted, so a
/// range check is one binary search.
pub struct SparseBlock {
    data: RwLock<Sparse>,
}

impl core::fmt::Debug for SparseBlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SparseBlock")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl SparseBlock {
    /// A block holding the given (address, value) pairs; for a repeated address the last value wins.
    pub fn new(values: impl IntoIterator<Item = (u16, u16)>) -> Self {
        let map: std::collections::BTreeMap<u16, u16> = values.into_iter().collect();
        let mut data = Sparse {
            addresses: Vec::with_capacity(map.len()),
            values: Vec::with_capacity(map.len()),
            initial: Vec::new(),
        };
        for (address, value) in map {
            data.addresses.push(address);
            data.values.push(value);
        }
        data.initial = data.values.clone();
        Self {
            data: RwLock::new(data),
        }
    }

    /// A block holding `values` at consecutive addresses from `start`
    /// (values past address 0xFFFF are dropped).
    pub fn from_range(start: u16, values: &[u16]) -> Self {
        Self::new((start..=u16::MAX).zip(values.iter().copied()))
    }

    /// Defines `address` with `value` as both its current and its reset
    /// value (the application adding an address); returns the previous
    /// current value if the address existed.
    pub fn insert(&self, address: u16, value: u16) -> Option<u16> {
        let mut data = write(&self.data);
        match data.addresses.binary_search(&address) {
            Ok(i) => {
                if let Some(initial) = data.initial.get_mut(i) {
                    *initial = value;
                }
                data.values.get_mut(i).map(|slot| core::mem::replace(slot, value))
            }
            Err(i) => {
                // ok: binary_search returns an insertion point <= len, and the
                // three vectors always have the same length.
                data.addresses.insert(i, address);
                data.values.insert(i, value);
                data.initial.insert(i, value);
                None
            }
        }
    }

    /// True if `address` is defined.
    pub fn contains(&self, address: u16) -> bool {
        read(&self.data).addresses.binary_search(&address).is_ok()
    }

    /// Number of defined addresses.
    pub fn len(&self) -> usize {
        read(&self.data).addresses.len()
    }

    /// True if no address is defined.
    pub fn is_empty(&self) -> bool {
        read(&self.data).addresses.is_empty()
    }

    /// Lowest defined address, if any.
    pub fn start(&self) -> Option<u16> {
        read(&self.data).addresses.first().copied()
    }

    /// A snapshot of the current (address, value) pairs, sorted by address.
    pub fn values(&self) -> Vec<(u16, u16)> {
        let data = read(&self.data);
        data.addresses
            .iter()
            .copied()
            .zip(data.values.iter().copied())
            .collect()
    }
}

impl DataBlock for SparseBlock {
    fn read_registers(&self, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
        let data = read(&self.data);
        let span = data.span(start, out.len())?;
        // ok: `span` has out.len() elements, so the lengths match.
        out.copy_from_slice(data.values.get(span).ok_or(BAD_ADDRESS)?);
        Ok(())
    }

    fn read_registers_be(&self, start: u16, out: &mut [u8]) -> Result<(), ExceptionCode> {
        let n = be_len(out.len())
            .filter(|&n| n <= MAX_REGISTERS)
            .ok_or(ExceptionCode::ServerDeviceFailure)?;
        let data = read(&self.data);
        let span = data.span(start, n)?;
        encode_be(data.values.get(span).ok_or(BAD_ADDRESS)?, out);
        Ok(())
    }

    fn read_bits(&self, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
        let data = read(&self.data);
        let span = data.span(start, out.len())?;
        to_bits(data.values.get(span).ok_or(BAD_ADDRESS)?, out);
        Ok(())
    }

    fn write_registers(&self, start: u16, values: &[u16]) -> Result<(), ExceptionCode> {
        let mut data = write(&self.data);
        let span = data.span(start, values.len())?;
        // ok: `span` has values.len() elements, so the lengths match.
        data.values.get_mut(span).ok_or(BAD_ADDRESS)?.copy_from_slice(values);
        Ok(())
    }

    fn write_registers_be(&self, start: u16, bytes: &[u8]) -> Result<(), ExceptionCode> {
        let n = be_len(bytes.len())
            .filter(|&n| n <= MAX_REGISTERS)
            .ok_or(ExceptionCode::ServerDeviceFailure)?;
        let mut data = write(&self.data);
        let span = data.span(start, n)?;
        decode_be(bytes, data.values.get_mut(span).ok_or(BAD_ADDRESS)?);
        Ok(())
    }

    fn write_bits(&self, start: u16, values: &[bool]) -> Result<(), ExceptionCode> {
        let mut data = write(&self.data);
        let span = data.span(start, values.len())?;
        from_bits(values, data.values.get_mut(span).ok_or(BAD_ADDRESS)?);
        Ok(())
    }

    fn update(&self, address: u16, f: &mut dyn FnMut(u16) -> u16) -> Result<u16, ExceptionCode> {
        let mut data = write(&self.data);
        let index = data.addresses.binary_search(&address).map_err(|_| BAD_ADDRESS)?;
        let slot = data.values.get_mut(index).ok_or(BAD_ADDRESS)?;
        *slot = f(*slot);
        Ok(*slot)
    }

    fn write_read(
        &self,
        write_start: u16,
        values: &[u16],
        read_start: u16,
        out: &mut [u16],
    ) -> Result<(), ExceptionCode> {
        let mut data = write(&self.data);
        // Both ranges are checked before anything is written.
        let write_span = data.span(write_start, values.len())?;
        let read_span = data.span(read_start, out.len())?;
        // ok: each span has as many elements as its slice.
        data.values
            .get_mut(write_span)
            .ok_or(BAD_ADDRESS)?
            .copy_from_slice(values);
        out.copy_from_slice(data.values.get(read_span).ok_or(BAD_ADDRESS)?);
        Ok(())
    }

    fn reset(&self) {
        let mut data = write(&self.data);
        let Sparse { values, initial, .. } = &mut *data;
        values.clone_from(initial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const E02: Result<(), ExceptionCode> = Err(ExceptionCode::IllegalDataAddress);

    /// A block that only has the required methods, so the defaults run.
    struct Plain(SequentialBlock);
    impl DataBlock for Plain {
        fn read_registers(&self, start: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
            self.0.read_registers(start, out)
        }
        fn read_bits(&self, start: u16, out: &mut [bool]) -> Result<(), ExceptionCode> {
            self.0.read_bits(start, out)
        }
        fn write_registers(&self, start: u16, values: &[u16]) -> Result<(), ExceptionCode> {
            self.0.write_registers(start, values)
        }
        fn write_bits(&self, start: u16, values: &[bool]) -> Result<(), ExceptionCode> {
            self.0.write_bits(start, values)
        }
        fn update(&self, address: u16, f: &mut dyn FnMut(u16) -> u16) -> Result<u16, ExceptionCode> {
            self.0.update(address, f)
        }
        fn write_read(&self, ws: u16, values: &[u16], rs: u16, out: &mut [u16]) -> Result<(), ExceptionCode> {
            self.0.write_read(ws, values, rs, out)
        }
        fn reset(&self) {
            self.0.reset()
        }
    }

    #[test]
    fn big_endian_reads_match_u16_reads() {
        let values: Vec<u16> = (0..200u16)
            .map(|i| i.wrapping_mul(0x0101).wrapping_add(0x1234))
            .collect();
        let blocks: [Box<dyn DataBlock>; 3] = [
            Box::new(SequentialBlock::new(10, values.clone()).unwrap()),
            Box::new(SparseBlock::from_range(10, &values)),
            Box::new(Plain(SequentialBlock::new(10, values.clone()).unwrap())),
        ];
        for block in &blocks {
            for (start, n) in [
                (10u16, 1usize),
                (10, 7),
                (11, 8),
                (12, 9),
                (20, 17),
                (30, 125),
                (85, 125),
            ] {
                let mut bytes = [0xEEu8; 252];
                block.read_registers_be(start, &mut bytes[..2 * n]).unwrap();
                let want: Vec<u8> = values[usize::from(start - 10)..][..n]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect();
                assert_eq!(&bytes[..2 * n], &want[..], "{start} {n}");
                assert!(
                    bytes[2 * n..].iter().all(|&b| b == 0xEE),
                    "nothing written past the end"
                );
            }
            let mut bytes = [0u8; 252];
            assert_eq!(block.read_registers_be(9, &mut bytes[..2]), E02);
            assert_eq!(block.read_registers_be(200, &mut bytes[..22]), E02);
            let e04 = Err(ExceptionCode::ServerDeviceFailure);
            assert_eq!(block.read_registers_be(10, &mut bytes[..3]), e04, "odd length");
            assert_eq!(block.read_registers_be(10, &mut bytes[..]), e04, "more than 125");
        }
    }

    #[test]
    fn big_endian_writes_match_u16_writes() {
        let blocks: [Box<dyn DataBlock>; 3] = [
            Box::new(SequentialBlock::zeroed(10, 200).unwrap()),
            Box::new(SparseBlock::from_range(10, &[0; 200])),
            Box::new(Plain(SequentialBlock::zeroed(10, 200).unwrap())),
        ];
        for block in &blocks {
            let bytes: Vec<u8> = (0..250u8).map(|i| i.wrapping_mul(37)).collect();
            for (start, n) in [(10u16, 1usize), (11, 9), (40, 123), (85, 125)] {
                block.write_registers_be(start, &bytes[..2 * n]).unwrap();
                let mut got = vec![0u16; n];
                block.read_registers(start, &mut got).unwrap();
                let want: Vec<u16> = bytes[..2 * n]
                    .chunks(2)
                    .map(|p| u16::from_be_bytes([p[0], p[1]]))
                    .collect();
                assert_eq!(got, want, "{start} {n}");
            }
            let mut before = vec![0u16; 200];
            block.read_registers(10, &mut before).unwrap();
            assert_eq!(block.write_registers_be(9, &[1, 2]), E02);
            assert_eq!(block.write_registers_be(200, &[1; 22]), E02, "partly outside");
            let e04 = Err(ExceptionCode::ServerDeviceFailure);
            assert_eq!(block.write_registers_be(10, &[1; 3]), e04, "odd length");
            assert_eq!(block.write_registers_be(10, &[1; 252]), e04, "more than 125");
            let mut after = vec![0u16; 200];
            block.read_registers(10, &mut after).unwrap();
            assert_eq!(before, after, "failed writes change nothing");
        }
    }

    #[test]
    fn sequential_new_limits() {
        assert!(SequentialBlock::new(0, vec![0; 65536]).is_ok());
        assert!(SequentialBlock::new(1, vec![0; 65535]).is_ok());
        assert_eq!(
            SequentialBlock::new(1, vec![0; 65536]).err(),
            Some(ConfigError::BlockTooLarge)
        );
        assert_eq!(
            SequentialBlock::zeroed(0xFFFF, 2).err(),
            Some(ConfigError::BlockTooLarge)
        );
        assert_eq!(
            SequentialBlock::zeroed(0, usize::MAX).err(),
            Some(ConfigError::BlockTooLarge)
        );
        let last = SequentialBlock::new(0xFFFF, vec![7]).unwrap();
        let mut out = [0u16; 1];
        last.read_registers(0xFFFF, &mut out).unwrap();
        assert_eq!(out, [7]);
        assert_eq!(last.read_registers(0xFFFE, &mut out), E02);
    }

    #[test]
    fn sequential_accessors() {
        let b = SequentialBlock::new(100, vec![1, 2, 3]).unwrap();
        assert_eq!(b.start(), 100);
        assert_eq!(b.len(), 3);
        assert!(!b.is_empty());
        assert_eq!(b.values(), vec![1, 2, 3]);
        assert!(SequentialBlock::zeroed(5, 0).unwrap().is_empty());
        let bits = SequentialBlock::from_bits(0, &[true, false, true]).unwrap();
        assert_eq!(bits.values(), vec![1, 0, 1]);
    }

    #[test]
    fn sequential_read_write_registers() {
        let b = SequentialBlock::new(10, vec![1, 2, 3, 4, 5]).unwrap();
        let mut out = [0u16; 3];
        b.read_registers(11, &mut out).unwrap();
        assert_eq!(out, [2, 3, 4]);
        // Below the start, and running past the end.
        assert_eq!(b.read_registers(9, &mut out), E02);
        assert_eq!(b.read_registers(13, &mut out), E02);
        let mut five = [0u16; 5];
        b.read_registers(10, &mut five).unwrap();
        assert_eq!(five, [1, 2, 3, 4, 5]);

        b.write_registers(13, &[40, 50]).unwrap();
        assert_eq!(b.values(), vec![1, 2, 3, 40, 50]);
        // A write running one past the end changes nothing.
        assert_eq!(b.write_registers(12, &[0xAAAA, 0xBBBB, 0xCCCC, 0xDDDD]), E02);
        assert_eq!(b.write_registers(9, &[0xAAAA, 0xBBBB]), E02);
        assert_eq!(b.values(), vec![1, 2, 3, 40, 50]);
    }

    #[test]
    fn sequential_bits() {
        let b = SequentialBlock::new(0, vec![0, 5, 0, 0xFFFF]).unwrap();
        let mut out = [false; 4];
        b.read_bits(0, &mut out).unwrap();
        assert_eq!(out, [false, true, false, true]);
        b.write_bits(1, &[false, true, true]).unwrap();
        assert_eq!(b.values(), vec![0, 0, 1, 1]);
        assert_eq!(b.write_bits(2, &[false, false, false]), E02);
        assert_eq!(b.values(), vec![0, 0, 1, 1]);
        assert_eq!(b.read_bits(3, &mut out[..2]), E02);
    }

    #[test]
    fn sequential_update_and_write_read() {
        let b = SequentialBlock::new(0, vec![0x12, 0, 0, 0]).unwrap();
        assert_eq!(b.update(0, &mut |v| v | 0x0100), Ok(0x0112));
        assert_eq!(b.update(4, &mut |v| v), Err(ExceptionCode::IllegalDataAddress));
        let mut out = [0u16; 2];
        b.write_read(1, &[7, 8], 0, &mut out).unwrap();
        assert_eq!(out, [0x0112, 7]);
        // A bad read range leaves the write undone.
        assert_eq!(b.write_read(1, &[9, 9], 3, &mut out), E02);
        // A bad write range too.
        assert_eq!(b.write_read(3, &[9, 9], 0, &mut out), E02);
        assert_eq!(b.values(), vec![0x0112, 7, 8, 0]);
    }

    #[test]
    fn sequential_reset() {
        let b = SequentialBlock::new(0, vec![1, 2, 3]).unwrap();
        b.write_registers(0, &[9, 9, 9]).unwrap();
        b.reset();
        assert_eq!(b.values(), vec![1, 2, 3]);
    }

    #[test]
    fn sparse_defined_addresses_only() {
        let b = SparseBlock::new([(10, 1), (11, 2), (12, 3), (20, 4), (0xFFFF, 5)]);
        assert_eq!(b.len(), 5);
        assert_eq!(b.start(), Some(10));
        assert!(b.contains(20) && !b.contains(13));
        let mut out = [0u16; 3];
        b.read_registers(10, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
        // 13 is undefined: a range through it is 02.
        assert_eq!(b.read_registers(11, &mut out), E02);
        assert_eq!(b.read_registers(9, &mut out[..1]), E02);
        // 12 and 20 exist, the gap does not.
        let mut nine = [0u16; 9];
        assert_eq!(b.read_registers(12, &mut nine), E02);
        b.read_registers(0xFFFF, &mut out[..1]).unwrap();
        assert_eq!(out[0], 5);
        // A write over a gap changes nothing.
        assert_eq!(b.write_registers(11, &[0xAA, 0xBB, 0xCC]), E02);
        assert_eq!(b.write_bits(12, &[true, true]), E02);
        assert_eq!(b.values(), vec![(10, 1), (11, 2), (12, 3), (20, 4), (0xFFFF, 5)]);
        b.write_registers(11, &[0xAA, 0xBB]).unwrap();
        assert_eq!(b.values(), vec![(10, 1), (11, 0xAA), (12, 0xBB), (20, 4), (0xFFFF, 5)]);
    }

    #[test]
    fn sparse_new_sorts_and_last_duplicate_wins() {
        let b = SparseBlock::new([(5, 50), (1, 10), (5, 55), (3, 30)]);
        assert_eq!(b.values(), vec![(1, 10), (3, 30), (5, 55)]);
        let r = SparseBlock::from_range(0xFFFE, &[1, 2, 3]);
        assert_eq!(r.values(), vec![(0xFFFE, 1), (0xFFFF, 2)]);
        assert!(SparseBlock::new([]).is_empty());
        assert_eq!(SparseBlock::new([]).start(), None);
        let mut out = [0u16; 1];
        assert_eq!(SparseBlock::new([]).read_registers(0, &mut out), E02);
    }

    #[test]
    fn sparse_bits_update_write_read() {
        let b = SparseBlock::new([(0, 0), (1, 3), (2, 0), (5, 0)]);
        let mut bits = [true; 3];
        b.read_bits(0, &mut bits).unwrap();
        assert_eq!(bits, [false, true, false]);
        b.write_bits(0, &[true, false, true]).unwrap();
        assert_eq!(b.values(), vec![(0, 1), (1, 0), (2, 1), (5, 0)]);
        assert_eq!(b.update(5, &mut |v| v + 9), Ok(9));
        assert_eq!(b.update(4, &mut |v| v + 9), Err(ExceptionCode::IllegalDataAddress));
        let mut out = [0u16; 2];
        b.write_read(1, &[7, 8], 0, &mut out).unwrap();
        assert_eq!(out, [1, 7]);
        assert_eq!(b.write_read(0, &[0, 0], 2, &mut out), E02);
        assert_eq!(b.values(), vec![(0, 1), (1, 7), (2, 8), (5, 9)]);
    }

    #[test]
    fn sparse_insert_and_reset() {
        let b = SparseBlock::new([(1, 10), (3, 30)]);
        let mut out = [0u16; 3];
        assert_eq!(b.read_registers(1, &mut out), E02);
        assert_eq!(b.insert(2, 20), None);
        b.read_registers(1, &mut out).unwrap();
        assert_eq!(out, [10, 20, 30]);
        b.write_registers(1, &[0, 0, 0]).unwrap();
        assert_eq!(b.insert(3, 33), Some(0));
        b.reset();
        // The inserted address survives reset with its inserted value.
        assert_eq!(b.values(), vec![(1, 10), (2, 20), (3, 33)]);
    }

    #[test]
    fn shared_block_through_trait_object() {
        let b: Arc<dyn DataBlock> = Arc::new(SequentialBlock::zeroed(0, 4).unwrap());
        b.write_bits(0, &[true]).unwrap();
        let mut out = [0u16; 1];
        b.read_registers(0, &mut out).unwrap();
        assert_eq!(out, [1]);
    }

    /// Writers store whole 10-register patterns; readers must never see a mix.
    fn torn_read_check(block: Arc<dyn DataBlock>, start: u16) {
        const ROUNDS: u16 = 2000;
        let mut handles = Vec::new();
        for t in 0..4u16 {
            let block = block.clone();
            handles.push(std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    let v = t * ROUNDS + i + 1;
                    block.write_registers(start, &[v; 10]).unwrap();
                }
            }));
        }
        for _ in 0..4 {
            let block = block.clone();
            handles.push(std::thread::spawn(move || {
                let mut out = [0u16; 10];
                for _ in 0..ROUNDS {
                    block.read_registers(start, &mut out).unwrap();
                    assert!(out.iter().all(|&v| v == out[0]), "torn read {out:?}");
                }
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        let mut out = [0u16; 10];
        block.read_registers(start, &mut out).unwrap();
        assert!(out[0] != 0 && out.iter().all(|&v| v == out[0]));
    }

    #[test]
    fn concurrent_writes_are_whole_sequential() {
        torn_read_check(Arc::new(SequentialBlock::zeroed(100, 20).unwrap()), 105);
    }

    #[test]
    fn concurrent_writes_are_whole_sparse() {
        torn_read_check(Arc::new(SparseBlock::from_range(100, &[0; 20])), 105);
    }

    #[test]
    fn concurrent_updates_are_atomic() {
        let block: Arc<dyn DataBlock> = Arc::new(SequentialBlock::zeroed(0, 1).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let block = block.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        block.update(0, &mut |v| v + 1).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut out = [0u16; 1];
        block.read_registers(0, &mut out).unwrap();
        assert_eq!(out, [4000]);
    }

    #[test]
    fn poisoned_lock_recovers() {
        let block = Arc::new(SequentialBlock::new(0, vec![1, 2]).unwrap());
        let b = block.clone();
        let r = std::thread::spawn(move || {
            let _ = b.update(0, &mut |_| panic!("poison the lock"));
        })
        .join();
        assert!(r.is_err());
        let mut out = [0u16; 2];
        block.read_registers(0, &mut out).unwrap();
        assert_eq!(out, [1, 2]);
        block.write_registers(0, &[3, 4]).unwrap();
        assert_eq!(block.values(), vec![3, 4]);
    }
}
