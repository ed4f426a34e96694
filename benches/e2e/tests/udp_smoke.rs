//! Smoke test of the UDP bench tools: the bench server serves Modbus/UDP
//! (coilwork's blocking adapter, and the UDP ceiling), and the load
//! generator validates every answer for half a second without an error.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Kills the server when the test ends, even on a failed assertion.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(adapter: &str) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork-bench-server"))
        .args(["--adapter", adapter, "--udp", "--address", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start coilwork-bench-server");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the server's first line");
    let addr = line
        .trim()
        .rsplit(" on ")
        .next()
        .expect("address in the server's first line")
        .to_owned();
    assert!(
        line.starts_with("coilwork-bench-server: serving"),
        "unexpected line {line:?}"
    );
    (server, addr)
}

fn load(addr: &str, pid: u32, extra: &[&str]) -> serde_json::Value {
    let pid = pid.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_coilwork-udp-load"))
        .args([
            "--addr",
            addr,
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--server-pid",
            &pid,
            "--json",
        ])
        .args(extra)
        .output()
        .expect("run coilwork-udp-load");
    assert!(
        out.status.success(),
        "udp-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn check(adapter: &str) {
    let (server, addr) = start(adapter);
    for extra in [
        &["--conns", "4", "--op", "read-holding", "--count", "10"][..],
        &[
            "--conns",
            "2",
            "--op",
            "write-multiple",
            "--count",
            "10",
            "--pipeline",
            "2",
        ][..],
    ] {
        let r = load(&addr, server.0.id(), extra);
        let ok = r["ok"].as_u64().expect("ok");
        assert!(ok > 100, "{adapter} {extra:?}: only {ok} answers validated: {r}");
        assert_eq!(r["errors"], 0, "{adapter} {extra:?}: {r}");
        assert_eq!(r["errors_by_kind"]["value"], 0, "{r}");
        assert!(
            r["server_cpu_us_per_req"].as_f64().is_some(),
            "server CPU measured: {r}"
        );
        assert!(r["lat_us"]["p50"].as_f64().expect("p50") > 0.0, "{r}");
    }
}

#[test]
fn blocking_udp_server_answers_validated_reads_and_writes() {
    check("blocking");
}

#[test]
fn udp_ceiling_answers_validated_reads_and_writes() {
    check("udp-ceiling");
}
