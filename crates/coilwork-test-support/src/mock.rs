//! An in-memory stream: reads come from a script, writes are recorded, and a
//! write can be made to fail. For code that takes any `Read + Write` (a
//! serial line, a stream session driver).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

/// What one read of a [`MockStream`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// These bytes (one read each; a read with a short buffer leaves the rest for the next).
    Bytes(Vec<u8>),
    /// A read timeout (`WouldBlock`).
    Timeout,
    /// End of stream.
    Eof,
    /// An error of this kind.
    Fail(ErrorKind),
}

#[derive(Debug, Default)]
struct State {
    reads: VecDeque<Step>,
    written: Vec<u8>,
    writes: usize,
    fail_writes: Option<ErrorKind>,
}

/// A scripted stream; clones share one state, so a test keeps a clone to
/// feed it and to look at what was written while the code under test owns another.
#[derive(Debug, Clone, Default)]
pub struct MockStream {
    state: Arc<Mutex<State>>,
}

impl MockStream {
    /// A stream with nothing to read yet (a read then times out).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one read.
    pub fn push(&self, step: Step) -> &Self {
        self.lock().reads.push_back(step);
        self
    }

    /// Queues `bytes` as one read.
    pub fn push_bytes(&self, bytes: &[u8]) -> &Self {
        self.push(Step::Bytes(bytes.to_vec()))
    }

    /// Makes every later write fail with `kind` (`None`: succeed again).
    pub fn fail_writes(&self, kind: Option<ErrorKind>) {
        self.lock().fail_writes = kind;
    }

    /// Everything written so far.
    pub fn written(&self) -> Vec<u8> {
        self.lock().written.clone()
    }

    /// Takes everything written so far.
    pub fn take_written(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().written)
    }

    /// How many writes succeeded.
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// How many reads are still queued.
    pub fn queued(&self) -> usize {
        self.lock().reads.len()
    }
}

impl Read for MockStream {
    /// The next scripted step; with none left, a timeout.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut state = self.lock();
        match state.reads.pop_front() {
            Some(Step::Bytes(mut bytes)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    state.reads.push_front(Step::Bytes(bytes.split_off(n)));
                }
                Ok(n)
            }
            Some(Step::Eof) => Ok(0),
            Some(Step::Fail(kind)) => Err(kind.into()),
            Some(Step::Timeout) | None => Err(ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for MockStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut state = self.lock();
        if let Some(kind) = state.fail_writes {
            return Err(kind.into());
        }
        state.written.extend_from_slice(buf);
        state.writes += 1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_follow_the_script_and_writes_are_shared() {
        let m = MockStream::new();
        m.push_bytes(&[1, 2, 3]).push(Step::Eof);
        let mut owned = m.clone();
        let mut buf = [0u8; 2];
        assert_eq!(owned.read(&mut buf).unwrap(), 2);
        assert_eq!(owned.read(&mut buf).unwrap(), 1, "the rest of a long step");
        assert_eq!(buf[0], 3);
        assert_eq!(owned.read(&mut buf).unwrap(), 0);
        assert_eq!(owned.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        owned.write_all(&[9, 9]).unwrap();
        assert_eq!(m.written(), [9, 9]);
        m.fail_writes(Some(ErrorKind::BrokenPipe));
        assert_eq!(owned.write(&[1]).unwrap_err().kind(), ErrorKind::BrokenPipe);
        assert_eq!(m.writes(), 1);
    }
}
