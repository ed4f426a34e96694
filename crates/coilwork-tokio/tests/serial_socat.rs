//! The serial server on real pseudo terminals linked by socat: the server
//! opens one end by its path, the test is the client on the other end.
//!
//! Extends tests/serial.rs (a bare pty pair and in-memory pipes) with what
//! needs a real line between two opened devices: RTU and ASCII round trips,
//! broadcast, local echo arriving through the line, and `auto_open` of a
//! port that appears later.
//!
//! socat is required when `COILWORK_REQUIRE_CLIENTS` is set (`.ci/test`);
//! otherwise a missing socat skips these tests with a message.
#![cfg(all(unix, feature = "serial"))]

mod common;

use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Engine, EngineOptions, Framing};
use coilwork_tokio::{Parity, SerialServer, SerialServerConfig};
use common::{STEP, engine, fc3, fc3_answer, fc16};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "coilwork-socat-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A socat process linking two ptys at `a` and `b`; killed on drop.
struct Socat {
    child: Child,
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn socat_available() -> bool {
    let found = Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("COILWORK_REQUIRE_CLIENTS").is_none(),
            "socat is required (COILWORK_REQUIRE_CLIENTS is set)"
        );
        eprintln!("skipped: socat not installed (bash .ci/test installs it)");
    }
    found
}

