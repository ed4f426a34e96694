//! A client nobody on this project wrote: pymodbus's, running the CLI's
//! check script (`coilwork-cli/tests/clients/pymodbus_client.py`) against
//! each adapter's TCP (MBAP and RTU framing) and UDP servers.
//!
//! Needs `COILWORK_PYTHON` (a python with pymodbus 3.16; `bash .ci/test`
//! sets it). Without it the cases are skipped with a message, unless
//! `COILWORK_REQUIRE_CLIENTS` is set (then they fail).

use crate::{Harness, TcpServerConfig, UdpOptions, tcp_defaults};
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Engine, Framing, Identity};
use coilwork_test_support::clients::python_or_skip;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the check script expects (`coilwork serve`'s defaults): every unit,
/// 10,000 entries per table, vendor "coilwork".
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

/// Runs the script against `port`; kills it if it runs past a minute.
fn run_script(name: &str, py: PathBuf, port: u16, comm: &str, framer: &str) {
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
            panic!("{name}: pymodbus client ({comm}/{framer}) did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name}: pymodbus client ({comm}/{framer}) failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{name}: {stdout}");
}

fn over_tcp<H: Harness>(framing: Framing, framer: &str) {
    let Some(py) = python_or_skip() else { return };
    let server = H::start_tcp(
        engine(),
        &TcpServerConfig {
            framing,
            ..tcp_defaults()
        },
    );
    run_script(H::NAME, py, server.addr().port(), "tcp", framer);
    server.stop();
}

/// pymodbus's client over Modbus/TCP (MBAP).
pub fn pymodbus_over_tcp<H: Harness>() {
    over_tcp::<H>(Framing::Mbap, "socket");
}

/// pymodbus's client with RTU framing over TCP.
pub fn pymodbus_rtu_over_tcp<H: Harness>() {
    over_tcp::<H>(Framing::Rtu, "rtu");
}

/// pymodbus's client over Modbus/UDP.
pub fn pymodbus_over_udp<H: Harness>() {
    let Some(py) = python_or_skip() else { return };
    let server = H::start_udp(engine(), &UdpOptions::default());
    run_script(H::NAME, py, server.addr().port(), "udp", "socket");
    server.stop();
}
