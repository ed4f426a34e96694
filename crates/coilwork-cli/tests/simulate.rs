//! `coilwork simulate`: the built-in configuration, a pymodbus JSON file, and
//! a configuration error reported before any port is opened.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `coilwork simulate` and returns its first `n` stdout lines.
fn start_lines(args: &[&str], n: usize) -> (Running, Vec<String>) {
    start_lines_env(args, &[], n)
}

/// As `start_lines`, with these environment variables.
fn start_lines_env(args: &[&str], env: &[(&str, &str)], n: usize) -> (Running, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .arg("simulate")
        .args(args)
        .envs(env.iter().copied())
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
    let lines = (0..n)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).expect("no serving line"))
        .collect();
    (child, lines)
}

/// A plain HTTP/1.1 GET; returns the whole answer (status line, headers, body).
fn http_get(addr: &str, path: &str) -> String {
    http_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n"))
}

/// Sends `head` (request line and headers) closing the connection; returns the whole answer.
fn http_request(addr: &str, head: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{head}Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// FC3 over MBAP: returns the registers or the exception code.
fn read_hr(addr: &str, start: u16, count: u16) -> Result<Vec<u16>, u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let [sh, sl] = start.to_be_bytes();
    let [ch, cl] = count.to_be_bytes();
    s.write_all(&[0, 1, 0, 0, 0, 6, 1, 3, sh, sl, ch, cl]).unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).unwrap();
    if head[7] & 0x80 != 0 {
        return Err(head[8]);
    }
    let mut body = vec![0u8; head[8] as usize];
    s.read_exact(&mut body).unwrap();
    Ok(body.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect())
}

#[test]
fn simulate_a_pymodbus_json_file() {
    let file = device_on_port_0("simulate_device.json");
    let (_child, lines) = start_lines(&["--json_file", file.to_str().unwrap(), "--http-port", "0"], 2);
    let line = &lines[0];
    let addr = line.rsplit(' ').next().unwrap().to_owned();
    let http = lines[1]
        .strip_prefix("coilwork: web page and REST API on http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("{}", lines[1]))
        .to_owned();
    let answer = http_get(&http, "/api/registers?start=4&count=2");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"decoded\":617001"), "{answer}");
    assert!(line.contains("serving Modbus/TCP on 127.0.0.1:"), "{line}");
    // uint32 617001 at 4-5, high word first.
    assert_eq!(read_hr(&addr, 4, 2), Ok(vec![0x0009, 0x6A29]));
    assert_eq!(read_hr(&addr, 1, 1), Err(2));
}

#[test]
fn simulate_reports_a_config_error_and_exits() {
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("simulate_bad.json");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../coilwork-sim/tests/data/device.json");
    let text = std::fs::read_to_string(src)
        .unwrap()
        .replace("\"value\": 17001", "\"value\": 70000");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["simulate", "--json-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("device_list.device.uint16[0].value = 70000: out of range 0..=65535"),
        "{err}"
    );
}

#[test]
fn simulate_without_arguments_uses_the_built_in_configuration() {
    // The built-in configuration listens on 127.0.0.1:5020; skip if it is taken.
    // and serves HTTP on 127.0.0.1:8080; skip if either is taken.
    if std::net::TcpListener::bind("127.0.0.1:5020").is_err() || std::net::TcpListener::bind("127.0.0.1:8080").is_err()
    {
        eprintln!("skipped: 127.0.0.1:5020 or 127.0.0.1:8080 is in use");
        return;
    }
    let (_child, lines) = start_lines(&[], 2);
    assert!(
        lines[0].ends_with("serving Modbus/TCP on 127.0.0.1:5020"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "coilwork: web page and REST API on http://127.0.0.1:8080/");
    assert_eq!(read_hr("127.0.0.1:5020", 4, 1), Ok(vec![17001]));
    let page = http_get("127.0.0.1:8080", "/");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("<title>coilwork simulator</title>"),
        "{page}"
    );
}

