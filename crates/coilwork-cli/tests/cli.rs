//! Runs the built `coilwork` binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_coilwork");

/// Starts `command` with its stdout piped; returns it with its first stdout
/// line (the listening line). Kills it and fails if none comes in 20 s.
fn start_announced(command: &mut Command) -> (Child, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn coilwork");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
        let _ = child.kill();
        panic!("no listening line");
    };
    (child, line)
}

/// Waits for the child to exit, killing it after `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("coilwork did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `coilwork args` to completion (bounded) and returns (status, stdout, stderr).
fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coilwork");
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status, out, err)
}

fn adu(tid: u16, pdu: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&tid.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    v.push(1);
    v.extend_from_slice(pdu);
    v
}

fn call(stream: &mut TcpStream, tid: u16, pdu: &[u8]) -> Vec<u8> {
    stream.write_all(&adu(tid, pdu)).unwrap();
    let mut head = [0u8; 7];
    stream.read_exact(&mut head).expect("answer header");
    assert_eq!(u16::from_be_bytes([head[0], head[1]]), tid);
    let len = u16::from_be_bytes([head[4], head[5]]) as usize;
    let mut body = vec![0u8; len - 1];
    stream.read_exact(&mut body).expect("answer pdu");
    body
}

#[test]
fn serves_tcp_and_exits_zero_on_sigterm() {
    let (mut child, line) =
        start_announced(Command::new(BIN).args(["serve", "--address", "127.0.0.1:0", "--vendor-name", "acme"]));
    let prefix = "coilwork: serving Modbus/TCP on ";
    assert!(line.starts_with(prefix), "listening line: {line:?}");
    assert!(line.trim_end().ends_with(" (units: all)"), "listening line: {line:?}");
    let addr = line[prefix.len()..].split(' ').next().unwrap().to_owned();
    assert!(!addr.ends_with(":0"), "real port announced: {addr}");

    let mut c = TcpStream::connect(&addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // FC16: write 0x0102, 0x0304 at 9990 (tables default to addresses 0..9999).
    let answer = call(&mut c, 1, &[0x10, 0x27, 0x06, 0, 2, 4, 1, 2, 3, 4]);
    assert_eq!(answer, vec![0x10, 0x27, 0x06, 0, 2]);
    assert_eq!(call(&mut c, 2, &[0x03, 0x27, 0x06, 0, 2]), vec![0x03, 4, 1, 2, 3, 4]);
    // Address 10000 is outside the default tables: exception 02.
    assert_eq!(call(&mut c, 3, &[0x03, 0x27, 0x10, 0, 1]), vec![0x83, 0x02]);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "graceful exit on SIGTERM");
}

#[test]
fn port_in_use_is_one_line_and_non_zero() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, out, err) = run(&["serve", "--address", &addr]);
    assert!(!status.success(), "must fail");
    assert!(out.is_empty(), "no listening line: {out:?}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.contains(&addr), "names the address: {err:?}");
    assert!(err.contains("in use"), "says why: {err:?}");
    assert!(!err.contains("panicked"));
}

#[test]
fn bad_flag_is_one_line_and_non_zero() {
    let (status, _, err) = run(&["serve", "--no-such-flag"]);
    assert_eq!(status.code(), Some(2));
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("--no-such-flag"), "{err:?}");
}

#[test]
fn tls_needs_cert_and_key() {
    // More TLS flag checks are in cli_tls.rs.
    let (status, _, err) = run(&["serve", "--transport", "tls", "--address", "127.0.0.1:0"]);
    assert!(!status.success());
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("--cert") && err.contains("--key"), "{err:?}");
}

#[test]
fn flags_another_transport_would_ignore_are_refused() {
    let cases: [(&[&str], &str); 5] = [
        (&["--transport", "udp", "--max-connections", "5"], "--max-connections"),
        (&["--transport", "udp", "--overflow", "evict-oldest"], "--overflow"),
        (
            &["--transport", "serial", "--port", "/dev/null", "--backlog", "8"],
            "--backlog",
        ),
        (
            &[
                "--transport",
                "serial",
                "--port",
                "/dev/null",
                "--address",
                "127.0.0.1:0",
            ],
            "--address",
        ),
        (
            &["--transport", "tcp", "--address", "127.0.0.1:0", "--baudrate", "9600"],
            "--baudrate",
        ),
    ];
    for (flags, named) in cases {
        let args: Vec<&str> = ["serve"].iter().chain(flags).copied().collect();
        let (status, out, err) = run(&args);
        assert!(!status.success(), "{args:?}");
        assert!(out.is_empty(), "{args:?} started: {out:?}");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(err.contains(&format!("{named} is only for --transport")), "{err:?}");
    }
    // The same flags at their defaults, or on their own transport, start as before.
    let (mut child, line) = start_announced(Command::new(BIN).args([
        "--address",
        "127.0.0.1:0",
        "--max-connections",
        "5",
        "--overflow",
        "evict-oldest",
    ]));
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("serving Modbus/TCP"), "{line}");
}

#[test]
fn gateway_upstream_without_host_and_port_is_refused() {
    for spec in [
        "tcp:",
        "tcp:plc",
        "tcp::502",
        "tcp:plc:0",
        "tcp:::1:502",
        "rtu+tcp:plc:x",
        "serial:",
    ] {
        let (status, out, err) = run(&["gateway", "--listen", "127.0.0.1:0", "--upstream", spec]);
        assert!(!status.success(), "{spec}: {err:?}");
        assert!(out.is_empty(), "{spec} started: {out:?}");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(err.contains(&format!("{spec:?}")), "names the spec: {err:?}");
    }
}

