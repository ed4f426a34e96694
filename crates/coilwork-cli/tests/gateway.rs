//! `coilwork gateway` end to end, with devices and clients nobody here
//! wrote: pymodbus's serial server (RTU and ASCII) on a socat pty pair and
//! its TCP server as upstreams; pymodbus's client and mbpoll through the
//! gateway; `coilwork serve` as a pipelining upstream.
//!
//! `.ci/test` installs socat, mbpoll and pymodbus and sets
//! `COILWORK_REQUIRE_CLIENTS=1`; without it a missing tool skips a test.
#![cfg(unix)]

use coilwork_test_support::{PtyPair, pki};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Any one step (start, one client run) is bounded by this.
const STEP: Duration = Duration::from_secs(60);

/// A child process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use coilwork_test_support::clients::required as require_clients;

/// The pymodbus python, `socat` and `mbpoll` if present; else skip (or fail when required).
fn tools(need_socat: bool) -> Option<PathBuf> {
    let py = std::env::var_os("COILWORK_PYTHON")
        .map(PathBuf::from)
        .filter(|p| p.exists());
    let socat = !need_socat || Command::new("socat").arg("-V").stdout(Stdio::null()).status().is_ok();
    match py {
        Some(py) if socat => Some(py),
        _ => {
            assert!(!require_clients(), "pymodbus (COILWORK_PYTHON) and socat are required");
            eprintln!("skipped: needs COILWORK_PYTHON with pymodbus and socat (bash .ci/test sets them up)");
            None
        }
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(name)
}

/// A socat pty pair (socat was checked by [`tools`]).
fn line() -> PtyPair {
    PtyPair::new("gateway").expect("socat is installed")
}

/// Reads `child`'s stdout until a line containing `marker`; returns that line.
fn wait_line(out: &mut BufReader<ChildStdout>, marker: &str) -> String {
    let mut l = String::new();
    loop {
        l.clear();
        let n = out.read_line(&mut l).expect("read stdout");
        assert!(n > 0, "process ended before printing {marker:?}");
        if l.contains(marker) {
            return l.trim().to_owned();
        }
    }
}

/// pymodbus's server: `comm` tcp (`where_` a port) or serial (a pty path).
fn pymodbus_server(py: &Path, comm: &str, where_: &str, framer: &str, delay_ms: u32) -> Guard {
    let mut child = Command::new(py)
        .arg(script("pymodbus_server.py"))
        .args([comm, where_, framer, &delay_ms.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pymodbus server");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    wait_line(&mut out, "ready");
    let guard = Guard(child);
    if comm == "tcp" {
        let addr: SocketAddr = format!("127.0.0.1:{where_}").parse().expect("addr");
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(start.elapsed() < STEP, "pymodbus TCP server not listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        // The serial server opens its port after printing 'ready'.
        std::thread::sleep(Duration::from_millis(700));
    }
    guard
}

/// Starts `coilwork gateway` with `args`; returns it and its client port.
fn gateway(args: &[&str]) -> (Guard, u16) {
    let (g, port, _) = gateway_logged(args, None);
    (g, port)
}

/// [`gateway`] with its stderr (logs at info) in `log`; also returns the
/// metrics address if `--metrics` was given.
fn gateway_logged(args: &[&str], log: Option<&Path>) -> (Guard, u16, Option<SocketAddr>) {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
        None => Stdio::null(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .arg("gateway")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log",
            if log.is_some() { "info" } else { "warning" },
        ])
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start gateway");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let addr_in = |l: &str| l.split_whitespace().find_map(|w| w.parse::<SocketAddr>().ok());
    let metrics = args
        .contains(&"--metrics")
        .then(|| wait_line(&mut out, "metrics on"))
        .and_then(|l| addr_in(&l.replace("http://", "").replace("/metrics", "")));
    let l = wait_line(&mut out, "gateway on Modbus/TCP");
    let port = addr_in(&l).map(|a| a.port()).expect("gateway port");
    (Guard(child), port, metrics)
}

/// One scrape of the gateway's metrics.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("metrics connect");
    s.set_read_timeout(Some(STEP)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The value of metric line `name{upstream="..."}` in a scrape.
fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b'{'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

use coilwork_test_support::free_port;

/// A probe's outcome without its timing: "ok", "exception N" or "error ...".
fn probe(py: &Path, port: u16, unit: &str) -> (String, Duration) {
    let out = client(py, port, &["probe", unit]).1;
    let mut words: Vec<&str> = out.split_whitespace().collect();
    let ms = words.pop().and_then(|w| w.parse::<u64>().ok()).unwrap_or(u64::MAX);
    (words.join(" "), Duration::from_millis(ms))
}

/// Runs the pymodbus client script; returns (success, stdout).
fn client(py: &Path, port: u16, mode: &[&str]) -> (bool, String) {
    let out = Command::new(py)
        .arg(script("gateway_client.py"))
        .arg(port.to_string())
        .args(mode)
        .output()
        .expect("run client");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn serial_round_trips(framer: &str, crowd: bool) {
    let Some(py) = tools(true) else { return };
    let line = line();
    let _server = pymodbus_server(&py, "serial", &line.server_end().to_string_lossy(), framer, 0);
    let upstream = format!("serial:{}", line.client_end().display());
    let (_gw, port) = gateway(&[
        "--upstream",
        &upstream,
        "--baudrate",
        "19200",
        "--parity",
        "none",
        "--framer",
        framer,
    ]);
    let (ok, out) = client(&py, port, &["fcs"]);
    assert!(ok, "every FC to units 1 and 2 over {framer}:\n{out}");
    if crowd {
        let (ok, out) = client(&py, port, &["crowd"]);
        assert!(ok, "22 concurrent clients on one bus:\n{out}");
        assert!(out.contains("22 passed, 0 failed"), "{out}");
    }
}

#[test]
fn serial_rtu_every_fc_to_two_units_and_22_clients() {
    serial_round_trips("rtu", true);
}

#[test]
fn serial_ascii_every_fc_to_two_units() {
    serial_round_trips("ascii", false);
}

#[test]
fn mbpoll_through_gateway_to_serial_rtu() {
    let Some(py) = tools(true) else { return };
    if Command::new("mbpoll")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        assert!(!require_clients(), "mbpoll is required");
        return;
    }
    let line = line();
    let _server = pymodbus_server(&py, "serial", &line.server_end().to_string_lossy(), "rtu", 0);
    let upstream = format!("serial:{}", line.client_end().display());
    let (_gw, port) = gateway(&["--upstream", &upstream, "--parity", "none"]);
    let port = port.to_string();
    let mbpoll = |extra: &[&str]| {
        let out = Command::new("mbpoll")
            .args(["-m", "tcp", "-p", &port, "-0", "-1", "-q"])
            .args(extra)
            .output()
            .expect("mbpoll");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, out) = mbpoll(&["-a", "2", "-r", "4", "127.0.0.1", "321", "654"]);
    assert!(ok, "mbpoll write: {out}");
    let (ok, out) = mbpoll(&["-a", "2", "-r", "4", "-c", "2", "127.0.0.1"]);
    assert!(
        ok && out.contains("321") && out.contains("654"),
        "mbpoll read back: {out}"
    );
}

#[test]
fn tcp_upstream_killed_under_load_then_restarted() {
    let Some(py) = tools(false) else { return };
    let up = free_port().to_string();
    let server = pymodbus_server(&py, "tcp", &up, "socket", 0);
    let upstream = format!("tcp:127.0.0.1:{up}");
    let log = std::env::temp_dir().join(format!("coilwork-gateway-log-{}", std::process::id()));
    let (gw, port, metrics) = gateway_logged(
        &[
            "--upstream",
            &upstream,
            "--response-timeout-ms",
            "500",
            "--max-backoff-ms",
            "200",
            "--metrics",
            "127.0.0.1:0",
        ],
        Some(&log),
    );
    let metrics = metrics.expect("metrics address");
    assert_eq!(probe(&py, port, "1").0, "ok");
    // Load while the upstream dies: every answer is served or 0x0A/0x0B, never a hang.
    let load = {
        let py = py.clone();
        std::thread::spawn(move || (0..20).map(|_| probe(&py, port, "1").0).collect::<Vec<_>>())
    };
    std::thread::sleep(Duration::from_millis(200));
    drop(server);
    let seen = load.join().expect("load thread");
    assert!(
        seen.iter()
            .all(|s| s == "ok" || s == "exception 10" || s == "exception 11"),
        "{seen:?}"
    );
    let down = probe(&py, port, "1").0;
    assert!(
        ["exception 10", "exception 11"].contains(&down.as_str()),
        "while down: {down}"
    );
    let _server = pymodbus_server(&py, "tcp", &up, "socket", 0);
    let start = Instant::now();
    loop {
        let s = probe(&py, port, "1").0;
        if s == "ok" {
            break;
        }
        assert!(start.elapsed() < STEP, "not served again after restart: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = scrape(metrics);
    assert_eq!(metric(&body, "coilwork_gateway_up"), 1, "{body}");
    assert!(metric(&body, "coilwork_gateway_unavailable_total") >= 1, "{body}");
    assert!(metric(&body, "coilwork_gateway_answers_total") >= 2, "{body}");
    assert!(metric(&body, "coilwork_gateway_latency_seconds_count") >= 2, "{body}");
    drop(gw);
    // Down for a second or more with retries every 200 ms: still one line per change.
    let text = std::fs::read_to_string(&log).expect("log");
    let _ = std::fs::remove_file(&log);
    let changes: Vec<&str> = text.lines().filter(|l| l.contains("upstream state changed")).collect();
    assert_eq!(changes.len(), 3, "connecting->up, up->down, down->up:\n{text}");
    assert!(changes[1].contains("down") && changes[2].contains("up"), "{changes:?}");
}

#[test]
fn slow_unit_does_not_hold_another_upstream_and_full_queue_is_busy() {
    let Some(py) = tools(false) else { return };
    let (slow_port, fast_port) = (free_port().to_string(), free_port().to_string());
    let _slow = pymodbus_server(&py, "tcp", &slow_port, "socket", 1500);
    let _fast = pymodbus_server(&py, "tcp", &fast_port, "socket", 0);
    let slow = format!("1=tcp:127.0.0.1:{slow_port}");
    let fast = format!("2=tcp:127.0.0.1:{fast_port}");
    let (_gw, port) = gateway(&[
        "--route",
        &slow,
        "--route",
        &fast,
        "--response-timeout-ms",
        "3000",
        "--queue-depth",
        "2",
    ]);
    // Fill the slow upstream: one in flight, two queued, the rest refused with 06.
    let waiting: Vec<_> = (0..6)
        .map(|_| {
            let py = py.clone();
            std::thread::spawn(move || probe(&py, port, "1").0)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (fast, took) = probe(&py, port, "2");
    assert_eq!(fast, "ok");
    // The slow upstream holds each answer 1.5 s; the other one is not behind it.
    assert!(took < Duration::from_millis(700), "fast upstream held: {took:?}");
    let seen: Vec<String> = waiting.into_iter().map(|t| t.join().expect("join")).collect();
    assert!(
        seen.iter().any(|s| s == "exception 6"),
        "a full queue answers 06: {seen:?}"
    );
    assert!(seen.iter().any(|s| s == "ok"), "the slow unit still answers: {seen:?}");
}

#[test]
fn two_pipelined_requests_in_one_write_answered_with_their_ids() {
    // coilwork serve as the upstream (pymodbus's TCP server answers one at a time).
    let mut serve = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["serve", "--address", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let mut out = BufReader::new(serve.stdout.take().expect("stdout"));
    let l = wait_line(&mut out, "serving");
    let _serve = Guard(serve);
    let up = l
        .split_whitespace()
        .find_map(|w| w.parse::<SocketAddr>().ok())
        .expect("serve address");
    let upstream = format!("tcp:{up}");
    let (_gw, port) = gateway(&["--upstream", &upstream, "--max-in-flight", "8"]);
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(STEP)).expect("timeout");
    // FC6 unit 1 tid 0x0101 and FC3 unit 2 tid 0x0202, in one write.
    let mut both = vec![1, 1, 0, 0, 0, 6, 1, 6, 0, 7, 0x12, 0x34];
    both.extend([2, 2, 0, 0, 0, 6, 2, 3, 0, 7, 0, 1]);
    c.write_all(&both).expect("write");
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut head = [0u8; 7];
        c.read_exact(&mut head).expect("header");
        let mut pdu = vec![0u8; usize::from(u16::from_be_bytes([head[4], head[5]])) - 1];
        c.read_exact(&mut pdu).expect("pdu");
        answers.push((u16::from_be_bytes([head[0], head[1]]), head[6], pdu));
    }
    answers.sort();
    assert_eq!(answers[0], (0x0101, 1, vec![6, 0, 7, 0x12, 0x34]));
    // Unit 2 is the same device in `coilwork serve` (one device, every unit).
    assert_eq!(answers[1], (0x0202, 2, vec![3, 2, 0x12, 0x34]));
}

#[test]
fn garbage_from_a_serial_upstream_never_reaches_a_client() {
    let Some(py) = tools(true) else { return };
    let line = line();
    let mut child = Command::new(&py)
        .arg(script("bad_device.py"))
        .arg(line.server_end())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bad device");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    wait_line(&mut out, "ready");
    let _device = Guard(child);
    let upstream = format!("serial:{}", line.client_end().display());
    let (_gw, port) = gateway(&[
        "--upstream",
        &upstream,
        "--parity",
        "none",
        "--response-timeout-ms",
        "300",
    ]);
    let seen: Vec<String> = (0..5).map(|_| probe(&py, port, "1").0).collect();
    // Bad CRC, wrong unit, truncated, wrong length: 0x0B each; then the good answer.
    assert_eq!(seen[..4], ["exception 11"; 4], "{seen:?}");
    assert_eq!(seen[4], "ok", "{seen:?}");
}

#[test]
fn libmodbus_through_gateway_to_serial_rtu() {
    let Some(py) = tools(true) else { return };
    let dir = std::env::temp_dir().join(format!("coilwork-gateway-libmodbus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let exe = dir.join("libmodbus_client");
    if !Path::new("/usr/include/modbus/modbus.h").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!require_clients(), "libmodbus-dev is required");
        eprintln!("skipped: libmodbus-dev not installed (bash .ci/test installs it)");
        return;
    }
    let built = Command::new("cc")
        .arg(script("libmodbus_client.c"))
        .args(["-I/usr/include/modbus", "-o"])
        .arg(&exe)
        .arg("-lmodbus")
        .output()
        .expect("run cc");
    assert!(built.status.success(), "cc: {}", String::from_utf8_lossy(&built.stderr));
    let line = line();
    let _server = pymodbus_server(&py, "serial", &line.server_end().to_string_lossy(), "rtu", 0);
    let upstream = format!("serial:{}", line.client_end().display());
    let (_gw, port) = gateway(&["--upstream", &upstream, "--parity", "none"]);
    let out = Command::new(&exe)
        .arg(port.to_string())
        .output()
        .expect("run libmodbus client");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "libmodbus through the gateway:\n{text}");
}

/// pymodbus's TLS client: one FC16 write to unit 1; prints "ok" or "exception N".
const TLS_WRITE: &str = r#"
import ssl, sys
from pymodbus.client import ModbusTlsClient
port, ca, cert, key = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
ctx.load_cert_chain(certfile=cert, keyfile=key)
c = ModbusTlsClient("127.0.0.1", port=int(port), sslctx=ctx, timeout=3, retries=0)
c.connect()
rr = c.write_registers(5, [1, 2], device_id=1)
print("ok" if not rr.isError() else f"exception {rr.exception_code}")
"#;

#[test]
fn tls_write_roles_through_the_authorizer() {
    let Some(py) = tools(false) else { return };
    let p = pki::Pki::new();
    let dir = std::env::temp_dir().join(format!("coilwork-gateway-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write pem");
        path.to_string_lossy().into_owned()
    };
    let (ca, cert, key) = (
        write("ca.pem", &p.ca.cert_pem),
        write("server.pem", &p.server.cert_pem),
        write("server.key", &p.server.key_pem),
    );
    let (op_cert, op_key) = (
        write("op.pem", &p.operator.cert_pem),
        write("op.key", &p.operator.key_pem),
    );
    let (vw_cert, vw_key) = (write("vw.pem", &p.viewer.cert_pem), write("vw.key", &p.viewer.key_pem));
    let mut serve = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["serve", "--address", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let mut out = BufReader::new(serve.stdout.take().expect("stdout"));
    let l = wait_line(&mut out, "serving");
    let _serve = Guard(serve);
    let up = l
        .split_whitespace()
        .find_map(|w| w.parse::<SocketAddr>().ok())
        .expect("addr");
    let tls_port = free_port().to_string();
    let tls_addr = format!("127.0.0.1:{tls_port}");
    let upstream = format!("tcp:{up}");
    let (_gw, port) = gateway(&[
        "--upstream",
        &upstream,
        "--listen-tls",
        &tls_addr,
        "--cert",
        &cert,
        "--key",
        &key,
        "--ca",
        &ca,
        "--write-roles",
        "operator",
    ]);
    let run = |c: &str, k: &str| {
        let o = Command::new(&py)
            .args(["-c", TLS_WRITE, &tls_port, &ca, c, k])
            .output()
            .expect("python");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let operator = run(&op_cert, &op_key);
    let viewer = run(&vw_cert, &vw_key);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(operator, "ok");
    assert_eq!(viewer, "exception 1");
    // A plain TCP client has no role: it may read, not write.
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(STEP)).expect("timeout");
    c.write_all(&[0, 1, 0, 0, 0, 6, 1, 6, 0, 5, 0, 9]).expect("write");
    let mut answer = [0u8; 9];
    c.read_exact(&mut answer).expect("answer");
    assert_eq!(answer[7..], [0x86, 0x01]);
}

#[test]
fn pymodbus_udp_client_through_gateway_to_pymodbus_tcp() {
    let Some(py) = tools(false) else { return };
    let up = free_port().to_string();
    let _server = pymodbus_server(&py, "tcp", &up, "socket", 0);
    let udp = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        s.local_addr().expect("addr").port().to_string()
    };
    let upstream = format!("tcp:127.0.0.1:{up}");
    let listen_udp = format!("127.0.0.1:{udp}");
    let (_gw, _) = gateway(&["--upstream", &upstream, "--listen-udp", &listen_udp]);
    let script = r#"
import sys
from pymodbus.client import ModbusUdpClient
c = ModbusUdpClient("127.0.0.1", port=int(sys.argv[1]), timeout=3, retries=0)
c.connect()
w = c.write_registers(7, [70, 71], device_id=2)
r = c.read_holding_registers(7, count=2, device_id=2)
print("ok" if not w.isError() and r.registers == [70, 71] else f"bad {w} {r}")
"#;
    let out = Command::new(&py).args(["-c", script, &udp]).output().expect("python");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One FC3 read of holding register 0 from unit 1 (the local device) with
/// transaction id `tid`; true if the right answer came back.
fn read_ok(c: &mut TcpStream, tid: u8) -> bool {
    if c.write_all(&[0, tid, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1]).is_err() {
        return false;
    }
    let mut answer = [0u8; 11];
    c.read_exact(&mut answer).is_ok() && answer == [0, tid, 0, 0, 0, 5, 1, 3, 2, 0, 0]
}

/// True once the gateway has closed `c` (end of stream or reset).
fn closed(c: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(c.read(&mut b), Ok(0) | Err(_))
}

fn connect(port: u16) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(STEP)).expect("timeout");
    c
}

#[test]
fn max_connections_refuses_the_next_client() {
    let (_gw, port) = gateway(&["--route", "1=local", "--max-connections", "2"]);
    let (mut a, mut b) = (connect(port), connect(port));
    assert!(read_ok(&mut a, 1) && read_ok(&mut b, 2), "two clients are served");
    let mut c = connect(port);
    assert!(
        !read_ok(&mut c, 3),
        "the third client is served past --max-connections 2"
    );
    assert!(closed(&mut c));
    assert!(
        read_ok(&mut a, 4) && read_ok(&mut b, 5),
        "the first two are still served"
    );
    // One leaves: its place is free again.
    drop(a);
    let start = Instant::now();
    while !read_ok(&mut connect(port), 6) {
        assert!(start.elapsed() < STEP, "a freed place is never reused");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn max_connections_evicts_the_oldest_client() {
    let (_gw, port) = gateway(&[
        "--route",
        "1=local",
        "--max-connections",
        "1",
        "--overflow",
        "evict-oldest",
    ]);
    let mut a = connect(port);
    assert!(read_ok(&mut a, 1));
    let mut b = connect(port);
    assert!(read_ok(&mut b, 2), "the new client is served");
    assert!(closed(&mut a), "the oldest client was not evicted");
    assert!(read_ok(&mut b, 3));
}

/// Runtime worker threads of process `pid` (tokio names them
/// `tokio-rt-worker`; its blocking-pool threads have another name).
#[cfg(target_os = "linux")]
fn runtime_workers(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc task list");
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == "tokio-rt-worker")
        .count()
}

#[cfg(target_os = "linux")]
#[test]
fn gateway_runs_on_one_thread_unless_told_otherwise() {
    // A local route only: no upstream, so no blocking-pool thread resolving its address.
    let (gw, port) = gateway(&["--route", "1=local"]);
    assert!(read_ok(&mut connect(port), 1), "served");
    assert_eq!(
        runtime_workers(gw.0.id()),
        0,
        "the gateway's runtime is the main thread"
    );
    let (gw, port) = gateway(&["--route", "1=local", "--threads", "2"]);
    assert!(read_ok(&mut connect(port), 2), "served");
    // The runtime starts its workers as threads of their own: on a busy
    // machine the second may not have named itself yet.
    let t0 = Instant::now();
    while runtime_workers(gw.0.id()) < 2 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(runtime_workers(gw.0.id()), 2, "--threads 2: two workers");
}
