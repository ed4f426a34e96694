//! `coilwork serve --metrics ADDR` over real loopback sockets: requests (one
//! of them an exception), a bad frame, a refused connection and a peer close
//! are driven with raw sockets (and pymodbus's client when `COILWORK_PYTHON`
//! is set), `/metrics` is scraped over HTTP and the numbers are asserted.

mod support;

use coilwork_test_support::{PtyPair, pki};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running `coilwork`, killed on drop, with its Modbus and metrics addresses.
struct Serve {
    _child: support::Server,
    modbus: String,
    metrics: String,
}

use coilwork_test_support::free_port;

/// Starts `coilwork` with `args` (and `--metrics METRICS` unless `metrics`
/// is empty), waits for a line containing `ready`, and checks that it
/// announced the metrics address; returns it (serving Modbus on `modbus`,
/// if known) with what it printed.
fn start(args: &[&str], modbus: String, metrics: &str, ready: &str) -> (Serve, String) {
    let with_metrics = [args, &["--metrics", metrics]].concat();
    let (child, lines) = support::start(if metrics.is_empty() { args } else { &with_metrics }, ready);
    if !metrics.is_empty() {
        assert!(
            lines.contains(&format!("metrics on http://{metrics}/metrics")),
            "{lines}"
        );
    }
    let server = Serve {
        _child: child,
        modbus,
        metrics: metrics.to_owned(),
    };
    (server, lines)
}

/// A metrics address on a free port.
fn metrics_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Starts `coilwork serve --metrics` with `args`; waits for the serving line.
fn serve(args: &[&str]) -> Serve {
    let modbus = format!("127.0.0.1:{}", free_port());
    let args = [&["serve", "--address", &modbus], args].concat();
    start(&args, modbus.clone(), &metrics_addr(), "serving").0
}

/// A client of `addr` with a 5 s read timeout.
fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Runs `coilwork` with `args` and `--metrics` on an address that is
/// taken; asserts it fails naming that address (as `error` says) and never
/// prints `announce`. Returns the listener that holds the metrics address.
fn fails_with_metrics_in_use(args: &[&str], error: &str, announce: &str) -> TcpListener {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(args)
        .args(["--metrics", &metrics])
        .output()
        .expect("run coilwork");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let error = error.replace("{metrics}", &metrics);
    assert!(err.contains(&error), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(announce));
    taken
}

/// One HTTP request; the whole answer.
fn http(addr: &str, request: &str) -> String {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

fn scrape(addr: &str) -> String {
    let answer = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("content-type: text/plain; version=0.0.4"), "{answer}");
    answer.split("\r\n\r\n").nth(1).unwrap().to_owned()
}

/// The value of the sample `series` (name and labels as written).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until every `(series, value)` holds (sessions fold in at a low
/// rate and at close), or fails with the last text after 5 s.
fn expect(addr: &str, wanted: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(addr);
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(series, v)| value(&text, series) != Some(*v))
            .map(|(series, v)| format!("{series} = {v} (is {:?})", value(&text, series)))
            .collect();
        if missing.is_empty() {
            return text;
        }
        assert!(Instant::now() < deadline, "not as expected: {missing:#?}\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An MBAP request for unit 1.
fn adu(tid: u16, pdu: &[u8]) -> Vec<u8> {
    let mut adu = tid.to_be_bytes().to_vec();
    adu.extend([0, 0]);
    adu.extend(u16::try_from(pdu.len() + 1).unwrap().to_be_bytes());
    adu.push(1);
    adu.extend(pdu);
    adu
}

/// Sends one request and reads its whole answer.
fn ask(s: &mut TcpStream, tid: u16, pdu: &[u8]) -> Vec<u8> {
    s.write_all(&adu(tid, pdu)).unwrap();
    let mut head = [0u8; 7];
    s.read_exact(&mut head).unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[4], head[5]])) - 1];
    s.read_exact(&mut body).unwrap();
    body
}

/// Reads until the server closes the stream.
fn wait_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

