//! pymodbus's client (a client nobody on this project wrote) against the
//! blocking servers, with the same check script the CLI's interop tests use.
//!
//! Needs `COILWORK_PYTHON` (a python with pymodbus 3.16; `bash .ci/test` sets
//! it). Without it the tests are skipped with a message, unless
//! `COILWORK_REQUIRE_CLIENTS` is set.

mod common;

use coilwork_blocking::{TcpServer, TcpServerConfig, UdpServer, UdpServerConfig};
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Engine, Framing, Identity};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the check script expects: every unit, 10,000 entries per table, vendor "coilwork".
fn engine() -> Arc<Engine> {
    let device = DeviceContext::with_sizes(10_000, 10_000, 10_000, 10_000).expect("device");
    let identity = Identity::new()
        .vendor_name("coilwork")
        .product_code("CW")
        .major_minor_revision("0.1");
    Arc::new(
        Engine::builder(ServerContext::single(device))
            .identity(identity)
            .build(),
    )
}

fn python() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("COILWORK_PYTHON")?);
    p.exists().then_some(p)
}

/// Runs the script against `port`; kills it if it runs past a minute.
fn run_script(py: PathBuf, port: u16, comm: &str, framer: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../coilwork-cli/tests/clients/pymodbus_client.py");
    let mut child = Command::new(py)
        .arg(script)
        .args(["127.0.0.1", &port.to_string(), comm, framer])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pymodbus client");
    let end = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("pymodbus client ({comm}/{framer}) did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pymodbus client ({comm}/{framer}) failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

fn skip() -> Option<PathBuf> {
    let py = python();
    if py.is_none() {
        assert!(
            std::env::var_os("COILWORK_REQUIRE_CLIENTS").is_none(),
            "COILWORK_PYTHON (a python with pymodbus) is required"
        );
        eprintln!("skipped: set COILWORK_PYTHON to a python with pymodbus 3.16 (bash .ci/test does)");
    }
    py
}

fn tcp(framing: Framing, framer: &str) {
    let Some(py) = skip() else { return };
    let server = Arc::new(TcpServer::new(
        engine(),
        TcpServerConfig {
            framing,
            ..TcpServerConfig::new("127.0.0.1:0".parse().unwrap())
        },
    ));
    let addr = server.bind().unwrap();
    let s = Arc::clone(&server);
    let thread = std::thread::spawn(move || s.serve_forever());
    run_script(py, addr.port(), "tcp", framer);
    server.handle().stop();
    assert!(server.handle().wait_stopped_timeout(common::STEP));
    assert!(thread.join().unwrap().is_ok());
}

#[test]
fn pymodbus_client_over_tcp() {
    tcp(Framing::Mbap, "socket");
}

#[test]
fn pymodbus_client_rtu_over_tcp() {
    tcp(Framing::Rtu, "rtu");
}

#[test]
fn pymodbus_client_over_udp() {
    let Some(py) = skip() else { return };
    let server = Arc::new(UdpServer::new(
        engine(),
        UdpServerConfig::new("127.0.0.1:0".parse().unwrap()),
    ));
    let addr = server.bind().unwrap();
    let s = Arc::clone(&server);
    let thread = std::thread::spawn(move || s.serve_forever());
    run_script(py, addr.port(), "udp", "socket");
    server.handle().stop();
    assert!(server.handle().wait_stopped_timeout(common::STEP));
    assert!(thread.join().unwrap().is_ok());
}
