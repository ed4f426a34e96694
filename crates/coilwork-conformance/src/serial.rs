//! A serial line for the serial cases: two ptys linked by socat, the
//! server on one end, the test's client (serialport, short read timeout) on
//! the other.

use crate::client::STEP;
use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A socat pty pair `DIR/a` <-> `DIR/b`; socat is killed and the directory removed on drop.
#[derive(Debug)]
pub struct PtyPair {
    child: Child,
    dir: PathBuf,
}

impl PtyPair {
    /// `None` (skipped, with a message) if socat is missing and
    /// `COILWORK_REQUIRE_CLIENTS` is unset; panics if it is set.
    pub fn new(name: &str) -> Option<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "coilwork-conformance-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let spawned = Command::new("socat")
            .args(["-d", "-d"])
            .arg(format!("pty,raw,echo=0,link={}", dir.join("a").display()))
            .arg(format!("pty,raw,echo=0,link={}", dir.join("b").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                assert!(
                    std::env::var_os("COILWORK_REQUIRE_CLIENTS").is_none(),
                    "socat is required (COILWORK_REQUIRE_CLIENTS is set)"
                );
                eprintln!("skipped: socat not installed (bash .ci/test installs it)");
                let _ = std::fs::remove_dir_all(&dir);
                return None;
            }
            Err(e) => panic!("socat: {e}"),
        };
        let pair = Self { child, dir };
        let end = Instant::now() + STEP;
        while !(pair.server_end().exists() && pair.client_end().exists()) {
            assert!(Instant::now() < end, "socat made no pty links");
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(pair)
    }

    /// The server's end.
    pub fn server_end(&self) -> PathBuf {
        self.dir.join("a")
    }

    /// The client's end.
    pub fn client_end(&self) -> PathBuf {
        self.dir.join("b")
    }

    /// Opens the client's end raw at `baud`.
    pub fn open_client(&self, baud: u32) -> Line {
        let port = serialport::new(self.client_end().to_string_lossy(), baud)
            .timeout(Duration::from_millis(20))
            .open()
            .expect("open the client end of the pty");
        Line { port }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
