//! `coilwork gateway --listen-tls ... --roles FILE` against pymodbus's TLS
//! client, with certificates made in the test carrying the Modbus/TCP
//! Security role extension: the policy is checked on the request as the
//! client sent it (its unit id before the gateway renumbers it), a denied
//! request gets exception 01 and never reaches the upstream.
//!
//! Needs `COILWORK_PYTHON` (a python with pymodbus 3.16); skipped with a
//! message without it unless `COILWORK_REQUIRE_CLIENTS` is set.
#![cfg(unix)]

mod support;

use coilwork_test_support::pki;

use std::net::SocketAddr;
use std::process::Command;
use support::{TempDir, python_or_skip, tls_ops};

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

/// Starts `coilwork` with `args`; returns it and the address on the first
/// stdout line containing `marker`.
fn start(args: &[&str], marker: &str) -> (support::Server, SocketAddr) {
    let (child, printed) = support::start(args, marker);
    let line = printed.lines().last().unwrap_or_default();
    let addr = line.split_whitespace().find_map(|w| w.parse().ok());
    (child, addr.expect("address"))
}

#[test]
fn gateway_roles_checked_on_the_clients_unit_denied_get_exception_01() {
    let Some(py) = python_or_skip() else { return };
    let p = pki::Pki::new();
    let dir = TempDir::new("gateway-roles");
    let (ca, cert, key) = dir.server_pki(&p);
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
        let (c, k) = dir.identity(who, name);
        tls_ops(&py, tls.port(), &ca, (&c, &k), ops)
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
