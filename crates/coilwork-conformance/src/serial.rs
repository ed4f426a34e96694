//! A serial line for the serial cases: two ptys linked by socat
//! ([`PtyPair`], from `coilwork-test-support`), the server on one end, the
//! test's client (serialport, short read timeout) on the other.

use crate::client::STEP;
pub use coilwork_test_support::pty::PtyPair;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

/// Opens the client's end of `pair` raw at `baud`.
pub fn open_client(pair: &PtyPair, baud: u32) -> Line {
    let port = serialport::new(pair.client_end().to_string_lossy(), baud)
        .timeout(Duration::from_millis(20))
        .open()
        .expect("open the client end of the pty");
    Line { port }
}

/// The client's end of the line.
pub struct Line {
    port: Box<dyn serialport::SerialPort>,
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line").finish_non_exhaustive()
    }
}

impl Line {
    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.port.write_all(bytes).expect("write line");
        self.port.flush().expect("flush line");
    }

    /// Reads exactly `n` bytes, bounded by [`STEP`].
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        let end = Instant::now() + STEP;
        let mut got = 0;
        while got < n {
            assert!(Instant::now() < end, "answer in time: got {:02X?}", &v[..got]);
            match self.port.read(&mut v[got..]) {
                Ok(0) => std::thread::sleep(Duration::from_millis(2)),
                Ok(k) => got += k,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("read line: {e}"),
            }
        }
        v
    }

    /// True if nothing arrives within `d`.
    pub fn silent_for(&mut self, d: Duration) -> bool {
        let end = Instant::now() + d;
        let mut b = [0u8; 64];
        while Instant::now() < end {
            match self.port.read(&mut b) {
                Ok(k) if k > 0 => return false,
                _ => {}
            }
        }
        true
    }
}