const READ_ONE: [u8; 5] = [0x03, 0x00, 0x00, 0x00, 0x01];

#[test]
fn requests_exceptions_bad_frames_refusals_and_closes_are_counted() {
    let server = serve(&["--max-connections", "1"]);
    let mut s1 = connect(&server.modbus);
    assert_eq!(ask(&mut s1, 1, &READ_ONE), [0x03, 2, 0, 0]);
    // Address 20000 is past the 10000 registers: exception 02.
    assert_eq!(ask(&mut s1, 2, &[0x03, 0x4E, 0x20, 0x00, 0x01]), [0x83, 0x02]);
    // Function 0x55 is not served: exception 01.
    assert_eq!(ask(&mut s1, 3, &[0x55]), [0xD5, 0x01]);
    // The one slot is taken: a second client is refused (closed at once).
    let mut s2 = TcpStream::connect(&server.modbus).unwrap();
    wait_closed(&mut s2);
    // A protocol id of 9 is not Modbus: the connection is closed.
    s1.write_all(&[0, 4, 0, 9, 0, 6, 1, 3, 0, 0, 0, 1]).unwrap();
    wait_closed(&mut s1);
    // The slot is free again once the server has released it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s3 = loop {
        let mut s = connect(&server.modbus);
        if s.write_all(&adu(5, &READ_ONE)).is_ok() {
            let mut answer = [0u8; 11];
            if s.read_exact(&mut answer).is_ok() {
                break s;
            }
        }
        assert!(Instant::now() < deadline, "the slot was never released");
        std::thread::sleep(Duration::from_millis(50));
    };
    s3.shutdown(std::net::Shutdown::Write).unwrap();
    wait_closed(&mut s3);

    let refused = value(
        &scrape(&server.metrics),
        "coilwork_connections_refused_total{server=\"tcp\"}",
    )
    .unwrap();
    assert!(refused >= 1.0);
    let text = expect(
        &server.metrics,
        &[
            ("coilwork_requests_total{server=\"tcp\",unit=\"1\",function=\"3\"}", 3.0),
            (
                "coilwork_exceptions_total{server=\"tcp\",unit=\"1\",function=\"3\"}",
                1.0,
            ),
            (
                "coilwork_requests_total{server=\"tcp\",unit=\"1\",function=\"85\"}",
                1.0,
            ),
            (
                "coilwork_exceptions_total{server=\"tcp\",unit=\"1\",function=\"85\"}",
                1.0,
            ),
            ("coilwork_frames_dropped_total{server=\"tcp\",reason=\"mbap\"}", 1.0),
            ("coilwork_frames_dropped_total{server=\"tcp\",reason=\"checksum\"}", 0.0),
            ("coilwork_connections_accepted_total{server=\"tcp\"}", 2.0),
            ("coilwork_connections_open{server=\"tcp\"}", 0.0),
            (
                "coilwork_connections_closed_total{server=\"tcp\",reason=\"bad_frame\"}",
                1.0,
            ),
            (
                "coilwork_connections_closed_total{server=\"tcp\",reason=\"peer_closed\"}",
                1.0,
            ),
            ("coilwork_request_duration_seconds_count{server=\"tcp\"}", 4.0),
            (
                "coilwork_request_duration_seconds_bucket{server=\"tcp\",le=\"+Inf\"}",
                4.0,
            ),
            // s1: 3 requests of 12, 12 and 8 bytes and the bad frame (12); s3: 12.
            ("coilwork_bytes_in_total{server=\"tcp\"}", 56.0),
            // Answers of 11, 9, 9 and 11 bytes.
            ("coilwork_bytes_out_total{server=\"tcp\"}", 40.0),
        ],
    );
    // Every refusal is counted (the retry loop may have been refused too).
    assert_eq!(
        value(&text, "coilwork_connections_refused_total{server=\"tcp\"}"),
        Some(refused)
    );
    assert!(text.contains("# TYPE coilwork_request_duration_seconds histogram\n"));
}

