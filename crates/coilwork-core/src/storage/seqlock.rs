//! 16-bit cells behind a sequence lock: readers only load, writers take turns.
//!
//! A [`SeqCells`] is what a [`SequentialBlock`](super::SequentialBlock)
//! keeps its values in. A reader never writes shared memory (a read lock
//! would: its count lives in one cache line that every reader on every core
//! then takes turns owning); it loads the sequence number, copies the cells
//! and checks the number did not move. Writers take a mutex among themselves
//! and make the number odd while they write, so a reader that overlapped a
//! write copies again, and sees a multi-register write whole or not at all.
//! A reader that keeps losing to writers takes the writers' mutex instead.
//!
//! The ordering is Boehm's seqlock with fences ("Can Seqlocks Get Along With
//! Programming Language Memory Models?", 2012): the cells are atomics, so
//! there is no data race and no `unsafe`.

use core::ops::Range;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering, fence};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Optimistic reads tried before a reader takes the writers' mutex.
const OPTIMISTIC_TRIES: usize = 16;

/// Cells readers copy without locking and writers change one at a time.
pub(crate) struct SeqCells {
    /// Even when no write is under way; two more after each write.
    seq: AtomicU64,
    cells: Box<[AtomicU16]>,
    /// Held by the one writer at a time (and by a starved reader).
    writer: Mutex<()>,
}

impl SeqCells {
    /// Cells holding `values`.
    pub(crate) fn new(values: &[u16]) -> Self {
        Self {
            seq: AtomicU64::new(0),
            cells: values.iter().map(|&v| AtomicU16::new(v)).collect(),
            writer: Mutex::new(()),
        }
    }

    /// Number of cells.
    pub(crate) fn len(&self) -> usize {
        self.cells.len()
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // Poisoned only by a panic inside a write closure: the cells are still
        // valid values (each store is whole), so go on.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `read` on the cells of `span` and returns what it returned, as
    /// seen at one instant between writes; `None` if `span` leaves the cells.
    /// `read` may run more than once (when a write overlapped it), so it
    /// must only load cells and write into its own output.
    pub(crate) fn read<R>(&self, span: Range<usize>, mut read: impl FnMut(&[AtomicU16]) -> R) -> Option<R> {
        let cells = self.cells.get(span)?;
        // The first try inline; retries (a write overlapped) out of line.
        let before = self.seq.load(Ordering::Acquire);
        if before & 1 == 0 {
            let result = read(cells);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return Some(result);
            }
        }
        Some(self.read_contended(cells, read))
    }

    /// [`SeqCells::read`] after a first try that a write overlapped.
    #[cold]
    #[inline(never)]
    fn read_contended<R>(&self, cells: &[AtomicU16], mut read: impl FnMut(&[AtomicU16]) -> R) -> R {
        for _ in 1..OPTIMISTIC_TRIES {
            std::hint::spin_loop();
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let result = read(cells);
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return result;
                }
            }
        }
        // Writers keep winning: read among them.
        let _turn = self.lock();
        read(cells)
    }

    /// Runs `write` on the cells of `span` with no reader seeing a part of
    /// it, and returns what it returned; `None` if `span` leaves the cells.
    pub(crate) fn write<R>(&self, span: Range<usize>, write: impl FnOnce(&[AtomicU16]) -> R) -> Option<R> {
        let cells = self.cells.get(span)?;
        Some(self.write_all(|_| write(cells)))
    }

    /// Runs `write` on all the cells with no reader seeing a part of it.
    pub(crate) fn write_all<R>(&self, write: impl FnOnce(&[AtomicU16]) -> R) -> R {
        let _turn = self.lock();
        // Odd while writing (`| 1`: even after a write closure that panicked).
        let odd = self.seq.load(Ordering::Relaxed) | 1;
        self.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        let result = write(&self.cells);
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
        result
    }

    /// All cells at one instant.
    pub(crate) fn snapshot(&self) -> Vec<u16> {
        let mut out = vec![0; self.cells.len()];
        let _ = self.read(0..self.cells.len(), |cells| load(cells, &mut out));
        out
    }
}

/// Loads `cells` into `out` (as many as both hold).
#[inline]
pub(crate) fn load(cells: &[AtomicU16], out: &mut [u16]) {
    for (d, c) in out.iter_mut().zip(cells) {
        *d = c.load(Ordering::Relaxed);
    }
}

/// Stores `values` into `cells` (as many as both hold).
#[inline]
pub(crate) fn store(cells: &[AtomicU16], values: &[u16]) {
    for (c, v) in cells.iter().zip(values) {
        c.store(*v, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn reads_and_writes_inside_the_cells_only() {
        let cells = SeqCells::new(&[1, 2, 3, 4]);
        let mut out = [0u16; 2];
        assert_eq!(cells.read(1..3, |c| load(c, &mut out)), Some(()));
        assert_eq!(out, [2, 3]);
        assert_eq!(cells.write(2..4, |c| store(c, &[7, 8])), Some(()));
        assert_eq!(cells.snapshot(), vec![1, 2, 7, 8]);
        assert_eq!(cells.read(3..5, |_| ()), None);
        assert_eq!(cells.write(4..5, |_| ()), None);
        assert_eq!(cells.len(), 4);
    }

    /// Writers store the same value in every cell of a span; readers on
    /// other threads must never see two different values in one read.
    #[test]
    fn a_reader_never_sees_half_a_write() {
        const LEN: usize = 64;
        let cells = Arc::new(SeqCells::new(&[0; LEN]));
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2u16)
            .map(|w| {
                let cells = Arc::clone(&cells);
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut v = w;
                    while !done.load(Ordering::Relaxed) {
                        v = v.wrapping_add(2);
                        cells.write(0..LEN, |c| store(c, &[v; LEN]));
                    }
                })
            })
            .collect();
        let mut torn = 0;
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..200_000 {
            let mut out = [0u16; LEN];
            cells.read(0..LEN, |c| load(c, &mut out));
            if out.iter().any(|&v| v != out[0]) {
                torn += 1;
            }
            distinct.insert(out[0]);
        }
        done.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().expect("writer");
        }
        assert_eq!(torn, 0, "reads that saw part of a write");
        assert!(distinct.len() > 1, "the readers saw the writers' values change");
    }
}
