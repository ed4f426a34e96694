//! pymodbus's TLS client (`ModbusTlsClient`, Python's ssl module: OpenSSL)
//! against the real `coilwork serve --transport tls` over loopback, with
//! certificates made in the test (rcgen).
//!
//! Like interop.rs: needs `COILWORK_PYTHON` (a python with pymodbus 3.16);
//! skipped with a message without it unless `COILWORK_REQUIRE_CLIENTS` is set.

use coilwork_test_support::pki;
mod support;

use support::{TempDir, python_or_skip, run_python, serve_tls};

use std::path::Path;

/// The client side: Python's ssl context trusting our CA, with an optional
/// client certificate; FC16 then FC3, bounded by pymodbus's timeout.
const CLIENT: &str = r#"
import ssl, sys
from pymodbus.client import ModbusTlsClient

port, ca, cert, key, expect = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
# pymodbus's sync client wraps the socket without a server_hostname; the
# chain is still verified (CERT_REQUIRED).
ctx.check_hostname = False
if cert:
    ctx.load_cert_chain(certfile=cert, keyfile=key)
client = ModbusTlsClient("127.0.0.1", port=int(port), sslctx=ctx, timeout=3, retries=0)
try:
    connected = client.connect()
    values = [11, 22, 33, 0xFFFF]
    rw = client.write_registers(40, values, device_id=1)
    assert not rw.isError(), f"write: {rw}"
    rr = client.read_holding_registers(40, count=4, device_id=1)
    assert not rr.isError(), f"read: {rr}"
    assert rr.registers == values, rr.registers
    outcome = "served"
except Exception as e:  # noqa: BLE001 - a refused client fails somewhere in here
    outcome = f"refused ({type(e).__name__}: {e})"
finally:
    client.close()
print(outcome)
if not outcome.startswith(expect):
    sys.exit(1)
"#;

fn run_client(py: &Path, port: u16, ca: &str, cert: &str, key: &str, expect: &str) -> String {
    run_python(py, &["-c", CLIENT, &port.to_string(), ca, cert, key, expect])
}

#[test]
fn pymodbus_tls_client_with_certificate_against_mbaps() {
    let Some(py) = python_or_skip() else { return };
    let p = pki::Pki::new();
    let dir = TempDir::new("mbaps");
    let (ca, cert, key) = dir.server_pki(&p);
    let (client_cert, client_key) = dir.identity(&p.operator, "client");
    let server = serve_tls(&["--cert", &cert, "--key", &key, "--ca", &ca]);

    let out = run_client(&py, server.port, &ca, &client_cert, &client_key, "served");
    assert!(out.contains("served"), "{out}");
    // Without a client certificate pymodbus gets nothing served.
    let out = run_client(&py, server.port, &ca, "", "", "refused");
    assert!(out.contains("refused"), "{out}");
}

#[test]
fn pymodbus_tls_client_without_certificate_in_server_only_mode() {
    let Some(py) = python_or_skip() else { return };
    let p = pki::Pki::new();
    let dir = TempDir::new("server-only");
    let (ca, cert, key) = dir.server_pki(&p);
    let server = serve_tls(&["--cert", &cert, "--key", &key, "--tls-server-only"]);
    let out = run_client(&py, server.port, &ca, "", "", "served");
    assert!(out.contains("served"), "{out}");
}