#[test]
fn serial_errors_are_one_line() {
    let (status, _, err) = run(&["serve", "--transport", "serial"]);
    assert_eq!(status.code(), Some(2));
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("--port"), "{err:?}");

    // A baud rate of 0 would hang up a real line (B0): refused before any port opens.
    for command in [
        &[
            "serve",
            "--transport",
            "serial",
            "--port",
            "/dev/null",
            "--baudrate",
            "0",
        ][..],
        &["gateway", "--upstream", "serial:/dev/null", "--baudrate", "0"],
    ] {
        let (status, out, err) = run(command);
        assert_eq!(status.code(), Some(2), "{command:?}");
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(err.contains("--baudrate"), "{err:?}");
    }

    let path = "/dev/coilwork-no-such-port";
    let (status, out, err) = run(&["serve", "--transport", "serial", "--port", path]);
    assert!(!status.success());
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains(path), "{err:?}");
}

#[test]
fn serves_rtu_on_a_pty_and_exits_zero_on_sigterm() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_serial::SerialPort;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut master, slave) = rt
        .block_on(async { tokio_serial::SerialStream::pair() })
        .expect("pty pair");
    let path = slave.name().expect("pty path");
    let (mut child, line) = start_announced(Command::new(BIN).args([
        "serve",
        "--transport",
        "serial",
        "--port",
        &path,
        "--baudrate",
        "9600",
    ]));
    assert_eq!(
        line.trim_end(),
        format!("coilwork: serving Modbus RTU on {path} at 9600 8E1 (units: all)")
    );
    drop(slave);

    rt.block_on(async {
        // FC6 unit 1: register 1 = 0x002A; the answer echoes the request.
        let fc6 = [0x01, 0x06, 0x00, 0x01, 0x00, 0x2A, 0x59, 0xD5];
        AsyncWriteExt::write_all(&mut master, &fc6).await.unwrap();
        let mut answer = [0u8; 8];
        tokio::time::timeout(
            Duration::from_secs(10),
            AsyncReadExt::read_exact(&mut master, &mut answer),
        )
        .await
        .expect("answer in time")
        .unwrap();
        assert_eq!(answer, fc6);
    });

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "graceful exit on SIGTERM");
}

#[test]
fn no_subcommand_takes_serve_flags() {
    // A bad value at the top level is caught the same way as under `serve`.
    let (status, _, err) = run(&["--framer", "nope"]);
    assert_eq!(status.code(), Some(2));
    assert_eq!(err.lines().count(), 1, "{err:?}");
    let (status, out, _) = run(&["--version"]);
    assert!(status.success());
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn serves_udp_and_exits_zero_on_sigint() {
    let (mut child, line) = start_announced(Command::new(BIN).args([
        "serve",
        "--transport",
        "udp",
        "--address",
        "127.0.0.1:0",
        "--units",
        "1,2",
    ]));
    let prefix = "coilwork: serving Modbus/UDP on ";
    assert!(line.starts_with(prefix), "{line:?}");
    assert!(line.trim_end().ends_with(" (units: 1,2)"), "{line:?}");
    let addr = line[prefix.len()..].split(' ').next().unwrap().to_owned();

    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.connect(&addr).unwrap();
    let mut buf = [0u8; 300];
    // Unit 2 has its own device: FC3 at 0 reads 0.
    let mut req = adu(5, &[0x03, 0, 0, 0, 1]);
    req[6] = 2;
    sock.send(&req).unwrap();
    let n = sock.recv(&mut buf).expect("answer");
    assert_eq!(&buf[..n], &[0, 5, 0, 0, 0, 5, 2, 0x03, 2, 0, 0]);
    // Unit 3 has no device: exception 0x0B (gateway target failed to respond).
    req[6] = 3;
    sock.send(&req).unwrap();
    let n = sock.recv(&mut buf).expect("answer");
    assert_eq!(&buf[..n], &[0, 5, 0, 0, 0, 3, 3, 0x83, 0x0B]);

    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "graceful exit on SIGINT");
}

/// The hard limit on open files of this process, from /proc (Linux).
#[cfg(target_os = "linux")]
fn hard_nofile(pid: &str) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next()?.parse().ok()?;
    let hard = fields.next()?.parse().ok()?;
    Some((soft, hard))
}

#[cfg(target_os = "linux")]
#[test]
fn serves_more_clients_than_the_inherited_descriptor_limit() {
    let Some((_, hard)) = hard_nofile("self") else { return };
    if hard < 1024 {
        eprintln!("skipped: hard descriptor limit {hard} is too low to show the raise");
        return;
    }
    // Started with a soft limit of 256 descriptors: 400 clients only fit if
    // the server raises its own limit.
    let (mut child, line) = start_announced(Command::new("bash").args([
        "-c",
        &format!("ulimit -Sn 256 && exec {BIN} serve --address 127.0.0.1:0"),
    ]));
    let addr = line
        .trim_end()
        .strip_prefix("coilwork: serving Modbus/TCP on ")
        .and_then(|rest| rest.split(' ').next())
        .expect("listening line")
        .to_owned();
    let (soft, _) = hard_nofile(&child.id().to_string()).expect("server limits");
    assert_eq!(soft, hard, "soft descriptor limit raised to the hard limit");
    let mut clients: Vec<TcpStream> = (0..400).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
    for (i, c) in clients.iter_mut().enumerate().rev().step_by(50) {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let tid = u16::try_from(i).unwrap();
        assert_eq!(
            call(c, tid, &[0x03, 0, 0, 0, 1]),
            vec![0x03, 2, 0, 0],
            "client {i} served"
        );
    }
    drop(clients);
    let _ = child.kill();
    let _ = child.wait();
}
