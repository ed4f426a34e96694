//! The blocking serial server's own API: `auto_open` waiting for a port and
//! reopening it (socat pty pairs), a missing port's error, and `serve_line`
//! ending with a failing line's error.
//! What every adapter must do is the conformance suite's
//! (`coilwork_conformance::replaced` lists the tests it took over).
//!
//! The pty tests need `socat` (`bash .ci/test` installs it): without it they
//! are skipped with a message, unless `COILWORK_REQUIRE_CLIENTS` is set.
#![cfg(all(unix, feature = "serial"))]

mod common;

use coilwork_blocking::{SerialServer, SerialServerConfig, ServerError};
use coilwork_test_support::PtyPair;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    server.handle().stop();
    assert!(server.handle().wait_stopped_timeout(STEP), "serve_forever returns");
    let r = thread.join().unwrap();
    assert!(r.is_ok(), "{r:?}");
}

/// Points `path` at the server end of `pty` (replacing an older link).
fn link(pty: &PtyPair, path: &Path) {
    let _ = std::fs::remove_file(path);
    std::os::unix::fs::symlink(std::fs::read_link(pty.server_end()).unwrap(), path).unwrap();
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
    let mut master = open_client(&pty.client_end());
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
    let mut master = open_client(&pty.client_end());
    master.write_all(&rtu(1, &fc3(0, 1))).unwrap();
    assert_eq!(read_n(&mut master, 7), rtu(1, &[0x03, 0x02, 0x01, 0x02]));
    stop(&server, thread);
    drop(pty);
    let _ = std::fs::remove_dir_all(&dir);
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
