//! `coilwork simulate --roles FILE` on a `comm: "tls"` server entry with a
//! `cafile` (Modbus/TCP Security), against pymodbus's TLS client with
//! certificates made in the test: what the policy allows is served, the rest
//! gets exception 01 and changes nothing; a policy on a plain TCP entry is
//! refused at start.
//!
//! Needs `COILWORK_PYTHON` (a python with pymodbus 3.16); skipped with a
//! message without it unless `COILWORK_REQUIRE_CLIENTS` is set.

#[allow(dead_code)] // the `serve` child is for the serve tests
mod support;

use coilwork_test_support::pki;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{TempDir, python_or_skip};

/// One line per operation ("fc unit address value-or-count"): "ok", "ok v1,v2" or "exc N".
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
    elif fc == 4:
        r = client.read_input_registers(addr, count=arg, device_id=unit)
    elif fc == 6:
        r = client.write_register(addr, arg, device_id=unit)
    elif fc == 16:
        r = client.write_registers(addr, [arg, arg], device_id=unit)
    else:
        raise SystemExit(f"unknown op {op}")
    if r.isError():
        print(f"exc {r.exception_code}", flush=True)
    elif fc in (3, 4):
        print("ok " + ",".join(str(v) for v in r.registers), flush=True)
    else:
        print("ok", flush=True)
client.close()
"#;

const POLICY: &str = r#"
[[role]]
name = "operator"
units = [1]
access = ["read"]
functions = [6]
holding_registers = ["0-99"]

[[role]]
name = "viewer"
units = [1]
access = ["read"]
input_registers = ["0-199"]
"#;

/// A TLS server entry (certificate files relative to the JSON) on a free port,
/// registers 0-199 (holding and input share them) writable, holding 40 = 7.
fn config(comm: &str) -> String {
    let tls = if comm == "tls" {
        r#", "framer": "tls", "certfile": "server.pem", "keyfile": "server.key", "cafile": "ca.pem""#
    } else {
        r#", "framer": "socket""#
    };
    format!(
        r#"{{"server_list": {{"server": {{"comm": "{comm}", "host": "127.0.0.1", "port": 0{tls}}}}},
  "device_list": {{"device": {{
    "setup": {{"co size": 10, "di size": 10, "hr size": 200, "ir size": 200,
      "shared blocks": true, "type exception": false,
      "defaults": {{"value": {{"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "string": " "}},
        "action": {{"bits": null, "uint16": null, "uint32": null, "float32": null, "string": null}}}}}},
    "invalid": [], "write": [[0, 199]], "repeat": [],
    "uint16": [{{"addr": [0, 39], "value": 0}}, {{"addr": 40, "value": 7}}, {{"addr": [41, 199], "value": 0}}]}}}}}}"#
    )
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the simulator; returns it and its Modbus port (from its first line).
fn simulate(args: &[&str]) -> (Running, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .arg("simulate")
        .args(args)
        .args(["--http-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start coilwork");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let child = Running(child);
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("no serving line");
    assert!(line.contains("Modbus/TCP Security on 127.0.0.1:"), "{line}");
    let port = line.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
    (child, port)
}

fn run_client(py: &Path, port: u16, files: [&str; 3], ops: &str) -> Vec<String> {
    let [ca, cert, key] = files;
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

#[test]
fn simulate_roles_serve_what_the_policy_allows_and_deny_the_rest_with_exception_01() {
    let Some(py) = python_or_skip() else { return };
    let p = pki::Pki::new();
    let dir = TempDir::new("simulate-roles");
    let ca = dir.write("ca.pem", &p.ca.cert_pem);
    dir.write("server.pem", &p.server.cert_pem);
    dir.write("server.key", &p.server.key_pem);
    let json = dir.write("setup.json", &config("tls"));
    let policy = dir.write("roles.toml", POLICY);
    let (_sim, port) = simulate(&["--json-file", &json, "--roles", &policy]);
    let client = |who: &pki::Identity, name: &str, ops: &str| {
        let c = dir.write(&format!("{name}.pem"), &who.cert_pem);
        let k = dir.write(&format!("{name}.key"), &who.key_pem);
        run_client(&py, port, [&ca, &c, &k], ops)
    };
    // operator: reads and FC6 in 0-99 served; past 99, FC16, unit 2 and FC4 denied.
    let out = client(
        &p.operator,
        "operator",
        "3 1 40 1;6 1 41 1234;3 1 40 2;3 1 99 2;16 1 40 9;3 2 40 1;4 1 0 1",
    );
    assert_eq!(
        out,
        ["ok 7", "ok", "ok 7,1234", "exc 1", "exc 1", "exc 1", "exc 1"],
        "operator"
    );
    // The denied FC16 wrote nothing.
    assert_eq!(client(&p.operator, "operator", "3 1 40 2"), ["ok 7,1234"]);
    // viewer: input registers only; a write and a holding register read are denied.
    let out = client(&p.viewer, "viewer", "4 1 150 2;3 1 40 1;6 1 40 1");
    assert_eq!(out, ["ok 0,0", "exc 1", "exc 1"], "viewer");
    // No role extension and no [no_role] entry: nothing.
    assert_eq!(client(&p.no_role, "nobody", "4 1 0 1"), ["exc 1"], "no role");
}

#[test]
fn simulate_refuses_roles_on_a_server_without_client_certificates() {
    let dir = TempDir::new("simulate-roles-tcp");
    let json = dir.write("setup.json", &config("tcp"));
    let policy = dir.write("roles.toml", POLICY);
    let out = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["simulate", "--json-file", &json, "--roles", &policy, "--http-port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--roles: server_list.server is not a TLS server"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "it started serving");
    // A bad policy file is refused with its file and line.
    let bad = dir.write("bad.toml", "[[role]]\nname = \"x\"\nbogus = 1\n");
    let out = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["simulate", "--json-file", &json, "--roles", &bad, "--http-port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3: unknown field `bogus`"), "{err}");
}
