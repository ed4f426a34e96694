//! The blocking serial server's own API: a missing port's error, and
//! `serve_line` ending with a failing line's error.
//! What every adapter must do is the conformance suite's
//! (`coilwork_conformance::replaced` lists the tests it took over).
#![cfg(all(unix, feature = "serial"))]

mod common;

use coilwork_blocking::{SerialServer, SerialServerConfig, ServerError};
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
