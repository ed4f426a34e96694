//! `coilwork gateway --listen-tls ... --roles FILE` against pymodbus's TLS
//! client, with certificates made in the test carrying the Modbus/TCP
//! Security role extension: the policy is checked on the request as the
//! client sent it (its unit id before the gateway renumbers it), a denied
//! request gets exception 01 and never reaches the upstream.
//!
//! Needs `COILWORK_PYTHON` (a python with pymodbus 3.16); skipped with a
//! message without it unless `COILWORK_REQUIRE_CLIENTS` is set.
#![cfg(unix)]

#[allow(dead_code)] // the serve_tls helper is for the serve tests
mod support;

use coilwork_test_support::pki;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use support::{TempDir, python_or_skip};

/// Runs each operation ("fc unit address value-or-count", `;`-separated)
/// and prints "ok", "ok v1,v2,..." (reads) or "exc N", one line each.
const CLIENT: &str = r#"
import ssl, sys
from pymodbus.client import ModbusTlsClient

port, ca, cert, key, ops = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
ctx.load_cert_chain(certfile=cert, keyfile=key)
client = ModbusTlsClient("127.0.0.1", port=int(port), sslctx=ctx, timeout=3, retries=0)
assert client.connect(), "no TLS connection"
for op in ops.split(";"):
    fc, unit, addr, arg = (int(x) for x in op.split())
    if fc == 3:
        r = client.read_holding_registers(addr, count=arg, device_id=unit)
    elif fc == 6:
        r = client.write_register(addr, arg, device_id=unit)
    else:
        raise SystemExit(f"unknown op {op}")
    if r.isError():
        print(f"exc {r.exception_code}", flush=True)
    elif fc == 3:
        print("ok " + ",".join(str(v) for v in r.registers), flush=True)
    else:
        print("ok", flush=True)
client.close()
"#;

/// The operator may read and write (FC6) holding registers 0-99 of units
/// 11 and 12 as the client numbers them; the viewer may only read them.
const POLICY: &str = r#"
[[role]]
name = "operator"
units = ["11-12"]
access = ["read"]
functions = [6]
holding_registers = ["0-99"]

[[role]]
name = "viewer"
units = ["11-12"]
access = ["read"]
holding_registers = ["0-99"]
"#;

/// A child process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `coilwork` with `args`; returns it and the address on the first
/// stdout line containing `marker`.
fn start(args: &[&str], marker: &str) -> (Guard, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start coilwork");
    let mut out: BufReader<ChildStdout> = BufReader::new(child.stdout.take().expect("stdout"));
    let guard = Guard(child);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).expect("stdout") > 0, "no {marker:?} line");
        if line.contains(marker) {
            let addr = line.split_whitespace().find_map(|w| w.parse().ok());
            return (guard, addr.expect("address"));
        }
    }
}

fn run_client(py: &Path, port: u16, ca: &str, cert: &str, key: &str, ops: &str) -> Vec<String> {
    let out = Command::new(py)
        .args(["-c", CLIENT, &port.to_string(), ca, cert, key, ops])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pymodbus TLS client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

#[test]
fn gateway_roles_checked_on_the_clients_unit_denied_get_exception_01() {
    let Some(py) = python_or_skip() else { return };
    let p = pki::Pki::new();
    let dir = TempDir::new("gateway-roles");
    let ca = dir.write("ca.pem", &p.ca.cert_pem);
    let cert = dir.write("server.pem", &p.server.cert_pem);
    let key = dir.write("server.key", &p.server.key_pem);
    let policy = dir.write("roles.toml", POLICY);
    let (_up, up) = start(&["serve", "--address", "127.0.0.1:0", "--units", "1,2"], "serving");
    let route = format!("11-12@1=tcp:{up}");
    let (_gw, tls) = start(
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--route",
            &route,
            "--listen-tls",
            "127.0.0.1:0",
            "--cert",
            &cert,
            "--key",
            &key,
            "--ca",
            &ca,
            "--roles",
            &policy,
        ],
        "gateway on Modbus/TLS",
    );
    let client = |who: &pki::Identity, name: &str, ops: &str| {
        let c = dir.write(&format!("{name}.pem"), &who.cert_pem);
        let k = dir.write(&format!("{name}.key"), &who.key_pem);
        run_client(&py, tls.port(), &ca, &c, &k, ops)
    };
    // Operator: FC6 and FC3 on client unit 11 (upstream unit 1) served; past
    // register 99 denied.
    let out = client(&p.operator, "operator", "6 11 40 1234;3 11 40 1;3 11 99 2;6 12 7 5");
    assert_eq!(out, ["ok", "ok 1234", "exc 1", "ok"], "operator");
    // Viewer: reads served; its write denied, and it never reached the device.
    let out = client(&p.viewer, "viewer", "3 12 7 1;6 11 40 9;3 11 40 1");
    assert_eq!(out, ["ok 5", "exc 1", "ok 1234"], "viewer");
    // No role extension and no [no_role] entry: everything denied.
    let out = client(&p.no_role, "nobody", "3 11 40 1");
    assert_eq!(out, ["exc 1"], "no role");
}

#[test]
fn a_bad_policy_file_stops_the_gateway_at_start_with_file_and_line() {
    let dir = TempDir::new("gateway-roles-bad");
    let policy = dir.write("roles.toml", "[[role]]\nname = \"x\"\ncolour = \"red\"\n");
    let pem = dir.write("none.pem", "");
    let out = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--route",
            "1=local",
            "--listen-tls",
            "127.0.0.1:0",
        ])
        .args(["--cert", &pem, "--key", &pem, "--ca", &pem, "--roles", &policy])
        .output()
        .expect("run coilwork");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("roles.toml") && err.contains("colour"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "announced a listener");
}
