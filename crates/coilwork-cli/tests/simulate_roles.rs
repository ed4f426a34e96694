//! `coilwork simulate --roles FILE` on a `comm: "tls"` server entry with a
//! `cafile` (Modbus/TCP Security), against pymodbus's TLS client with
//! certificates made in the test: what the policy allows is served, the rest
//! gets exception 01 and changes nothing; a policy on a plain TCP entry is
//! refused at start.
//!
//! Needs `COILWORK_PYTHON` (a python with pymodbus 3.16); skipped with a
//! message without it unless `COILWORK_REQUIRE_CLIENTS` is set.

mod support;

use coilwork_test_support::pki;

use std::process::Command;
use support::{TempDir, python_or_skip, start, tls_ops};

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

/// Starts the simulator; returns it and its Modbus port (from its first line).
fn simulate(args: &[&str]) -> (support::Server, u16) {
    let args = [&["simulate"], args, &["--http-port", "0"]].concat();
    let (child, line) = start(&args, "Modbus/TCP Security on 127.0.0.1:");
    let port = line.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
    (child, port)
}

#[test]
fn simulate_roles_serve_what_the_policy_allows_and_deny_the_rest_with_exception_01() {
    let Some(py) = python_or_skip() else { return };
    let p = pki::Pki::new();
    let dir = TempDir::new("simulate-roles");
    let (ca, _, _) = dir.server_pki(&p);
    let json = dir.write("setup.json", &config("tls"));
    let policy = dir.write("roles.toml", POLICY);
    let (_sim, port) = simulate(&["--json-file", &json, "--roles", &policy]);
    let client = |who: &pki::Identity, name: &str, ops: &str| {
        let (c, k) = dir.identity(who, name);
        tls_ops(&py, port, &ca, (&c, &k), ops)
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
