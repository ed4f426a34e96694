//! A client nobody on this project wrote: pymodbus's, run against servers
//! of this crate on smol and on async-std (the script is coilwork-cli's).
//!
//! `.ci/test` sets `COILWORK_PYTHON` (a venv with pymodbus) and
//! `COILWORK_REQUIRE_CLIENTS=1`; then a missing client is a failure. Without
//! that variable a missing client skips the test with a message.

mod common;

use coilwork_async_std::{ServerError, TcpServer, TcpServerConfig, UdpServer, UdpServerConfig};
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Engine, Identity};
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn python() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("COILWORK_PYTHON")?);
    p.exists().then_some(p)
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../coilwork-cli/tests/clients/pymodbus_client.py")
}

/// The tables and identity the script expects (`coilwork serve` defaults).
fn big_engine() -> Arc<Engine> {
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

/// Runs the pymodbus script on a plain thread and waits for it without blocking the runtime.
async fn pymodbus(py: PathBuf, port: u16, comm: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = Command::new(py)
            .arg(script())
            .args(["127.0.0.1", &port.to_string(), comm, "socket"])
            .output()
            .expect("run pymodbus client");
        let _ = tx.send(out);
    });
    let out = within(Duration::from_secs(60), async {
        loop {
            if let Ok(out) = rx.try_recv() {
                return out;
            }
            async_io::Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("pymodbus client finished in time");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pymodbus client ({comm}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
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

async fn pymodbus_over_tcp(rt: Rt) {
    let Some(py) = skip() else { return };
    let server = Arc::new(TcpServer::new(
        big_engine(),
        TcpServerConfig::new("127.0.0.1:0".parse().unwrap()),
    ));
    let port = server.bind().unwrap().port();
    let s = Arc::clone(&server);
    let task: Join<Result<(), ServerError>> = rt.spawn(async move { s.serve_forever().await });
    pymodbus(py, port, "tcp").await;
    within(STEP, server.shutdown()).await.expect("stops");
    assert!(within(STEP, task).await.expect("returns").is_ok());
}

async fn pymodbus_over_udp(rt: Rt) {
    let Some(py) = skip() else { return };
    let server = Arc::new(UdpServer::new(
        big_engine(),
        UdpServerConfig::new("127.0.0.1:0".parse().unwrap()),
    ));
    let port = server.bind().unwrap().port();
    let s = Arc::clone(&server);
    let task = rt.spawn(async move { s.serve_forever().await });
    pymodbus(py, port, "udp").await;
    within(STEP, server.shutdown()).await.expect("stops");
    assert!(within(STEP, task).await.expect("returns").is_ok());
}

tests!(
    smol: pymodbus_over_tcp, pymodbus_over_udp;
    async_std: pymodbus_over_tcp
);
