//! Real clients over a serial line: `coilwork serve --transport serial` on
//! one end of a socat pty pair, pymodbus's serial client (RTU and ASCII) and
//! mbpoll (libmodbus, RTU) on the other end.
//!
//! `.ci/test` installs socat, mbpoll and a python with pymodbus and sets
//! `COILWORK_PYTHON` and `COILWORK_REQUIRE_CLIENTS=1`; then a missing tool is
//! a failure. Without that variable a missing tool skips the test with a
//! message.
#![cfg(unix)]

use coilwork_test_support::PtyPair;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long any one step (socat start, server start, one client run) may take.
const STEP: Duration = Duration::from_secs(60);

/// A child process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use coilwork_test_support::clients::required as require_clients;

/// True if `program args` runs; otherwise skips (or fails when clients are required).
fn have(program: &str, args: &[&str]) -> bool {
    let found = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            !require_clients(),
            "{program} is required (COILWORK_REQUIRE_CLIENTS is set)"
        );
        eprintln!("skipped: {program} not installed (bash .ci/test installs it)");
    }
    found
}

fn python() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("COILWORK_PYTHON")?);
    p.exists().then_some(p)
}

/// A socat pty pair: the server's end `a`, the client's end `b` (socat was
/// checked by [`have`]). Declared before the server, so dropped after it.
fn line(name: &str) -> PtyPair {
    PtyPair::new(name).expect("socat is installed")
}

/// Starts `coilwork serve` on `port` at 19200 8N1 with `framer` and waits for its serving line.
fn serve(port: &Path, framer: &str) -> Guard {
    let port = port.to_string_lossy().into_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["serve", "--transport", "serial", "--port", &port, "--framer", framer])
        .args(["--baudrate", "19200", "--parity", "none"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start coilwork");
    let stdout = child.stdout.take().expect("stdout");
    let guard = Guard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(STEP).expect("coilwork printed no serving line");
    assert!(line.contains(&port), "serving line {line:?} does not name {port}");
    assert!(line.contains("19200 8N1"), "serving line {line:?}");
    guard
}

/// Runs a command, killing it if it takes longer than `STEP`.
fn run_bounded(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start client");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > STEP {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} ran longer than {STEP:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_pymodbus(framer: &str) {
    if !have("socat", &["-V"]) {
        return;
    }
    let Some(py) = python() else {
        assert!(
            !require_clients(),
            "COILWORK_PYTHON (a python with pymodbus) is required"
        );
        eprintln!("skipped: set COILWORK_PYTHON to a python with pymodbus 3.16 (bash .ci/test does)");
        return;
    };
    let has_pyserial = Command::new(&py)
        .args(["-c", "import serial"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_pyserial {
        assert!(
            !require_clients(),
            "COILWORK_PYTHON has no pyserial: install 'pymodbus[serial]==3.16.1' in it"
        );
        eprintln!("skipped: COILWORK_PYTHON has no pyserial (pymodbus's serial client needs it)");
        return;
    }
    let line = line(framer);
    let _server = serve(&line.server_end(), framer);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/pymodbus_client.py");
    let b = line.client_end();
    let started = Instant::now();
    // COMM=serial: HOST is the device path, PORT the baud rate.
    let out = run_bounded(Command::new(py).arg(script).arg(&b).args(["19200", "serial", framer]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pymodbus serial client ({framer}) failed after {:?}:\n{stdout}\n{stderr}",
        started.elapsed()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn pymodbus_serial_client_rtu() {
    run_pymodbus("rtu");
}

#[test]
fn pymodbus_serial_client_ascii() {
    run_pymodbus("ascii");
}

/// `mbpoll [options] DEVICE [values]`: one poll (`-1`), unit 1, zero-based addresses.
fn mbpoll(b: &Path, args: &[&str], values: &[&str]) -> Output {
    run_bounded(
        Command::new("mbpoll")
            .args([
                "-m", "rtu", "-b", "19200", "-P", "none", "-a", "1", "-0", "-1", "-o", "2",
            ])
            .args(args)
            .arg(b)
            .args(values),
    )
}

fn mbpoll_ok(b: &Path, args: &[&str], values: &[&str]) -> String {
    let out = mbpoll(b, args, values);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "mbpoll {args:?} {values:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn mbpoll_rtu() {
    if !have("socat", &["-V"]) || !have("mbpoll", &["-V"]) {
        return;
    }
    let line = line("mbpoll");
    let _server = serve(&line.server_end(), "rtu");
    let b = line.client_end();

    // Write three holding registers (FC16), then read them back (FC3).
    mbpoll_ok(&b, &["-t", "4", "-r", "50"], &["11", "22", "33"]);
    let out = mbpoll_ok(&b, &["-t", "4", "-r", "50", "-c", "3"], &[]);
    for (addr, value) in [(50, 11), (51, 22), (52, 33)] {
        assert!(out.contains(&format!("[{addr}]: \t{value}")), "mbpoll read:\n{out}");
    }
    // Coils: write (FC15) and read back (FC1).
    mbpoll_ok(&b, &["-t", "0", "-r", "20"], &["1", "0", "1"]);
    let out = mbpoll_ok(&b, &["-t", "0", "-r", "20", "-c", "3"], &[]);
    for (addr, value) in [(20, 1), (21, 0), (22, 1)] {
        assert!(out.contains(&format!("[{addr}]: \t{value}")), "mbpoll coils:\n{out}");
    }
    // Past the end of the table: exception 02, which mbpoll reports.
    let out = mbpoll(&b, &["-t", "4", "-r", "9999", "-c", "2"], &[]);
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