/// Starts socat with two linked ptys at `a` and `b` and waits until both links exist.
fn socat(a: &Path, b: &Path) -> Socat {
    let child = Command::new("socat")
        .args(["-d", "-d"])
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start socat");
    let socat = Socat { child };
    let start = Instant::now();
    while !(a.exists() && b.exists()) {
        assert!(start.elapsed() < STEP, "socat made no ptys at {a:?} and {b:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    socat
}

/// Opens the client's end of the line.
fn open_client(path: &Path) -> SerialStream {
    tokio_serial::new(path.to_string_lossy(), 19_200)
        .parity(tokio_serial::Parity::None)
        .open_native_async()
        .expect("open client end")
}

/// RTU at 19200 8N1 on `port`, not reopened.
fn rtu_config(port: &Path) -> SerialServerConfig {
    SerialServerConfig {
        parity: Parity::None,
        auto_open: false,
        ..SerialServerConfig::new(port.to_string_lossy())
    }
}

/// Opens the port now (so a bad path fails here) and serves it on a task.
fn serve(engine: Arc<Engine>, config: SerialServerConfig) -> (Arc<SerialServer>, JoinHandle<()>) {
    let server = Arc::new(SerialServer::new(engine, config));
    server.open().expect("server opens its end");
    let s = Arc::clone(&server);
    let task = tokio::spawn(async move {
        let r = s.serve_forever().await;
        assert!(r.is_ok(), "serve_forever: {r:?}");
    });
    (server, task)
}

async fn stop(server: &SerialServer, task: JoinHandle<()>) {
    tokio::time::timeout(STEP, server.shutdown()).await.expect("stops");
    tokio::time::timeout(STEP, task)
        .await
        .expect("task ends")
        .expect("no panic");
}

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

/// An ASCII frame: `:` + hex(unit, pdu, LRC) + CR LF, LRC written out here.
fn ascii(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut body = vec![unit];
    body.extend_from_slice(pdu);
    let lrc = body.iter().fold(0u8, |a, b| a.wrapping_add(*b)).wrapping_neg();
    body.push(lrc);
    let mut v = b":".to_vec();
    for b in body {
        v.extend_from_slice(format!("{b:02X}").as_bytes());
    }
    v.extend_from_slice(b"\r\n");
    v
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    tokio::time::timeout(STEP, async {
        s.write_all(bytes).await.expect("write");
        s.flush().await.expect("flush");
    })
    .await
    .expect("write in time");
}

async fn read_n<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    tokio::time::timeout(STEP, s.read_exact(&mut v))
        .await
        .expect("answer in time")
        .expect("read");
    v
}

/// True if nothing arrives within `d`.
async fn nothing_within<S: AsyncRead + Unpin>(s: &mut S, d: Duration) -> bool {
    let mut b = [0u8; 256];
    match tokio::time::timeout(d, s.read(&mut b)).await {
        Err(_) => true,
        Ok(Ok(n)) => {
            eprintln!("unexpected bytes: {:02X?}", &b[..n]);
            false
        }
        Ok(Err(e)) => panic!("read: {e}"),
    }
}

fn fc16_echo(addr: u16, qty: u16) -> Vec<u8> {
    let mut v = vec![0x10];
    v.extend_from_slice(&addr.to_be_bytes());
    v.extend_from_slice(&qty.to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_write_then_read_through_socat() {
    if !socat_available() {
        return;
    }
    let dir = TempDir::new("rtu");
    let (a, b) = (dir.0.join("a"), dir.0.join("b"));
    let _socat = socat(&a, &b);
    let (server, task) = serve(engine(), rtu_config(&a));
    let mut line = open_client(&b);

    let values = [0x1234, 0xFFFF, 0x0000, 0x8001, 42];
    send(&mut line, &rtu(1, &fc16(100, &values))).await;
    assert_eq!(read_n(&mut line, 8).await, rtu(1, &fc16_echo(100, 5)));
    send(&mut line, &rtu(1, &fc3(100, 5))).await;
    assert_eq!(read_n(&mut line, 5 + 10).await, rtu(1, &fc3_answer(&values)));
    // Another unit id reads the same single device; the answer names it.
    send(&mut line, &rtu(0x11, &fc3(101, 1))).await;
    assert_eq!(read_n(&mut line, 7).await, rtu(0x11, &fc3_answer(&[0xFFFF])));
    // A frame with a bad CRC is dropped silently, and the line goes on.
    let mut bad = rtu(1, &fc3(100, 1));
    *bad.last_mut().unwrap() ^= 0xFF;
    send(&mut line, &bad).await;
    assert!(
        nothing_within(&mut line, Duration::from_millis(200)).await,
        "bad CRC not answered"
    );
    send(&mut line, &rtu(1, &fc3(104, 1))).await;
    assert_eq!(read_n(&mut line, 7).await, rtu(1, &fc3_answer(&[42])));
    // An exception travels back as a frame too: past the 1000 registers.
    send(&mut line, &rtu(1, &fc3(999, 2))).await;
    assert_eq!(read_n(&mut line, 5).await, rtu(1, &[0x83, 0x02]));

    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ascii_write_then_read_through_socat() {
    if !socat_available() {
        return;
    }
    let dir = TempDir::new("ascii");
    let (a, b) = (dir.0.join("a"), dir.0.join("b"));
    let _socat = socat(&a, &b);
    let config = SerialServerConfig {
        framing: Framing::Ascii,
        data_bits: 7,
        ..rtu_config(&a)
    };
    let (server, task) = serve(engine(), config);
    let mut line = open_client(&b);

    let values = [0xBEEF, 7, 0x0A0D];
    let want = ascii(2, &fc16_echo(10, 3));
    send(&mut line, &ascii(2, &fc16(10, &values))).await;
    assert_eq!(read_n(&mut line, want.len()).await, want);
    let want = ascii(2, &fc3_answer(&values));
    send(&mut line, &ascii(2, &fc3(10, 3))).await;
    assert_eq!(read_n(&mut line, want.len()).await, want);
    // Byte by byte with pauses: ASCII has no silence rule, the frame still counts.
    let req = ascii(2, &fc3(11, 1));
    for chunk in req.chunks(4) {
        send(&mut line, chunk).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let want = ascii(2, &fc3_answer(&[7]));
    assert_eq!(read_n(&mut line, want.len()).await, want);
    // A wrong LRC is dropped silently.
    let mut bad = ascii(2, &fc3(10, 1));
    let n = bad.len();
    bad[n - 3] = if bad[n - 3] == b'0' { b'1' } else { b'0' };
    send(&mut line, &bad).await;
    assert!(
        nothing_within(&mut line, Duration::from_millis(200)).await,
        "bad LRC not answered"
    );

    stop(&server, task).await;
}

fn broadcast_engine(broadcast_enable: bool) -> Arc<Engine> {
    let device = DeviceContext::with_sizes(100, 100, 100, 100).expect("device");
    let options = EngineOptions {
        broadcast_enable,
        ..EngineOptions::default()
    };
    Arc::new(Engine::builder(ServerContext::single(device)).options(options).build())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_write_is_applied_and_not_answered() {
    if !socat_available() {
        return;
    }
    let dir = TempDir::new("broadcast");
    let (a, b) = (dir.0.join("a"), dir.0.join("b"));
    let _socat = socat(&a, &b);
    let (server, task) = serve(broadcast_engine(true), rtu_config(&a));
    let mut line = open_client(&b);

    send(&mut line, &rtu(0, &fc16(3, &[0x0101, 0x0202]))).await;
    assert!(
        nothing_within(&mut line, Duration::from_millis(200)).await,
        "a broadcast is never answered"
    );
    send(&mut line, &rtu(1, &fc3(3, 2))).await;
    assert_eq!(read_n(&mut line, 9).await, rtu(1, &fc3_answer(&[0x0101, 0x0202])));
    // FC6 broadcast too; a broadcast read is not answered either.
    send(&mut line, &rtu(0, &[0x06, 0x00, 0x05, 0x00, 0x63])).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    send(&mut line, &rtu(0, &fc3(5, 1))).await;
    assert!(
        nothing_within(&mut line, Duration::from_millis(200)).await,
        "no answer to unit 0"
    );
    send(&mut line, &rtu(7, &fc3(5, 1))).await;
    assert_eq!(read_n(&mut line, 7).await, rtu(7, &fc3_answer(&[0x63])));

    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_zero_is_ignored_without_broadcast_enable() {
    if !socat_available() {
        return;
    }
    let dir = TempDir::new("no-broadcast");
    let (a, b) = (dir.0.join("a"), dir.0.join("b"));
    let _socat = socat(&a, &b);
    let (server, task) = serve(broadcast_engine(false), rtu_config(&a));
    let mut line = open_client(&b);

    send(&mut line, &rtu(0, &fc16(3, &[0x0101, 0x0202]))).await;
    assert!(
        nothing_within(&mut line, Duration::from_millis(200)).await,
        "unit 0 not answered"
    );
    send(&mut line, &rtu(1, &fc3(3, 2))).await;
    assert_eq!(
        read_n(&mut line, 9).await,
        rtu(1, &fc3_answer(&[0, 0])),
        "write not applied"
    );

    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_echo_through_the_line_is_not_a_request() {
    if !socat_available() {
        return;
    }
    let dir = TempDir::new("echo");
    let (a, b) = (dir.0.join("a"), dir.0.join("b"));
    let _socat = socat(&a, &b);
    let config = SerialServerConfig {
        local_echo: true,
        ..rtu_config(&a)
    };
    let (server, task) = serve(engine(), config);
    let mut line = open_client(&b);

    // FC6's answer equals its request: an echo taken for a request would
    // run again and be answered a second time.
    let fc6 = rtu(1, &[0x06, 0x00, 0x01, 0x00, 0x2A]);
    send(&mut line, &fc6).await;
    let answer = read_n(&mut line, 8).await;
    assert_eq!(answer, fc6);
    // The echo comes back in two pieces, further apart than t3.5.
    send(&mut line, &answer[..3]).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    send(&mut line, &answer[3..]).await;
    assert!(
        nothing_within(&mut line, Duration::from_millis(200)).await,
        "the echo was not answered"
    );

    // Next: an FC16 whose echo arrives glued to the following request.
    let write = rtu(1, &fc16(2, &[0x0B, 0x0C]));
    send(&mut line, &write).await;
    let answer = read_n(&mut line, 8).await;
    assert_eq!(answer, rtu(1, &fc16_echo(2, 2)));
    let mut glued = answer.clone();
    glued.extend_from_slice(&rtu(1, &fc3(1, 3)));
    send(&mut line, &glued).await;
    assert_eq!(read_n(&mut line, 11).await, rtu(1, &fc3_answer(&[0x2A, 0x0B, 0x0C])));
    // Its echo is dropped too; nothing more comes.
    send(&mut line, &rtu(1, &fc3_answer(&[0x2A, 0x0B, 0x0C]))).await;
    assert!(
        nothing_within(&mut line, Duration::from_millis(200)).await,
        "no stray answer"
    );
    // And the line still serves.
    send(&mut line, &rtu(1, &fc3(3, 1))).await;
    assert_eq!(read_n(&mut line, 7).await, rtu(1, &fc3_answer(&[0x0C])));

    stop(&server, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_open_waits_for_a_port_that_appears_later() {
    if !socat_available() {
        return;
    }
    let dir = TempDir::new("auto-open");
    let (a, b) = (dir.0.join("a"), dir.0.join("b"));
    let config = SerialServerConfig {
        auto_open: true,
        reconnect_delay: Duration::from_millis(100),
        ..rtu_config(&a)
    };
    // No `open()` first: the port does not exist yet.
    let server = Arc::new(SerialServer::new(engine(), config));
    let s = Arc::clone(&server);
    let task = tokio::spawn(async move {
        let r = s.serve_forever().await;
        assert!(r.is_ok(), "serve_forever: {r:?}");
    });

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.stats().opened(), 0);
    let failures = server.stats().open_failures();
    assert!(
        (2..=8).contains(&failures),
        "retried every 100 ms: {failures} failures in 500 ms"
    );

    let _socat = socat(&a, &b);
    let start = Instant::now();
    while server.stats().opened() == 0 {
        assert!(start.elapsed() < STEP, "server never opened the new port");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "opened {:?} after the port appeared",
        start.elapsed()
    );
    let mut line = open_client(&b);
    send(&mut line, &rtu(1, &fc16(0, &[5, 6]))).await;
    assert_eq!(read_n(&mut line, 8).await, rtu(1, &fc16_echo(0, 2)));
    send(&mut line, &rtu(1, &fc3(0, 2))).await;
    assert_eq!(read_n(&mut line, 9).await, rtu(1, &fc3_answer(&[5, 6])));
    assert_eq!(server.stats().opened(), 1);

    tokio::time::timeout(STEP, server.shutdown()).await.expect("stops");
    tokio::time::timeout(STEP, task)
        .await
        .expect("task ends")
        .expect("no panic");
}
