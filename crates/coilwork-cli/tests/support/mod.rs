//! What the TLS interop tests (`interop_tls.rs`, `interop_roles.rs`) share:
//! a `coilwork serve --transport tls` child process on a free port, a
//! temporary directory for the certificates made in the test, and the
//! python with pymodbus the tests drive (or a skip).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `coilwork serve`, killed on drop.
pub struct Server {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory named after `tag` and this process.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("coilwork-tls-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `text` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `COILWORK_PYTHON`, or None with a message (a failure if `COILWORK_REQUIRE_CLIENTS` is set).
pub fn python_or_skip() -> Option<PathBuf> {
    let py = std::env::var_os("COILWORK_PYTHON")
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if py.is_none() {
        assert!(
            std::env::var_os("COILWORK_REQUIRE_CLIENTS").is_none(),
            "COILWORK_PYTHON (a python with pymodbus) is required"
        );
        eprintln!("skipped: set COILWORK_PYTHON to a python with pymodbus 3.16 (bash .ci/test does)");
    }
    py
}

/// Starts `coilwork serve --transport tls` with `args` on a free port and
/// waits for its listening line.
pub fn serve_tls(args: &[&str]) -> Server {
    let port = coilwork_test_support::free_port();
    let address = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["serve", "--transport", "tls", "--address", &address])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start coilwork");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("coilwork printed no listening line");
    assert!(
        line.contains(&address),
        "listening line {line:?} does not name {address}"
    );
    Server { child, port }
}
