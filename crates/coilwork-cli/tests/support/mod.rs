//! What the CLI's end-to-end tests share (TLS and roles: `interop_tls.rs`,
//! `interop_roles.rs`, `two_roles.rs`, `simulate_roles.rs`,
//! `gateway_roles.rs`; `metrics.rs`): a `coilwork` child process started
//! until it announces itself, a temporary directory for the certificates
//! made in the test, the python with pymodbus the tests drive (or a skip),
//! and pymodbus's TLS client running a list of operations.
//!
//! Each test file uses a part of it.
#![allow(dead_code)]

use coilwork_test_support::pki;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a child may take to announce itself, and a python client to run.
const STEP: Duration = Duration::from_secs(30);

/// A running `coilwork`, killed on drop.
pub struct Server {
    child: Child,
    /// The port it listens on (0 where the test did not need it).
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `coilwork` with `args` (no `RUST_LOG`) and waits for a stdout
/// line containing `marker`; returns the child and what it printed up to
/// and including that line (the last). The rest of its stdout is read and
/// dropped on a thread, so it never blocks on it.
pub fn start(args: &[&str], marker: &str) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start coilwork");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server { child, port: 0 };
    let (tx, rx) = std::sync::mpsc::channel();
    let marker_owned = marker.to_owned();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let mut printed = String::new();
        for line in lines.by_ref() {
            printed.push_str(&line);
            if line.contains(&marker_owned) {
                let _ = tx.send(printed);
                break;
            }
            printed.push('\n');
        }
        for _ in lines {}
    });
    let printed = rx
        .recv_timeout(STEP)
        .unwrap_or_else(|_| panic!("coilwork printed no {marker:?} line"));
    (server, printed)
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

    /// Writes the CA certificate and the server's certificate and key of `p`
    /// (`ca.pem`, `server.pem`, `server.key`); returns their paths.
    pub fn server_pki(&self, p: &pki::Pki) -> (String, String, String) {
        (
            self.write("ca.pem", &p.ca.cert_pem),
            self.write("server.pem", &p.server.cert_pem),
            self.write("server.key", &p.server.key_pem),
        )
    }

    /// Writes `who`'s certificate and key as `NAME.pem` and `NAME.key`;
    /// returns their paths.
    pub fn identity(&self, who: &pki::Identity, name: &str) -> (String, String) {
        (
            self.write(&format!("{name}.pem"), &who.cert_pem),
            self.write(&format!("{name}.key"), &who.key_pem),
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `COILWORK_PYTHON`, or None with a message (a failure if `COILWORK_REQUIRE_CLIENTS` is set).
pub use coilwork_test_support::clients::python_or_skip;

/// Starts `coilwork serve --transport tls` with `args` on a free port and
/// waits for its listening line.
pub fn serve_tls(args: &[&str]) -> Server {
    let port = coilwork_test_support::free_port();
    let address = format!("127.0.0.1:{port}");
    let head = ["serve", "--transport", "tls", "--address", &address];
    let (mut server, _) = start(&[&head, args].concat(), &address);
    server.port = port;
    server
}

/// Runs `py` with `args`, killed past 30 s; asserts it succeeded and
/// returns its stdout.
pub fn run_python(py: &Path, args: &[&str]) -> String {
    let mut child = Command::new(py)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > STEP {
            let _ = child.kill();
            panic!("the python client did not finish in {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python client {:?} failed:\n{stdout}\n{}",
        args.get(2..),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// pymodbus's TLS client (Python's ssl module: OpenSSL) running each
/// operation of a `;`-separated list ("fc unit address value-or-count",
/// fc 1, 3, 4, 6 or 16) on one connection; it prints "ok" (reads:
/// "ok v1,v2,...") or "exc N" (the exception code), one line per operation.
/// Without a certificate (an empty `cert`) it connects as a client without one.
const OPS_CLIENT: &str = r#"
import ssl, sys
from pymodbus.client import ModbusTlsClient

port, ca, cert, key, ops = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
if cert:
    ctx.load_cert_chain(certfile=cert, keyfile=key)
client = ModbusTlsClient("127.0.0.1", port=int(port), sslctx=ctx, timeout=3, retries=0)
assert client.connect(), "no TLS connection"
for op in ops.split(";"):
    fc, unit, addr, arg = (int(x) for x in op.split())
    if fc == 3:
        r = client.read_holding_registers(addr, count=arg, device_id=unit)
    elif fc == 4:
        r = client.read_input_registers(addr, count=arg, device_id=unit)
    elif fc == 6:
        r = client.write_register(addr, arg, device_id=unit)
    elif fc == 16:
        r = client.write_registers(addr, [arg, arg], device_id=unit)
    elif fc == 1:
        r = client.read_coils(addr, count=arg, device_id=unit)
    else:
        raise SystemExit(f"unknown op {op}")
    if r.isError():
        print(f"exc {r.exception_code}", flush=True)
    elif fc in (3, 4):
        print("ok " + ",".join(str(v) for v in r.registers), flush=True)
    elif fc == 1:
        print("ok " + ",".join(str(int(b)) for b in r.bits[:arg]), flush=True)
    else:
        print("ok", flush=True)
client.close()
"#;

/// Runs `ops` with pymodbus's TLS client against `127.0.0.1:port`, trusting
/// `ca`, with the client certificate `cert` / `key`; one line per operation.
pub fn tls_ops(py: &Path, port: u16, ca: &str, (cert, key): (&str, &str), ops: &str) -> Vec<String> {
    run_python(py, &["-c", OPS_CLIENT, &port.to_string(), ca, cert, key, ops])
        .lines()
        .map(str::to_owned)
        .collect()
}
