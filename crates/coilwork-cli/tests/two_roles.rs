//! A client certificate with the Modbus/TCP Security role extension
//! (1.3.6.1.4.1.50316.802.1) twice, against `coilwork serve --transport tls`
//! (with and without `--roles`) and `coilwork gateway --listen-tls`, driven
//! by pymodbus's TLS client. The TLS handshake completes (the role is read
//! from the certificate after it), then the server closes the connection
//! without reading a request: no request is ever served, nothing is written,
//! and the close is counted as a TLS handshake failure. A role extension
//! that is not one UTF8String is treated the same.

use coilwork_test_support::pki;
mod support;

use support::{TempDir, python_or_skip, run_python, start};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Connects with the certificate given, then tries a read and a write of
/// holding register 0 on unit 1; prints one line each: "ok" (served),
/// "exc N" (exception N) or "closed" (no answer: the connection is gone).
const CLIENT: &str = r#"
import ssl, sys
from pymodbus.client import ModbusTlsClient

port, ca, cert, key = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
ctx.load_cert_chain(certfile=cert, keyfile=key)
client = ModbusTlsClient("127.0.0.1", port=int(port), sslctx=ctx, timeout=2, retries=0)
connected = client.connect()
for op in ("read", "write"):
    if not connected:
        print("closed", flush=True)
        continue
    try:
        if op == "read":
            r = client.read_holding_registers(0, count=1, device_id=1)
        else:
            r = client.write_register(0, 7, device_id=1)
    except Exception:
        print("closed", flush=True)
        continue
    code = getattr(r, "exception_code", None) if r.isError() else None
    print("ok" if not r.isError() else (f"exc {code}" if code else "closed"), flush=True)
client.close()
"#;

use coilwork_test_support::free_port;

/// The pymodbus client's lines for `who`.
fn client(py: &Path, port: u16, dir: &TempDir, ca: &str, who: &pki::Identity, name: &str) -> Vec<String> {
    let (cert, key) = dir.identity(who, name);
    run_python(py, &["-c", CLIENT, &port.to_string(), ca, &cert, &key])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Scrapes `addr` until `series` reads `min` or more (5 s at most); the text.
fn scraped(addr: &str, series: &str, min: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse::<u64>().ok());
        if value.is_some_and(|v| v >= min) {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} is not {min} or more:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every request of the two-role client went unanswered (never "ok", never
/// an answer of any kind).
fn assert_refused(out: &[String], what: &str) {
    assert_eq!(
        out,
        ["closed", "closed"],
        "{what}: a certificate with two roles was answered"
    );
}

const POLICY: &str = r#"
[[role]]
name = "operator"
units = [1]
access = ["read", "write"]
holding_registers = ["0-99"]
"#;

#[test]
fn serve_never_answers_a_certificate_with_two_roles() {
    let Some(py) = python_or_skip() else { return };
    let p = pki::Pki::new();
    let dir = TempDir::new("two-roles-serve");
    let (ca, cert, key) = dir.server_pki(&p);
    let policy = dir.write("roles.toml", POLICY);
    for with_policy in [false, true] {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "serve",
            "--transport",
            "tls",
            "--address",
            &address,
            "--cert",
            &cert,
            "--key",
            &key,
            "--ca",
            &ca,
            "--metrics",
            &metrics,
        ];
        if with_policy {
            args.extend(["--roles", &policy]);
        }
        let (_server, _) = start(&args, "serving");
        let what = if with_policy { "serve --roles" } else { "serve" };
        assert_refused(&client(&py, port, &dir, &ca, &p.two_roles, "two"), what);
        // A role that is not a UTF8String: the same.
        assert_refused(&client(&py, port, &dir, &ca, &p.bad_role, "bad"), what);
        // One refusal per connection (pymodbus may connect again for its second request).
        let text = scraped(&metrics, "coilwork_tls_handshake_failures_total{server=\"tls\"}", 2);
        assert!(
            !text.lines().any(|l| l.starts_with("coilwork_requests_total{")),
            "{what}: a request was read:\n{text}"
        );
        // The write never happened: an operator reads 0 (and may write).
        let op = client(&py, port, &dir, &ca, &p.operator, "operator");
        assert_eq!(op, ["ok", "ok"], "{what}: operator");
    }
}

#[test]
fn gateway_never_answers_a_certificate_with_two_roles() {
    let Some(py) = python_or_skip() else { return };
    let p = pki::Pki::new();
    let dir = TempDir::new("two-roles-gateway");
    let (ca, cert, key) = dir.server_pki(&p);
    let tls_port = free_port();
    let tls = format!("127.0.0.1:{tls_port}");
    let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let (_gw, _) = start(
        &[
            "gateway",
            "--listen",
            &tcp.to_string(),
            "--route",
            "1=local",
            "--listen-tls",
            &tls,
            "--cert",
            &cert,
            "--key",
            &key,
            "--ca",
            &ca,
            "--metrics",
            &metrics,
            "--log",
            "error",
        ],
        "gateway on Modbus/TCP",
    );
    assert_refused(&client(&py, tls_port, &dir, &ca, &p.two_roles, "two"), "gateway");
    assert_refused(&client(&py, tls_port, &dir, &ca, &p.bad_role, "bad"), "gateway");
    let text = scraped(&metrics, "coilwork_tls_handshake_failures_total{server=\"gateway\"}", 2);
    assert!(
        !text.lines().any(|l| l.starts_with("coilwork_requests_total{")),
        "gateway: a request was read:\n{text}"
    );
    // The write never happened: register 0 of the local device still reads 0.
    let mut s = TcpStream::connect(tcp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1]).unwrap();
    let mut answer = [0u8; 11];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 0]);
    // A certificate with one role is served.
    assert_eq!(client(&py, tls_port, &dir, &ca, &p.operator, "operator"), ["ok", "ok"]);
}
