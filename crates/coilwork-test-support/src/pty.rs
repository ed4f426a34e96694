//! A serial line for tests: two pseudo terminals linked by socat.
//!
//! [`PtyPair::new`] makes a fresh directory under the system temp dir,
//! starts `socat` with a pty linked at `DIR/a` (the server's end) and one at
//! `DIR/b` (the client's end), and waits until both links exist. Dropping
//! the pair kills socat and removes the directory.
//!
//! Without socat the pair is `None` and the test is skipped with a message,
//! unless `COILWORK_REQUIRE_CLIENTS` is set (`bash .ci/test` sets it and
//! installs socat): then it panics.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long socat may take to make both links.
const LINKS_WITHIN: Duration = Duration::from_secs(10);

/// A socat pty pair `DIR/a` <-> `DIR/b`; socat is killed and `DIR` removed on drop.
#[derive(Debug)]
pub struct PtyPair {
    child: Child,
    dir: PathBuf,
}

impl PtyPair {
    /// Starts socat and waits for both links. `name` goes into the
    /// directory's name (with the process id and a counter, so parallel
    /// tests never share one).
    ///
    /// `None` (skipped, with a message) if socat is not installed and
    /// `COILWORK_REQUIRE_CLIENTS` is unset.
    ///
    /// # Panics
    /// If socat is missing while `COILWORK_REQUIRE_CLIENTS` is set, fails to
    /// start, or makes no links within 10 s (test code only).
    pub fn new(name: &str) -> Option<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "coilwork-pty-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir"); // ok: test code
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
                let _ = std::fs::remove_dir_all(&dir);
                assert!(
                    !crate::clients::required(),
                    "socat is required (COILWORK_REQUIRE_CLIENTS is set)"
                ); // ok: test code
                eprintln!("skipped: socat not installed (bash .ci/test installs it)");
                return None;
            }
            Err(e) => panic!("socat: {e}"), // ok: test code
        };
        let pair = Self { child, dir };
        let end = Instant::now() + LINKS_WITHIN;
        while !(pair.server_end().exists() && pair.client_end().exists()) {
            assert!(Instant::now() < end, "socat made no pty links in {:?}", pair.dir); // ok: test code
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(pair)
    }

    /// The server's end, `DIR/a`.
    pub fn server_end(&self) -> PathBuf {
        self.dir.join("a")
    }

    /// The client's end, `DIR/b`.
    pub fn client_end(&self) -> PathBuf {
        self.dir.join("b")
    }

    /// The pair's directory (removed on drop), for other files a test needs
    /// beside the line.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_exist_until_drop() {
        let Some(pair) = PtyPair::new("self-test") else { return };
        let (a, b, dir) = (pair.server_end(), pair.client_end(), pair.dir().to_owned());
        assert!(a.exists() && b.exists());
        drop(pair);
        assert!(!dir.exists(), "directory removed on drop");
    }
}