#[test]
fn only_get_metrics_is_served() {
    let server = serve(&[]);
    let not_found = http(&server.metrics, "GET / HTTP/1.1\r\n\r\n");
    assert!(not_found.starts_with("HTTP/1.1 404 Not Found\r\n"), "{not_found}");
    let post = http(&server.metrics, "POST /metrics HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let garbage = http(&server.metrics, "\u{1}\u{2}\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    // A head past the bound is refused, not buffered without end.
    let long = format!("GET /metrics HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(20_000));
    let mut s = connect(&server.metrics);
    let _ = s.write_all(long.as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The endpoint still serves afterwards.
    assert!(scrape(&server.metrics).contains("# TYPE coilwork_requests_total counter"));
}

#[test]
fn a_metrics_address_in_use_stops_the_start_before_the_modbus_port_opens() {
    let modbus = format!("127.0.0.1:{}", free_port());
    fails_with_metrics_in_use(
        &["serve", "--address", &modbus],
        "cannot serve metrics on {metrics}: address already in use",
        "serving",
    );
}

#[test]
fn udp_datagrams_and_malformed_ones_are_counted() {
    let server = serve(&["--transport", "udp"]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket.connect(&server.modbus).unwrap();
    socket.send(&adu(1, &READ_ONE)).unwrap();
    let mut buf = [0u8; 300];
    assert_eq!(socket.recv(&mut buf).unwrap(), 11);
    socket.send(&adu(2, &[0x03, 0x4E, 0x20, 0x00, 0x01])).unwrap();
    assert_eq!(socket.recv(&mut buf).unwrap(), 9);
    // A datagram with a bad length field is dropped.
    socket.send(&[0, 3, 0, 0, 1, 44, 1, 3, 0, 0, 0, 1]).unwrap();
    expect(
        &server.metrics,
        &[
            ("coilwork_requests_total{server=\"udp\",unit=\"1\",function=\"3\"}", 2.0),
            (
                "coilwork_exceptions_total{server=\"udp\",unit=\"1\",function=\"3\"}",
                1.0,
            ),
            ("coilwork_datagrams_received_total{server=\"udp\"}", 3.0),
            ("coilwork_datagrams_answered_total{server=\"udp\"}", 2.0),
            ("coilwork_datagrams_malformed_total{server=\"udp\"}", 1.0),
            ("coilwork_frames_dropped_total{server=\"udp\",reason=\"mbap\"}", 1.0),
            ("coilwork_request_duration_seconds_count{server=\"udp\"}", 2.0),
        ],
    );
}

#[test]
fn pymodbus_requests_are_counted() {
    let Some(python) = support::python_or_skip() else {
        return;
    };
    let server = serve(&[]);
    let port = server.modbus.rsplit(':').next().unwrap();
    let script = format!(
        "from pymodbus.client import ModbusTcpClient\n\
         c = ModbusTcpClient('127.0.0.1', port={port})\n\
         assert c.connect()\n\
         for _ in range(5):\n    assert not c.read_holding_registers(0, count=2, device_id=1).isError()\n\
         assert not c.write_register(3, 7, device_id=1).isError()\n\
         assert c.read_coils(60000, count=1, device_id=1).isError()\n\
         c.close()\n"
    );
    let status = Command::new(python).args(["-c", &script]).status().expect("run python");
    assert!(status.success());
    expect(
        &server.metrics,
        &[
            ("coilwork_requests_total{server=\"tcp\",unit=\"1\",function=\"3\"}", 5.0),
            ("coilwork_requests_total{server=\"tcp\",unit=\"1\",function=\"6\"}", 1.0),
            ("coilwork_requests_total{server=\"tcp\",unit=\"1\",function=\"1\"}", 1.0),
            (
                "coilwork_exceptions_total{server=\"tcp\",unit=\"1\",function=\"1\"}",
                1.0,
            ),
            (
                "coilwork_exceptions_total{server=\"tcp\",unit=\"1\",function=\"3\"}",
                0.0,
            ),
            ("coilwork_request_duration_seconds_count{server=\"tcp\"}", 7.0),
            (
                "coilwork_connections_closed_total{server=\"tcp\",reason=\"peer_closed\"}",
                1.0,
            ),
        ],
    );
}

/// The sum of every sample of `name` whose labels contain `label`.
fn sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn simulate_serves_the_same_families_on_metrics_and_on_its_http_port() {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../coilwork-sim/tests/data/device.json");
    let text = std::fs::read_to_string(src)
        .unwrap()
        .replace("\"port\": 5020", "\"port\": 0");
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics_device.json");
    std::fs::write(&file, text).unwrap();
    let args = ["simulate", "--json_file", file.to_str().unwrap(), "--http-port", "0"];
    let (mut child, lines) = start(
        &args,
        String::new(),
        &metrics_addr(),
        "web page and REST API on http://",
    );
    let found = |prefix: &str| {
        lines
            .lines()
            .find_map(|l| l.split_once(prefix))
            .map(|(_, rest)| rest.trim())
    };
    child.modbus = found("serving Modbus/TCP on ")
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no Modbus line: {lines}"))
        .to_owned();
    let http = found("coilwork: web page and REST API on http://")
        .and_then(|l| l.strip_suffix('/'))
        .unwrap_or_else(|| panic!("no HTTP line: {lines}"))
        .to_owned();
    let mut s = connect(&child.modbus);
    assert_eq!(ask(&mut s, 1, &[0x03, 0x00, 0x04, 0x00, 0x02])[0], 0x03);
    assert_eq!(ask(&mut s, 2, &[0x03, 0xEA, 0x60, 0x00, 0x01])[0], 0x83);
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let scraped = scrape(&child.metrics);
        let answer = http_get_body(&http, "/metrics");
        let counts = |t: &str| {
            (
                sum(t, "coilwork_requests_total", "function=\"3\""),
                sum(t, "coilwork_exceptions_total", "function=\"3\""),
                sum(t, "coilwork_connections_accepted_total", "server="),
            )
        };
        if counts(&scraped) == (2.0, 1.0, 1.0) && counts(&answer) == (2.0, 1.0, 1.0) {
            assert!(answer.contains("# TYPE coilwork_request_duration_seconds histogram"));
            assert!(answer.contains("# TYPE coilwork_modbus_up gauge"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} {:?}\n{scraped}\n{answer}",
            counts(&scraped),
            counts(&answer)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The body of a GET on the simulator's HTTP port.
fn http_get_body(addr: &str, path: &str) -> String {
    let answer = http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn simulate_with_a_metrics_address_in_use_exits_before_serving() {
    fails_with_metrics_in_use(
        &["simulate", "--http-port", "0"],
        "address already in use",
        "simulating",
    );
}

/// FC3, unit 1, one register at 0, RTU framed (CRC 0x0A84, low byte first).
const RTU_READ: [u8; 8] = [0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0A];

/// Sends a frame with a bad CRC, then a good one, over `io`; the good one is answered.
fn bad_crc_then_good(io: &mut (impl Read + Write)) {
    let mut bad = RTU_READ;
    bad[7] ^= 0xFF;
    io.write_all(&bad).unwrap();
    // Longer than t3.5 at any baud rate used here: the bad frame stands alone.
    std::thread::sleep(Duration::from_millis(50));
    io.write_all(&RTU_READ).unwrap();
    let mut answer = [0u8; 7];
    io.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [0x01, 0x03, 0x02, 0x00, 0x00, 0xB8, 0x44]);
}

#[test]
fn rtu_over_tcp_counts_a_bad_crc_as_a_dropped_frame() {
    let server = serve(&["--framer", "rtu"]);
    let mut s = connect(&server.modbus);
    bad_crc_then_good(&mut s);
    drop(s);
    expect(
        &server.metrics,
        &[
            ("coilwork_frames_dropped_total{server=\"tcp\",reason=\"checksum\"}", 1.0),
            ("coilwork_requests_total{server=\"tcp\",unit=\"1\",function=\"3\"}", 1.0),
            (
                "coilwork_connections_closed_total{server=\"tcp\",reason=\"peer_closed\"}",
                1.0,
            ),
        ],
    );
}

#[test]
fn a_serial_line_counts_requests_bad_crcs_bytes_and_port_opens() {
    let Some(pair) = PtyPair::new("metrics-serial") else {
        return;
    };
    let (a, b) = (pair.server_end(), pair.client_end());
    let args = [
        "serve",
        "--transport",
        "serial",
        "--port",
        a.to_str().unwrap(),
        "--framer",
        "rtu",
    ];
    let (server, _) = start(&args, String::new(), &metrics_addr(), "serving");
    let mut line = std::fs::OpenOptions::new().read(true).write(true).open(&b).unwrap();
    bad_crc_then_good(&mut line);
    expect(
        &server.metrics,
        &[
            (
                "coilwork_frames_dropped_total{server=\"serial\",reason=\"checksum\"}",
                1.0,
            ),
            (
                "coilwork_requests_total{server=\"serial\",unit=\"1\",function=\"3\"}",
                1.0,
            ),
            ("coilwork_request_duration_seconds_count{server=\"serial\"}", 1.0),
            // The bad frame and the good one (8 bytes each); the answer (7).
            ("coilwork_bytes_in_total{server=\"serial\"}", 16.0),
            ("coilwork_bytes_out_total{server=\"serial\"}", 7.0),
            ("coilwork_serial_port_opens_total{server=\"serial\"}", 1.0),
            ("coilwork_serial_open_failures_total{server=\"serial\"}", 0.0),
            ("coilwork_serial_line_errors_total{server=\"serial\"}", 0.0),
        ],
    );
    drop(server);
}

#[test]
fn tls_handshake_failures_are_counted() {
    let p = pki::Pki::new();
    let dir = support::TempDir::new("metrics");
    let cert = dir.write("server.pem", &p.server.cert_pem);
    let key = dir.write("server.key", &p.server.key_pem);
    let server = serve(&[
        "--transport",
        "tls",
        "--cert",
        &cert,
        "--key",
        &key,
        "--tls-server-only",
    ]);
    // Not a TLS client hello: the handshake fails and the connection is closed.
    let mut s = TcpStream::connect(&server.modbus).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    wait_closed(&mut s);
    let text = expect(
        &server.metrics,
        &[
            ("coilwork_tls_handshake_failures_total{server=\"tls\"}", 1.0),
            ("coilwork_connections_open{server=\"tls\"}", 0.0),
        ],
    );
    assert_eq!(sum(&text, "coilwork_requests_total", "server=\"tls\""), 0.0);
}

#[test]
fn serve_evict_oldest_serves_the_new_client_and_counts_the_eviction() {
    let server = serve(&["--max-connections", "1", "--overflow", "evict-oldest"]);
    let mut a = connect(&server.modbus);
    assert_eq!(ask(&mut a, 1, &READ_ONE), [0x03, 2, 0, 0]);
    let mut b = connect(&server.modbus);
    assert_eq!(ask(&mut b, 2, &READ_ONE), [0x03, 2, 0, 0], "the new client is served");
    // The oldest was closed to make room: end of stream (or a reset), no answer.
    let _ = a.write_all(&adu(3, &READ_ONE));
    let mut rest = Vec::new();
    let _ = a.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the evicted client was answered: {rest:?}");
    assert_eq!(ask(&mut b, 4, &READ_ONE), [0x03, 2, 0, 0]);
    expect(
        &server.metrics,
        &[
            ("coilwork_connections_evicted_total{server=\"tcp\"}", 1.0),
            ("coilwork_connections_refused_total{server=\"tcp\"}", 0.0),
            (
                "coilwork_connections_closed_total{server=\"tcp\",reason=\"evicted\"}",
                1.0,
            ),
            ("coilwork_connections_open{server=\"tcp\"}", 1.0),
        ],
    );
}

/// A running `coilwork gateway`, killed on drop, with its client and metrics addresses.
fn gateway(args: &[&str]) -> Serve {
    let head = ["gateway", "--listen", "127.0.0.1:0", "--log", "error"];
    let (mut gw, lines) = start(
        &[&head, args].concat(),
        String::new(),
        &metrics_addr(),
        "gateway on Modbus/TCP",
    );
    gw.modbus = lines
        .lines()
        .find_map(|l| l.strip_prefix("coilwork: gateway on Modbus/TCP "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_owned();
    gw
}

#[test]
fn gateway_metrics_address_in_use_exits_before_any_modbus_port_opens() {
    // The Modbus address is held too: had the gateway bound it first, the
    // error would name it, not the metrics address.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let modbus = held.local_addr().unwrap().to_string();
    let taken = fails_with_metrics_in_use(
        &["gateway", "--listen", &modbus, "--route", "1=local"],
        "cannot serve metrics on {metrics}: address already in use",
        "gateway on",
    );
    let metrics = taken.local_addr().unwrap().to_string();
    drop(held);
    // With the Modbus address free: no client is ever accepted while the
    // gateway starts and fails, and it announces nothing.
    let modbus = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args([
            "gateway",
            "--listen",
            &modbus,
            "--route",
            "1=local",
            "--metrics",
            &metrics,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coilwork");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        assert!(
            TcpStream::connect(&modbus).is_err(),
            "the gateway accepted a Modbus client with its metrics address in use"
        );
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(!status.success());
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("gateway on"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("address already in use"));
}

#[test]
fn gateway_metrics_serve_only_get_metrics() {
    let gw = gateway(&["--route", "1=local"]);
    let not_found = http(&gw.metrics, "GET /nope HTTP/1.1\r\n\r\n");
    assert!(not_found.starts_with("HTTP/1.1 404 Not Found\r\n"), "{not_found}");
    let post = http(&gw.metrics, "POST /metrics HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let text = scrape(&gw.metrics);
    assert!(text.contains("# TYPE coilwork_requests_total counter\n"), "{text}");
    assert!(text.contains("# TYPE coilwork_gateway_up gauge\n"), "{text}");
}

/// `coilwork serve` on a free port (a gateway's upstream), killed on drop.
fn upstream() -> Serve {
    let modbus = format!("127.0.0.1:{}", free_port());
    start(&["serve", "--address", &modbus], modbus.clone(), "", "serving").0
}

/// An MBAP request for `unit`.
fn adu_to(unit: u8, tid: u16, pdu: &[u8]) -> Vec<u8> {
    let mut adu = adu(tid, pdu);
    adu[6] = unit;
    adu
}

#[test]
fn gateway_client_side_requests_exceptions_bytes_and_closes_are_counted() {
    let up = upstream();
    let upstream = format!("tcp:{}", up.modbus);
    let udp = format!("127.0.0.1:{}", free_port());
    let gw = gateway(&["--upstream", &upstream, "--route", "7=local", "--listen-udp", &udp]);
    let mut s = connect(&gw.modbus);
    // Unit 1 through the upstream (`coilwork serve`): a read, then an
    // exception that the upstream sends (address 20000: 02).
    assert_eq!(ask(&mut s, 1, &READ_ONE), [0x03, 2, 0, 0]);
    assert_eq!(ask(&mut s, 2, &[0x03, 0x4E, 0x20, 0x00, 0x01]), [0x83, 0x02]);
    // Unit 7 on the gateway's own device: function 0x55 is not served (01).
    s.write_all(&adu_to(7, 3, &[0x55])).unwrap();
    let mut answer = [0u8; 9];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(answer[6..], [7, 0xD5, 0x01]);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    wait_closed(&mut s);
    // A protocol id of 9 is not Modbus: the connection is closed.
    let mut bad = TcpStream::connect(&gw.modbus).unwrap();
    bad.write_all(&[0, 4, 0, 9, 0, 6, 1, 3, 0, 0, 0, 1]).unwrap();
    wait_closed(&mut bad);
    // One datagram through the upstream, and one with a bad length.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket.connect(&udp).unwrap();
    socket.send(&adu(5, &READ_ONE)).unwrap();
    let mut buf = [0u8; 300];
    assert_eq!(socket.recv(&mut buf).unwrap(), 11);
    socket.send(&[0, 6, 0, 0, 1, 44, 1, 3, 0, 0, 0, 1]).unwrap();
    let text = expect(
        &gw.metrics,
        &[
            (
                "coilwork_requests_total{server=\"gateway\",unit=\"1\",function=\"3\"}",
                3.0,
            ),
            (
                "coilwork_exceptions_total{server=\"gateway\",unit=\"1\",function=\"3\"}",
                1.0,
            ),
            (
                "coilwork_requests_total{server=\"gateway\",unit=\"7\",function=\"85\"}",
                1.0,
            ),
            (
                "coilwork_exceptions_total{server=\"gateway\",unit=\"7\",function=\"85\"}",
                1.0,
            ),
            ("coilwork_request_duration_seconds_count{server=\"gateway\"}", 4.0),
            (
                "coilwork_request_duration_seconds_bucket{server=\"gateway\",le=\"+Inf\"}",
                4.0,
            ),
            ("coilwork_frames_dropped_total{server=\"gateway\",reason=\"mbap\"}", 2.0),
            ("coilwork_connections_accepted_total{server=\"gateway\"}", 2.0),
            ("coilwork_connections_open{server=\"gateway\"}", 0.0),
            (
                "coilwork_connections_closed_total{server=\"gateway\",reason=\"peer_closed\"}",
                1.0,
            ),
            (
                "coilwork_connections_closed_total{server=\"gateway\",reason=\"bad_frame\"}",
                1.0,
            ),
            // TCP: 12 + 12 + 8 and the bad frame (12); UDP: 12 and 12.
            ("coilwork_bytes_in_total{server=\"gateway\"}", 68.0),
            // TCP: 11 + 9 + 9; UDP: 11.
            ("coilwork_bytes_out_total{server=\"gateway\"}", 40.0),
            ("coilwork_datagrams_received_total{server=\"gateway\"}", 2.0),
            ("coilwork_datagrams_answered_total{server=\"gateway\"}", 1.0),
            ("coilwork_datagrams_malformed_total{server=\"gateway\"}", 1.0),
            // The per-upstream families are still there: the two TCP
            // requests to unit 1 and the datagram, one answer an exception.
            (
                &format!("coilwork_gateway_answers_total{{upstream=\"{upstream}\"}}"),
                3.0,
            ),
            (
                &format!("coilwork_gateway_exceptions_total{{upstream=\"{upstream}\"}}"),
                1.0,
            ),
        ],
    );
    assert!(text.contains("# TYPE coilwork_request_duration_seconds histogram\n"));
    drop(up);
}

#[test]
fn gateway_counts_an_eviction_as_a_close_by_eviction() {
    let gw = gateway(&[
        "--route",
        "1=local",
        "--max-connections",
        "1",
        "--overflow",
        "evict-oldest",
    ]);
    let mut a = connect(&gw.modbus);
    assert_eq!(ask(&mut a, 1, &READ_ONE), [0x03, 2, 0, 0]);
    let mut b = connect(&gw.modbus);
    assert_eq!(ask(&mut b, 2, &READ_ONE), [0x03, 2, 0, 0]);
    wait_closed(&mut a);
    expect(
        &gw.metrics,
        &[
            ("coilwork_connections_evicted_total{server=\"gateway\"}", 1.0),
            (
                "coilwork_connections_closed_total{server=\"gateway\",reason=\"evicted\"}",
                1.0,
            ),
            ("coilwork_connections_open{server=\"gateway\"}", 1.0),
            (
                "coilwork_requests_total{server=\"gateway\",unit=\"1\",function=\"3\"}",
                2.0,
            ),
        ],
    );
}

/// Modbus RTU CRC-16 of `bytes`, low byte first.
fn crc16(bytes: &[u8]) -> [u8; 2] {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc.to_le_bytes()
}

#[test]
fn simulate_counts_a_serial_lines_bytes() {
    let Some(pair) = PtyPair::new("metrics-sim-serial") else {
        return;
    };
    let (a, b) = (pair.server_end(), pair.client_end());
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../coilwork-sim/tests/data/device.json");
    let text = std::fs::read_to_string(src)
        .unwrap()
        .replace("\"comm\": \"tcp\"", "\"comm\": \"serial\"")
        .replace("\"host\": \"127.0.0.1\",", "\"baudrate\": 19200, \"parity\": \"N\",")
        .replace("\"port\": 5020", &format!("\"port\": {:?}", a.to_str().unwrap()))
        .replace("\"framer\": \"socket\"", "\"framer\": \"rtu\"");
    let file = pair.dir().join("serial.json");
    std::fs::write(&file, text).unwrap();
    let args = ["simulate", "--json_file", file.to_str().unwrap(), "--http-port", "0"];
    let (server, _) = start(&args, String::new(), &metrics_addr(), "simulating");
    // FC3, unit 1, holding register 3 (17001 = 0x4269 in device.json).
    let mut request = vec![0x01, 0x03, 0x00, 0x03, 0x00, 0x01];
    request.extend(crc16(&request));
    let mut line = std::fs::OpenOptions::new().read(true).write(true).open(&b).unwrap();
    line.write_all(&request).unwrap();
    let mut answer = [0u8; 7];
    line.read_exact(&mut answer).unwrap();
    assert_eq!(answer[..5], [0x01, 0x03, 0x02, 0x42, 0x69]);
    expect(
        &server.metrics,
        &[
            (
                "coilwork_requests_total{server=\"server\",unit=\"1\",function=\"3\"}",
                1.0,
            ),
            ("coilwork_bytes_in_total{server=\"server\"}", 8.0),
            ("coilwork_bytes_out_total{server=\"server\"}", 7.0),
        ],
    );
    drop(server);
}

#[test]
fn pymodbus_requests_through_the_gateway_are_counted() {
    let Some(python) = support::python_or_skip() else {
        return;
    };
    let up = upstream();
    let upstream = format!("tcp:{}", up.modbus);
    let gw = gateway(&["--upstream", &upstream]);
    let port = gw.modbus.rsplit(':').next().unwrap();
    let script = format!(
        "from pymodbus.client import ModbusTcpClient\n\
         c = ModbusTcpClient('127.0.0.1', port={port})\n\
         assert c.connect()\n\
         for _ in range(5):\n    assert not c.read_holding_registers(0, count=2, device_id=1).isError()\n\
         assert not c.write_register(3, 7, device_id=1).isError()\n\
         assert c.read_holding_registers(3, count=1, device_id=1).registers == [7]\n\
         assert c.read_coils(60000, count=1, device_id=1).isError()\n\
         c.close()\n"
    );
    let status = Command::new(python).args(["-c", &script]).status().expect("run python");
    assert!(status.success());
    expect(
        &gw.metrics,
        &[
            (
                "coilwork_requests_total{server=\"gateway\",unit=\"1\",function=\"3\"}",
                6.0,
            ),
            (
                "coilwork_requests_total{server=\"gateway\",unit=\"1\",function=\"6\"}",
                1.0,
            ),
            (
                "coilwork_exceptions_total{server=\"gateway\",unit=\"1\",function=\"1\"}",
                1.0,
            ),
            (
                "coilwork_exceptions_total{server=\"gateway\",unit=\"1\",function=\"3\"}",
                0.0,
            ),
            ("coilwork_request_duration_seconds_count{server=\"gateway\"}", 8.0),
            (
                "coilwork_connections_closed_total{server=\"gateway\",reason=\"peer_closed\"}",
                1.0,
            ),
            (
                &format!("coilwork_gateway_answers_total{{upstream=\"{upstream}\"}}"),
                8.0,
            ),
        ],
    );
    drop(up);
}
