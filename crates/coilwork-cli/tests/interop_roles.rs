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

use support::{TempDir, python_or_skip, serve_tls, tls_ops};

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
    let (ca, cert, key) = dir.server_pki(&p);
    let policy = dir.write("roles.toml", POLICY);
    let server = serve_tls(&[
        "--units", "1,2", "--cert", &cert, "--key", &key, "--ca", &ca, "--roles", &policy,
    ]);
    let client = |who: &pki::Identity, name: &str, ops: &str| {
        let (c, k) = dir.identity(who, name);
        tls_ops(&py, server.port, &ca, (&c, &k), ops)
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
