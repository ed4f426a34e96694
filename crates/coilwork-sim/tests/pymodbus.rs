//! pymodbus's client against a coilwork simulator built from a configuration
//! in pymodbus's format, compared with pymodbus's own simulator datastore
//! (`ModbusSimulatorContext`) built from the same file.
//!
//! `.ci/test` sets `COILWORK_PYTHON` (a venv with pymodbus) and
//! `COILWORK_REQUIRE_CLIENTS=1`; without them a missing python skips.

use coilwork_sim::{Simulator, SimulatorOptions};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn python() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("COILWORK_PYTHON")?);
    p.exists().then_some(p)
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

#[test]
fn pymodbus_client_reads_what_pymodbus_would_serve() {
    let Some(py) = python() else {
        assert!(
            std::env::var_os("COILWORK_REQUIRE_CLIENTS").is_none(),
            "COILWORK_PYTHON (a python with pymodbus) is required"
        );
        eprintln!("skipped: set COILWORK_PYTHON to a python with pymodbus 3.16 (bash .ci/test does)");
        return;
    };
    let file = data("device.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    config["server_list"]["server"]["port"] = 0.into();
    let sim = Simulator::from_json(&config.to_string(), SimulatorOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.block_on(sim.start()).unwrap();
    let port = handle.local_addr().unwrap().port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/sim_client.py");
    let mut child = Command::new(py)
        .arg(script)
        .args(["127.0.0.1", &port.to_string()])
        .arg(&file)
        .arg("device")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: the script's own checks take a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("pymodbus client did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    rt.block_on(handle.shutdown());
    assert!(out.status.success(), "pymodbus client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

/// pymodbus's own example configuration, read from the installed package
/// (not copied into this repository), builds and decodes as pymodbus says.
#[test]
fn pymodbus_shipped_setup_json_builds() {
    use coilwork_sim::DecodedValue;
    let Some(py) = python() else {
        assert!(
            std::env::var_os("COILWORK_REQUIRE_CLIENTS").is_none(),
            "COILWORK_PYTHON (a python with pymodbus) is required"
        );
        eprintln!("skipped: set COILWORK_PYTHON to a python with pymodbus 3.16 (bash .ci/test does)");
        return;
    };
    let out = Command::new(py)
        .args([
            "-c",
            "import os, pymodbus.server.simulator as s; print(os.path.join(os.path.dirname(s.__file__), 'setup.json'))",
        ])
        .output()
        .unwrap();
    let path = String::from_utf8(out.stdout).unwrap();
    let text = std::fs::read_to_string(path.trim()).expect("pymodbus ships server/simulator/setup.json");
    let sim = Simulator::from_json(&text, SimulatorOptions::default()).unwrap();
    assert_eq!(sim.device().decoded(4), Some(DecodedValue::Uint32(617001)));
    assert_eq!(sim.device().decoded(6), Some(DecodedValue::Float32(404.17)));
    assert_eq!(sim.device().decoded(8), Some(DecodedValue::Float64(-505.78)));
    assert_eq!(
        sim.device().decoded(16),
        Some(DecodedValue::String("A_B_C_D_E_".into()))
    );
    let sim = Simulator::from_json(&text, SimulatorOptions::default().device("device_try")).unwrap();
    assert_eq!(
        sim.device().decoded(529),
        Some(DecodedValue::String("Brand name, 32 bytes...........X".into()))
    );
    // Its TLS entry is valid; pymodbus ships no certificate files for it, so
    // loading it names the missing file (tests/tls.rs serves it with some).
    let e = Simulator::from_json(&text, SimulatorOptions::default().server("server_try_tls"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("server_list.server_try_tls.certfile = \"certificates/pymodbus_tls.crt\": cannot read"),
        "{e}"
    );
}