#[test]
fn simulate_log_level_as_pymodbus() {
    // `--log debug` shows debug lines; without it only warnings would show.
    // On a free port: the built-in configuration's 5020 is another test's.
    let file = device_on_port_0("simulate_log.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args([
            "simulate",
            "--json-file",
            file.to_str().unwrap(),
            "--log",
            "debug",
            "--http-port",
            "0",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coilwork");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let _running = Running(child);
    let debug_line = (0..50)
        .filter_map(|_| rx.recv_timeout(Duration::from_secs(20)).ok())
        .find(|l| l.contains("DEBUG"));
    assert!(debug_line.is_some(), "no DEBUG line on stderr with --log debug");
}

#[test]
fn simulate_refuses_a_python_custom_actions_module() {
    let out = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["simulate", "--custom_actions_module", "my_actions"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--custom_actions_module my_actions") && err.contains("Python"),
        "{err}"
    );
}

/// The test device's configuration on a free Modbus port, written to a file named `name`.
fn device_on_port_0(name: &str) -> std::path::PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../coilwork-sim/tests/data/device.json");
    let text = std::fs::read_to_string(src)
        .unwrap()
        .replace("\"port\": 5020", "\"port\": 0");
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn simulate_http_token_from_the_environment_and_allowed_hosts() {
    let file = device_on_port_0("simulate_token.json");
    let args = [
        "--json-file",
        file.to_str().unwrap(),
        "--http-port",
        "0",
        "--http-allow-host",
        "plant.lan",
    ];
    let (_child, lines) = start_lines_env(&args, &[("COILWORK_HTTP_TOKEN", "t0ken")], 2);
    assert!(
        lines[1].ends_with("(open the page as http://HOST:PORT/#token=TOKEN)"),
        "{}",
        lines[1]
    );
    let http = lines[1]
        .strip_prefix("coilwork: web page and REST API on http://")
        .and_then(|a| a.split_once('/'))
        .map(|(a, _)| a.to_owned())
        .unwrap_or_else(|| panic!("{}", lines[1]));
    let answer = http_get(&http, "/api/server");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let with = |host: &str| format!("GET /api/server HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer t0ken\r\n");
    let answer = http_request(&http, &with(&http));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(http_request(&http, &with("plant.lan")).starts_with("HTTP/1.1 200"));
    assert!(http_request(&http, &with("other.lan")).starts_with("HTTP/1.1 421"));
}

#[test]
fn simulate_refuses_an_empty_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["simulate", "--http-port", "0", "--http-token", ""])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("--http-token: the token must be non-empty"), "{err}");
}

#[test]
fn simulate_refuses_a_negative_time_scale() {
    let out = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["simulate", "--http-port", "0", "--time-scale", "-2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("--time-scale") && err.contains("0 or more"), "{err}");
}

#[test]
fn simulate_register_map_errors_name_file_line_and_column() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    for (name, text, needle) in [
        (
            "bad_type.csv",
            "address,type,value\n0,uint16,1\n1,uint8,2\n",
            "bad_type.csv line 3, column type: \"uint8\": not a type",
        ),
        (
            "overlap.csv",
            "address,type\n0,uint32\n1,uint16\n",
            "overlap.csv line 2, column address: [0, 1]: register 1 is already defined as uint16",
        ),
        (
            "bad_param.csv",
            "address,type,action,parameters\n0,uint16,ramp,\"{\"\"period_s\"\": 0, \"\"min\"\": 0, \"\"max\"\": 1}\"\n",
            "bad_param.csv line 2, column parameters.period_s: 0:",
        ),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_coilwork"))
            .args(["simulate", "--http-port", "0", "--register-map", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    }
}

#[test]
fn simulate_refuses_a_corrupt_state_file_before_serving() {
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("corrupt.state");
    std::fs::write(&file, "{\"format\": \"coilwork-sim-state 1\", \"dev").unwrap();
    let json = device_on_port_0("corrupt_state.json");
    let out = Command::new(env!("CARGO_BIN_EXE_coilwork"))
        .args(["simulate", "--json-file", json.to_str().unwrap(), "--http-port", "0"])
        .args(["--state-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("corrupt.state: not a coilwork state file") && err.contains("line 1"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "it started serving");
}

#[test]
fn simulate_all_servers_of_the_file() {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../coilwork-sim/tests/data/device.json");
    let config = std::fs::read_to_string(src)
        .unwrap()
        .replace("\"port\": 5020", "\"port\": 0")
        .replace(
            "\"server_list\": {",
            "\"server_list\": {\"second\": {\"comm\": \"tcp\", \"host\": \"127.0.0.1\", \"port\": 0, \"framer\": \"socket\"},",
        );
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("simulate_all.json");
    std::fs::write(&file, config).unwrap();
    let (_child, lines) = start_lines(&["--json-file", file.to_str().unwrap(), "--all", "--http-port", "0"], 3);
    for (line, server) in lines.iter().zip(["second", "server"]) {
        assert!(
            line.contains(&format!("(server {server:?}): serving Modbus/TCP on 127.0.0.1:")),
            "{line}"
        );
        let addr = line.rsplit(' ').next().unwrap();
        assert_eq!(read_hr(addr, 4, 2), Ok(vec![0x0009, 0x6A29]), "{server}");
    }
    assert!(
        lines[2].starts_with("coilwork: web page and REST API on http://"),
        "{}",
        lines[2]
    );
}
