//! `coilwork serve --transport tls --roles FILE` against pymodbus's TLS
//! client (Python's ssl module: OpenSSL), with certificates made in the test
//! (rcgen) carrying the Modbus/TCP Security role extension: a request the
//! policy allows is served, a denied one gets exception 01 (R-31), and a
//! certificate without a role gets the policy's "no role" entry.
//!
//! Needs `COILWORK_PYTHON` (a python with pymodbus 3.16); skipped with a
//! message without it unless `COILWORK_REQUIRE_CLIENTS` is set.

use coilwork_test_support::pki;
mod support;

use support::{TempDir, python_or_skip, serve_tls};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs each operation (one per line: "fc unit address value-or-count") and
/// prints "ok" (reads: "ok v1,v2,...") or "exc N" (the exception code),
/// one line per operation.
const CLIENT: &str = r#"
import ssl, sys
from pymodbus.client import ModbusTlsClient

port, ca, cert, key, ops = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
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

fn run_client(py: &Path, port: u16, ca: &str, cert: &str, key: &str, ops: &str) -> Vec<String> {
    let mut child = Command::new(py)
        .args(["-c", CLIENT, &port.to_string(), ca, cert, key, ops])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the pymodbus TLS client did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pymodbus TLS client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

const POLICY: &str = r#"
# operator: reads holding registers 0-99 on unit 1, may write them with FC6 only
[[role]]
name = "operator"
units = [1]
access = ["read"]
functions = [6]
holding_registers = ["0-99"]

# viewer: reads input registers anywhere on units 1-2, nothing else
[[role]]
name = "viewer"
units = ["1-2"]
access = ["read"]
input_registers = ["0-65535"]

[no_role]
units = [1]
access = ["read"]
input_registers = ["0-9"]
"#;

#[test]
fn pymodbus_tls_roles_allowed_requests_are_served_denied_get_exception_01() {
    let Some(py) = python_or_skip() else { return };
    let p = pki::Pki::new();
    let dir = TempDir::new("e2e");
    let ca = dir.write("ca.pem", &p.ca.cert_pem);
    let cert = dir.write("server.pem", &p.server.cert_pem);
    let key = dir.write("server.key", &p.server.key_pem);
    let policy = dir.write("roles.toml", POLICY);
    let server = serve_tls(&[
        "--units", "1,2", "--cert", &cert, "--key", &key, "--ca", &ca, "--roles", &policy,
    ]);
    let client = |who: &pki::Identity, name: &str, ops: &str| {
        let c = dir.write(&format!("{name}.pem"), &who.cert_pem);
        let k = dir.write(&format!("{name}.key"), &who.key_pem);
        run_client(&py, server.port, &ca, &c, &k, ops)
    };

    // operator: FC6 in range served; FC3 in range served; FC3 past 99, FC16
    // (a write without the class), unit 2, FC4 (table not listed) denied.
    let out = client(
        &p.operator,
        "operator",
        "6 1 40 1234;3 1 40 1;3 1 99 2;16 1 40 7;3 2 0 1;4 1 0 1;3 1 41 1",
    );
    assert_eq!(
        out,
        ["ok", "ok 1234", "exc 1", "exc 1", "exc 1", "exc 1", "ok 0"],
        "operator"
    );
    // The denied FC16 wrote nothing: registers 40-41 still hold 1234, 0.
    let out = client(&p.operator, "operator", "3 1 40 2");
    assert_eq!(out, ["ok 1234,0"]);
    // viewer: FC4 on both units served; FC3 and FC6 denied.
    let out = client(&p.viewer, "viewer", "4 2 500 3;4 1 0 1;3 1 0 1;6 1 0 1");
    assert_eq!(out, ["ok 0,0,0", "ok 0", "exc 1", "exc 1"], "viewer");
    // No role extension: the [no_role] entry (input registers 0-9 of unit 1).
    let out = client(&p.no_role, "nobody", "4 1 0 10;4 1 0 11;1 1 0 1;4 2 0 1");
    assert_eq!(out, ["ok 0,0,0,0,0,0,0,0,0,0", "exc 1", "exc 1", "exc 1"], "no role");
}
