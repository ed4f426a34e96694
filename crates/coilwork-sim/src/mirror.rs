//! Register values that readers copy without taking a lock: a sequence
//! lock over one atomic per register, as coilwork-core's sequential blocks
//! keep theirs. A read of plain registers (defined, no action) copies them
//! from here and writes nothing shared, so connections reading one device
//! do not take turns owning a lock's cache line.
//!
//! The device's cells stay the authority. Every change to them is made
//! under the device's write lock and published here before that lock is
//! released, so publishers never overlap; a reader that a publication
//! overlapped (or that finds one under way) falls back to the locked path.

use crate::model::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering, fence};

/// The values of a device's cells, readable without a lock.
pub(crate) struct Mirror {
    /// Even when no publication is under way; two more after each.
    seq: AtomicU64,
    values: Box<[AtomicU16]>,
}

impl Mirror {
    /// A mirror of `cells`.
    pub(crate) fn new(cells: &[Cell]) -> Self {
        Self {
            seq: AtomicU64::new(0),
            values: cells.iter().map(|c| AtomicU16::new(c.value)).collect(),
        }
    }

    /// Runs `read` on the values of `span` as seen at one instant between
    /// publications; `None` if `span` leaves the values or a publication
    /// overlapped (the caller then reads the cells under the lock). `read`
    /// must only load values and write into its own output.
    #[inline]
    pub(crate) fn read<R>(&self, span: Range<usize>, read: impl FnOnce(&[AtomicU16]) -> R) -> Option<R> {
        let values = self.values.get(span)?;
        let before = self.seq.load(Ordering::Acquire);
        if before & 1 != 0 {
            return None;
        }
        let result = read(values);
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == before).then_some(result)
    }

    /// Copies the values of `cells` in `span` (clipped to the cells) here.
    /// Called only with the device's write lock held, which `cells` (a
    /// mutable borrow of the locked cells) witnesses: publishers never overlap.
    pub(crate) fn publish(&self, cells: &mut [Cell], span: Range<usize>) {
        let end = span.end.min(cells.len()).min(self.values.len());
        let (Some(src), Some(dst)) = (cells.get(span.start..end), self.values.get(span.start..end)) else {
            return;
        };
        let odd = self.seq.load(Ordering::Relaxed) | 1;
        self.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        for (d, c) in dst.iter().zip(src) {
            d.store(c.value, Ordering::Relaxed);
        }
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
    }

    /// Sets the values of `cells` (the device's cells from `first` on,
    /// mutably borrowed under its write lock) to `values` and publishes them
    /// in the same pass.
    pub(crate) fn set(&self, cells: &mut [Cell], first: usize, values: impl Iterator<Item = u16>) {
        let Some(dst) = self.values.get(first..first.saturating_add(cells.len())) else {
            cells.iter_mut().zip(values).for_each(|(c, v)| c.value = v);
            return;
        };
        let odd = self.seq.load(Ordering::Relaxed) | 1;
        self.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        for ((c, d), v) in cells.iter_mut().zip(dst).zip(values) {
            c.value = v;
            d.store(v, Ordering::Relaxed);
        }
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
    }
}

/// Loads `values` into `out` as big-endian bytes (as many as both hold).
#[inline]
pub(crate) fn load_be(values: &[AtomicU16], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(2).zip(values) {
        o.copy_from_slice(&v.load(Ordering::Relaxed).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn cells(values: &[u16]) -> Vec<Cell> {
        values.iter().map(|&value| Cell { value, ..Cell::INVALID }).collect()
    }

    #[test]
    fn publishes_and_reads_inside_the_values_only() {
        let mut c = cells(&[1, 2, 3, 4]);
        let m = Mirror::new(&c);
        let mut out = [0u8; 4];
        assert_eq!(m.read(1..3, |v| load_be(v, &mut out)), Some(()));
        assert_eq!(out, [0, 2, 0, 3]);
        c[2].value = 7;
        c[3].value = 8;
        m.publish(&mut c, 2..9);
        assert_eq!(m.read(2..4, |v| load_be(v, &mut out)), Some(()));
        assert_eq!(out, [0, 7, 0, 8]);
        assert_eq!(m.read(3..5, |_| ()), None);
    }

    /// A publisher (holding a lock, as the device does) stores one value in
    /// every register; readers never see two different values in one read.
    #[test]
    fn a_reader_never_sees_half_a_publication() {
        const LEN: usize = 64;
        let shared = Arc::new((Mirror::new(&cells(&[0; LEN])), std::sync::Mutex::new(cells(&[0; LEN]))));
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (shared, done) = (Arc::clone(&shared), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut v = 0u16;
                while !done.load(Ordering::Relaxed) {
                    v = v.wrapping_add(1);
                    let mut locked = crate::lock(&shared.1);
                    locked.iter_mut().for_each(|c| c.value = v);
                    shared.0.publish(&mut locked, 0..LEN);
                }
            })
        };
        let (mut torn, mut seen, mut missed) = (0, std::collections::HashSet::new(), 0);
        let start = std::time::Instant::now();
        for i in 0.. {
            if (i >= 200_000 && seen.len() > 1) || start.elapsed() > std::time::Duration::from_secs(30) {
                break;
            }
            let mut out = [0u8; 2 * LEN];
            if shared.0.read(0..LEN, |v| load_be(v, &mut out)).is_none() {
                missed += 1;
                continue;
            }
            if out.chunks(2).any(|w| w != &out[..2]) {
                torn += 1;
            }
            seen.insert([out[0], out[1]]);
        }
        done.store(true, Ordering::Relaxed);
        writer.join().expect("writer"); // ok: test code
        assert_eq!(torn, 0, "reads that saw part of a publication ({missed} fell back)");
        assert!(seen.len() > 1, "the readers saw the values change");
    }
}
