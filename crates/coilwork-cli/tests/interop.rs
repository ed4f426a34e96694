//! Real clients that nobody on this project wrote, against the real
//! `coilwork` binary over loopback: pymodbus's client (TCP, UDP, RTU over
//! TCP, ASCII over TCP) and mbpoll (libmodbus-based, TCP).
//!
//! `.ci/test` installs both and sets `COILWORK_PYTHON` (a venv with pymodbus)
//! and `COILWORK_REQUIRE_CLIENTS=1`; then a missing client is a failure.
//! Without that variable a missing client skips the test with a message.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `coilwork serve` with `args` on port 0 and reads the port it bound
/// from its listening line, so no other test can take the port in between.
fn serve(args: &[&str]) -> Server {
    let address = "127.0.0.1:0";
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .arg("serve")
        .args(["--address", address])
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
    let port = line
        .split_once(" on 127.0.0.1:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("listening line {line:?} names no 127.0.0.1 port"));
    Server { child, port }
}

use coilwork_test_support::clients::required as require_clients;

fn python() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("COILWORK_PYTHON")?);
    p.exists().then_some(p)
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/pymodbus_client.py")
}

fn run_pymodbus(comm: &str, framer: &str, server_args: &[&str]) {
    let Some(py) = python() else {
        assert!(
            !require_clients(),
            "COILWORK_PYTHON (a python with pymodbus) is required"
        );
        eprintln!("skipped: set COILWORK_PYTHON to a python with pymodbus 3.16 (bash .ci/test does)");
        return;
    };
    let server = serve(server_args);
    let started = Instant::now();
    let out = Command::new(py)
        .arg(script())
        .args(["127.0.0.1", &server.port.to_string(), comm, framer])
        .output()
        .expect("run pymodbus client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pymodbus client ({comm}/{framer}) failed after {:?}:\n{stdout}\n{stderr}",
        started.elapsed()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn pymodbus_client_over_tcp() {
    run_pymodbus("tcp", "socket", &[]);
}

#[test]
fn pymodbus_client_over_udp() {
    run_pymodbus("udp", "socket", &["--transport", "udp"]);
}

#[test]
fn pymodbus_client_rtu_over_tcp() {
    run_pymodbus("tcp", "rtu", &["--framer", "rtu"]);
}

#[test]
fn pymodbus_client_ascii_over_tcp() {
    run_pymodbus("tcp", "ascii", &["--framer", "ascii"]);
}

fn mbpoll(args: &[&str]) -> String {
    let out = Command::new("mbpoll").args(args).output().expect("run mbpoll");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "mbpoll {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn mbpoll_over_tcp() {
    if Command::new("mbpoll").arg("-V").output().is_err() {
        assert!(!require_clients(), "mbpoll is required");
        eprintln!("skipped: mbpoll not installed (bash .ci/test installs it)");
        return;
    }
    let server = serve(&[]);
    let port = server.port.to_string();
    let base = ["-m", "tcp", "-a", "1", "-0", "-1", "-p", port.as_str(), "-o", "2"];
    // Write three holding registers (FC16), then read them back (FC3).
    let mut write: Vec<&str> = base.to_vec();
    write.extend(["-t", "4", "-r", "50", "127.0.0.1", "11", "22", "33"]);
    mbpoll(&write);
    let mut read: Vec<&str> = base.to_vec();
    read.extend(["-t", "4", "-r", "50", "-c", "3", "127.0.0.1"]);
    let out = mbpoll(&read);
    for (addr, value) in [(50, 11), (51, 22), (52, 33)] {
        assert!(out.contains(&format!("[{addr}]: \t{value}")), "mbpoll read:\n{out}");
    }
    // Coils: write (FC15) and read back (FC1).
    let mut write: Vec<&str> = base.to_vec();
    write.extend(["-t", "0", "-r", "20", "127.0.0.1", "1", "0", "1"]);
    mbpoll(&write);
    let mut read: Vec<&str> = base.to_vec();
    read.extend(["-t", "0", "-r", "20", "-c", "3", "127.0.0.1"]);
    let out = mbpoll(&read);
    for (addr, value) in [(20, 1), (21, 0), (22, 1)] {
        assert!(out.contains(&format!("[{addr}]: \t{value}")), "mbpoll coils:\n{out}");
    }
    // An address past the table is an exception, which mbpoll reports as a failure.
    let mut bad: Vec<&str> = base.to_vec();
    bad.extend(["-t", "4", "-r", "9999", "-c", "2", "127.0.0.1"]);
    let out = Command::new("mbpoll").args(&bad).output().expect("run mbpoll");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.to_lowercase().contains("illegal data address"),
        "mbpoll past the end:\n{text}"
    );
}
