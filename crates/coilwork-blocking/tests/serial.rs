//! The serial server over a socat pseudo-terminal pair and over a socket pair.
//!
//! The pty tests need `socat` (`bash .ci/test` installs it): without it they
//! are skipped with a message, unless `COILWORK_REQUIRE_CLIENTS` is set.
#![cfg(all(unix, feature = "serial"))]

mod common;

use coilwork_blocking::{SerialServer, SerialServerConfig, ServerError};
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// CRC-16/MODBUS, written out so the test does not trust the codec under test.
fn crc(bytes: &[u8]) -> [u8; 2] {
    let mut c: u16 = 0xFFFF;
    for b in bytes {
        c ^= u16::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xA001 } else { c >> 1 };
        }
    }
    c.to_le_bytes()
}

fn rtu(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = vec![unit];
    v.extend_from_slice(pdu);
    let c = crc(&v);
    v.extend_from_slice(&c);
    v
}

/// Reads exactly `n` bytes, bounded by [`STEP`].
fn read_n<S: Read>(s: &mut S, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let end = Instant::now() + STEP;
    let mut got = 0;
    while got < n {
        assert!(Instant::now() < end, "answer in time: got {:02X?}", &v[..got]);
        match s.read(&mut v[got..]) {
            Ok(0) => panic!("line closed"),
            Ok(k) => got += k,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    v
}

/// True if nothing arrives within `d`.
fn nothing_within<S: Read>(s: &mut S, d: Duration) -> bool {
    let end = Instant::now() + d;
    let mut b = [0u8; 64];
    while Instant::now() < end {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => return false,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    true
}

/// A socat pty pair `DIR/a` <-> `DIR/b`; socat is killed and the directory removed on drop.
struct PtyPair {
    child: Child,
    dir: PathBuf,
}

impl PtyPair {
    /// None (skipped, with a message) if socat is missing and not required.
    fn new(name: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("coilwork-blocking-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spawned = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", dir.join("a").display()))
            .arg(format!("pty,raw,echo=0,link={}", dir.join("b").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                assert!(
                    std::env::var_os("COILWORK_REQUIRE_CLIENTS").is_none(),
                    "socat is required (COILWORK_REQUIRE_CLIENTS is set)"
                );
                eprintln!("skipped: socat not installed (bash .ci/test installs it)");
                let _ = std::fs::remove_dir_all(&dir);
                return None;
            }
            Err(e) => panic!("socat: {e}"),
        };
        let pair = Self { child, dir };
        assert!(
            wait_until(STEP, || pair.a().exists() && pair.b().exists()),
            "socat made its pty links"
        );
        Some(pair)
    }

    fn a(&self) -> PathBuf {
        self.dir.join("a")
    }

    fn b(&self) -> PathBuf {
        self.dir.join("b")
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The client end of a pty, opened raw with a short read timeout.
fn open_client(path: &Path) -> Box<dyn serialport::SerialPort> {
    serialport::new(path.to_string_lossy(), 9600)
        .timeout(Duration::from_millis(20))
        .open()
        .expect("open the client end of the pty")
}

fn serve(server: &Arc<SerialServer>) -> JoinHandle<Result<(), ServerError>> {
    let s = Arc::clone(server);
    std::thread::spawn(move || s.serve_forever())
}

fn stop(server: &SerialServer, thread: JoinHandle<Result<(), ServerError>>) {
    let t0 = Instant::now();
    server.handle().stop();
    assert!(server.handle().wait_stopped_timeout(STEP), "serve_forever returns");
    assert!(t0.elapsed() < Duration::from_secs(1), "stopped within a poll interval");
    let r = thread.join().unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn rtu_round_trip_over_socat_with_line_silence() {
    let Some(pty) = PtyPair::new("rtu") else { return };
    let config = SerialServerConfig {
        baud_rate: 9600,
        auto_open: false,
        ..SerialServerConfig::new(pty.a().to_string_lossy())
    };
    let server = Arc::new(SerialServer::new(engine(), config));
    server.open().expect("server opens its end");
    let thread = serve(&server);
    let mut master = open_client(&pty.b());

    let write = rtu(0x11, &fc16(0x6B, &[0x022B, 0x0000, 0x0064]));
    master.write_all(&write).unwrap();
    assert_eq!(read_n(&mut master, 8), rtu(0x11, &[0x10, 0x00, 0x6B, 0x00, 0x03]));
    // The spec's FC3 example request and its answer.
    master
        .write_all(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87])
        .unwrap();
    assert_eq!(
        read_n(&mut master, 11),
        rtu(0x11, &[0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64])
    );

    // A frame cut by more than t3.5 of silence (4 ms at 9600 8E1) is two
    // fragments, both discarded: no answer, even though the bytes together
    // would be a valid request.
    let req = rtu(0x11, &fc3(0x6B, 1));
    master.write_all(&req[..4]).unwrap();
    std::thread::sleep(Duration::from_millis(60));
    master.write_all(&req[4..]).unwrap();
    assert!(
        nothing_within(&mut master, Duration::from_millis(300)),
        "split frame not answered"
    );
    // The line is fine afterwards.
    master.write_all(&req).unwrap();
    assert_eq!(read_n(&mut master, 7), rtu(0x11, &[0x03, 0x02, 0x02, 0x2B]));
    assert_eq!(server.stats().opened(), 1);
    // The line's traffic: 15 + 8 + 8 + 8 bytes in, three answers (8 + 11 + 7 bytes) out.
    let traffic = server.server_stats();
    assert!(wait_until(STEP, || traffic.bytes_out() == 26), "{traffic:?}");
    assert_eq!(traffic.bytes_in(), 39, "{traffic:?}");
    stop(&server, thread);
}

/// Points `path` at the server end of `pty` (replacing an older link).
fn link(pty: &PtyPair, path: &Path) {
    let _ = std::fs::remove_file(path);
    std::os::unix::fs::symlink(std::fs::read_link(pty.a()).unwrap(), path).unwrap();
}

#[test]
fn auto_open_waits_for_the_port_and_reopens_it() {
    let dir = std::env::temp_dir().join(format!("coilwork-blocking-waiting-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("port");
    let config = SerialServerConfig {
        baud_rate: 9600,
        reconnect_delay: Duration::from_millis(20),
        ..SerialServerConfig::new(path.to_string_lossy())
    };
    let server = Arc::new(SerialServer::new(engine(), config));
    let thread = serve(&server);
    assert!(
        wait_until(STEP, || server.stats().open_failures() >= 2),
        "auto_open keeps trying"
    );
    let Some(pty) = PtyPair::new("first") else {
        stop(&server, thread);
        return;
    };
    // The port appears where the server looks.
    link(&pty, &path);
    assert!(
        wait_until(STEP, || server.stats().opened() == 1),
        "opened once it exists"
    );
    let mut master = open_client(&pty.b());
    master.write_all(&rtu(1, &fc16(0, &[0x0102]))).unwrap();
    assert_eq!(read_n(&mut master, 8), rtu(1, &[0x10, 0, 0, 0, 1]));

    // The line goes away (adapter unplugged): a line error, then retries.
    // The link goes first, so that retries never open a recycled pty number.
    std::fs::remove_file(&path).unwrap();
    drop(master);
    drop(pty);
    assert!(
        wait_until(STEP, || server.stats().line_errors() == 1),
        "line failure seen"
    );
    let Some(pty) = PtyPair::new("second") else {
        unreachable!("socat ran a moment ago")
    };
    link(&pty, &path);
    assert!(wait_until(STEP, || server.stats().opened() == 2), "reopened");
    let mut master = open_client(&pty.b());
    master.write_all(&rtu(1, &fc3(0, 1))).unwrap();
    assert_eq!(read_n(&mut master, 7), rtu(1, &[0x03, 0x02, 0x01, 0x02]));
    stop(&server, thread);
    drop(pty);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn local_echo_is_dropped() {
    let (mut client, line) = UnixStream::pair().unwrap();
    client.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let config = SerialServerConfig {
        local_echo: true,
        ..SerialServerConfig::new("pipe")
    };
    let server = Arc::new(SerialServer::new(engine(), config));
    let s = Arc::clone(&server);
    let thread = std::thread::spawn(move || s.serve_line(line));

    // FC6's answer equals its request: if the echo were not dropped it
    // would run again and be answered twice.
    let fc6 = rtu(1, &[0x06, 0x00, 0x01, 0x00, 0x2A]);
    client.write_all(&fc6).unwrap();
    let answer = read_n(&mut client, 8);
    assert_eq!(answer, fc6);
    client.write_all(&answer).unwrap(); // the RS-485 echo of what the server sent
    client.write_all(&rtu(1, &fc3(1, 1))).unwrap();
    assert_eq!(read_n(&mut client, 7), rtu(1, &[0x03, 0x02, 0x00, 0x2A]));

    server.handle().stop();
    assert!(thread.join().unwrap().is_ok());
}

#[test]
fn ascii_on_a_socket_pair() {
    let (mut client, line) = UnixStream::pair().unwrap();
    client.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let config = SerialServerConfig {
        framing: coilwork_core::Framing::Ascii,
        ..SerialServerConfig::new("pipe")
    };
    let server = Arc::new(SerialServer::new(engine(), config));
    let s = Arc::clone(&server);
    let thread = std::thread::spawn(move || s.serve_line(line));
    // FC3, unit 0x11, 3 registers from 0x6B: LRC = -(0x11+0x03+0x6B+0x03) = 0x7E.
    client.write_all(b":1103006B00037E\r\n").unwrap();
    // Answer: 11 03 06 00 00 00 00 00 00, LRC = -(0x11+0x03+0x06) = 0xE6.
    let want = b":110306000000000000E6\r\n";
    assert_eq!(read_n(&mut client, want.len()), want.to_vec());
    // The peer closing the line is a line error.
    drop(client);
    let r = thread.join().unwrap();
    assert!(r.is_err(), "{r:?}");
    assert_eq!(server.stats().line_errors(), 1);
}

#[test]
fn missing_port_error_or_retry() {
    let path = "/dev/coilwork-no-such-port";
    let server = SerialServer::new(
        engine(),
        SerialServerConfig {
            auto_open: false,
            ..SerialServerConfig::new(path)
        },
    );
    let err = server.serve_forever().unwrap_err();
    assert!(matches!(err, ServerError::SerialOpen { .. }), "{err:?}");
    assert!(err.to_string().contains(path), "{err}");

    let server = Arc::new(SerialServer::new(
        engine(),
        SerialServerConfig {
            reconnect_delay: Duration::from_secs(30),
            ..SerialServerConfig::new(path)
        },
    ));
    let thread = serve(&server);
    assert!(wait_until(STEP, || server.stats().open_failures() >= 1));
    // A stop cuts the reconnect delay short.
    stop(&server, thread);
}

#[test]
fn a_hooks_delivery_split_pauses_the_line() {
    let pause = Duration::from_millis(300);
    let (mut client, line) = UnixStream::pair().unwrap();
    client.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let server = Arc::new(SerialServer::new(
        delivery_engine(Duration::ZERO, Some((3, pause))),
        SerialServerConfig::new("pipe"),
    ));
    let s = Arc::clone(&server);
    let thread = std::thread::spawn(move || s.serve_line(line));
    // Before the send: the server's pause cannot start before it.
    let sent = Instant::now();
    client.write_all(&rtu(1, &fc3(0, 1))).unwrap();
    let want = rtu(1, &[0x03, 0x02, 0x00, 0x00]);
    assert_eq!(read_n(&mut client, 3), want[..3]);
    assert!(nothing_within(&mut client, pause / 3), "only the first piece came");
    assert_eq!(read_n(&mut client, want.len() - 3), want[3..]);
    assert!(sent.elapsed() >= pause, "rest after {:?}", sent.elapsed());
    server.handle().stop();
    assert!(thread.join().unwrap().is_ok());
}

/// A scripted line (reads from a script, writes recorded) for `serve_line`.
struct Mock(coilwork_test_support::MockStream);

impl Read for Mock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Mock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl coilwork_blocking::SerialLine for Mock {
    fn set_line_timeout(&mut self, _timeout: Duration) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_line_that_fails_ends_serve_line_with_the_error_and_counts_it() {
    use coilwork_test_support::mock::Step;
    let server = SerialServer::new(engine(), SerialServerConfig::new("mock"));
    // A request answered, then end of stream: the line is gone.
    let line = coilwork_test_support::MockStream::new();
    line.push_bytes(&rtu(1, &fc3(0, 1))).push(Step::Timeout).push(Step::Eof);
    let err = server.serve_line(Mock(line.clone())).unwrap_err();
    assert!(
        matches!(err, ServerError::Io(ref e) if e.kind() == ErrorKind::UnexpectedEof),
        "{err:?}"
    );
    assert_eq!(line.written(), rtu(1, &[0x03, 2, 0, 0]));
    assert_eq!(server.stats().line_errors(), 1);
    // A write that fails: the error of the write, not a later read's.
    let line = coilwork_test_support::MockStream::new();
    line.push_bytes(&rtu(1, &fc3(0, 1))).push(Step::Timeout);
    line.fail_writes(Some(ErrorKind::BrokenPipe));
    let err = server.serve_line(Mock(line.clone())).unwrap_err();
    assert!(
        matches!(err, ServerError::Io(ref e) if e.kind() == ErrorKind::BrokenPipe),
        "{err:?}"
    );
    assert_eq!(server.stats().line_errors(), 2);
    assert_eq!(line.queued(), 1, "nothing read after the failed write");
}
