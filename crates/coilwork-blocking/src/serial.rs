//! Modbus RTU / ASCII server on a serial line (feature `serial`).
//!
//! One line, one [`Session`] of the line kind ([`SessionConfig::serial`](coilwork_core::SessionConfig::serial)):
//! the session knows the line's RTU silences (t3.5) and its deadlines; this
//! adapter turns [`Output::Wait`](coilwork_core::Output::Wait)'s deadline into the port's read timeout
//! (at most [`SerialServerConfig::poll_interval`], so a stop is seen within
//! that long) and reports [`Input::Timeout`] when it passes. With `auto_open`, a port that cannot be opened, or
//! that fails while serving, is opened again after `reconnect_delay`.
//!
//! The port is opened with the `serialport` crate, built without libudev.

use crate::ServerError;
use crate::drive::{Link, drive, in_background, is_timeout, read_timeout};
use crate::handle::{Lifecycle, ServerHandle};
use coilwork_core::{Engine, Input, ServerStats, Session, SessionConfig};
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How long writing one answer to the line may take before the line counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

pub use coilwork_core::Parity;

/// Settings of a [`SerialServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::SerialServerConfig;

/// Counters of a [`SerialServer`] (the core's, shared by every adapter).
pub use coilwork_core::SerialStats;

/// A byte line [`SerialServer::serve_line`] can serve: a serial port, or
/// any stream whose read timeout can be set (a socket, for tests and bridges).
pub trait SerialLine: Read + Write {
    /// Sets how long the next reads (and, on a serial port, writes) may block.
    fn set_line_timeout(&mut self, timeout: Duration) -> std::io::Result<()>;
}

impl SerialLine for Box<dyn serialport::SerialPort> {
    fn set_line_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.set_timeout(timeout).map_err(std::io::Error::from)
    }
}

impl SerialLine for std::net::TcpStream {
    fn set_line_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

#[cfg(unix)]
impl SerialLine for std::os::unix::net::UnixStream {
    fn set_line_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

/// A blocking Modbus server on one serial line.
pub struct SerialServer {
    engine: Arc<Engine>,
    config: SerialServerConfig,
    /// The port opened by [`SerialServer::open`], until served.
    life: Lifecycle<Box<dyn serialport::SerialPort>>,
    stats: Arc<SerialStats>,
    /// The line's traffic: bytes, requests, answers, dropped frames.
    server_stats: Arc<ServerStats>,
}

impl std::fmt::Debug for SerialServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialServer")
            .field("config", &self.config)
            .field("handle", &self.life.handle)
            .field("stats", &self.stats)
            .field("server_stats", &self.server_stats)
            .finish_non_exhaustive()
    }
}

impl SerialServer {
    /// A server for `engine`; the port is opened by [`SerialServer::serve_forever`].
    pub fn new(engine: Arc<Engine>, config: SerialServerConfig) -> Self {
        Self::with_handle(engine, config, ServerHandle::new())
    }

    /// A server stopped by `handle` (keep a clone to stop a server that blocks its thread).
    pub fn with_handle(engine: Arc<Engine>, config: SerialServerConfig, handle: ServerHandle) -> Self {
        Self {
            engine,
            config,
            life: Lifecycle::new(handle),
            stats: Arc::new(SerialStats::default()),
            server_stats: Arc::new(ServerStats::default()),
        }
    }

    /// Opens the port now (the serial counterpart of `bind`), so a bad path
    /// is reported before serving; [`SerialServer::serve_forever`] then
    /// serves this port first.
    pub fn open(&self) -> Result<(), ServerError> {
        self.life.put(self.open_port()?);
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &SerialServerConfig {
        &self.config
    }

    /// A handle to stop this server from any thread.
    pub fn handle(&self) -> ServerHandle {
        self.life.handle.clone()
    }

    /// The port's counters: opens, open failures, line errors.
    pub fn stats(&self) -> &Arc<SerialStats> {
        &self.stats
    }

    /// The traffic counters of every line this server has served (bytes,
    /// requests, answers, dropped frames), as the TCP servers count theirs.
    pub fn server_stats(&self) -> &Arc<ServerStats> {
        &self.server_stats
    }

    /// Stops and blocks until `serve_forever` has returned.
    pub fn shutdown(&self) {
        self.life.shutdown();
    }

    /// Opens the port and serves on the calling thread until stopped.
    /// Without `auto_open`, an open or line failure is returned; with it,
    /// the port is opened again after `reconnect_delay`.
    pub fn serve_forever(&self) -> Result<(), ServerError> {
        self.life.serve(|| self.run())
    }

    fn run(&self) -> Result<(), ServerError> {
        let mut warned = false;
        let handle = &self.life.handle;
        while !handle.is_stopping() {
            match self.life.take().map_or_else(|| self.open_port(), Ok) {
                Ok(line) => {
                    warned = false;
                    self.stats.count_opened();
                    debug!(port = %self.config.port, "serial port opened");
                    match self.serve_line(line) {
                        Ok(()) => return Ok(()),
                        Err(e) if self.config.auto_open => {
                            warn!(port = %self.config.port, error = %e, "serial line failed; reopening");
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if !self.config.auto_open => return Err(e),
                Err(e) if !warned => {
                    warn!(port = %self.config.port, error = %e, "cannot open serial port; retrying");
                    warned = true;
                }
                Err(_) => {}
            }
            handle.sleep_unless_stopped(self.config.reconnect_delay);
        }
        Ok(())
    }

    fn open_port(&self) -> Result<Box<dyn serialport::SerialPort>, ServerError> {
        let port = coilwork_net::serial_port(&self.config)
            .timeout(self.config.poll_interval.max(Duration::from_millis(1)))
            .open();
        port.map_err(|e| {
            self.stats.count_open_failure();
            ServerError::SerialOpen {
                port: self.config.port.clone(),
                source: e.into(),
            }
        })
    }

    /// Serves one already-open line (a serial port, a socket, any
    /// [`SerialLine`]) on the calling thread until stopped (`Ok`) or until
    /// the line fails or closes (`Err`).
    pub fn serve_line<S: SerialLine>(&self, line: S) -> Result<(), ServerError> {
        let shared = SessionConfig {
            stats: Arc::clone(&self.server_stats),
            ..self.config.session(Arc::clone(&self.engine))
        };
        let mut session = Session::new(Arc::new(shared), Instant::now(), 0, None, None);
        let mut link = LineLink {
            line,
            handle: &self.life.handle,
            poll: self.config.poll_interval.max(Duration::from_millis(1)),
            timeout_set: None,
            // One buffer per line, reused for every read.
            buf: vec![0u8; 512],
            error: None,
        };
        drive(&mut session, &mut link);
        link.error.map_or(Ok(()), |e| {
            self.stats.count_line_error();
            Err(e.into())
        })
    }
}

/// One line as [`drive`] sees it: the session's deadlines become the port's
/// read timeout, at most `poll` (so a stop is seen within that long).
struct LineLink<'a, S> {
    line: S,
    handle: &'a ServerHandle,
    poll: Duration,
    /// The line's timeout as last set.
    timeout_set: Option<Duration>,
    buf: Vec<u8>,
    /// Why the line failed, once it did.
    error: Option<std::io::Error>,
}

impl<S: SerialLine> LineLink<'_, S> {
    fn set_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        if self.timeout_set != Some(timeout) {
            self.line.set_line_timeout(timeout)?;
            self.timeout_set = Some(timeout);
        }
        Ok(())
    }

    /// Reads once within `timeout`.
    fn read(&mut self, timeout: Duration) -> std::io::Result<usize> {
        self.set_timeout(timeout)?;
        match self.line.read(&mut self.buf) {
            Ok(0) => Err(ErrorKind::UnexpectedEof.into()),
            other => other,
        }
    }
}

impl<S: SerialLine> Link for LineLink<'_, S> {
    fn handle(&self) -> &ServerHandle {
        self.handle
    }

    fn write(&mut self, out: &[u8]) -> std::io::Result<()> {
        // A serial port's timeout bounds writes too: give the answer time to go out.
        let written = self
            .set_timeout(WRITE_TIMEOUT)
            .and_then(|()| self.line.write_all(out))
            .and_then(|()| self.line.flush());
        written.map_err(|e| {
            let kind = e.kind();
            self.error = Some(e);
            kind.into()
        })
    }

    fn wait(&mut self, session: &mut Session, deadline: Option<Instant>) {
        let now = Instant::now();
        let input = match self.read(read_timeout(now, deadline, self.poll)) {
            Ok(n) => Input::Bytes(self.buf.get(..n).unwrap_or(&[])),
            Err(e) if is_timeout(&e) => Input::Timeout,
            Err(e) => {
                self.error = Some(e);
                Input::Failed
            }
        };
        session.handle(Instant::now(), input);
    }
}

/// Opens `config.port` and serves `engine` on the calling thread (pymodbus `StartSerialServer`).
pub fn start_serial_server(engine: Arc<Engine>, config: SerialServerConfig) -> Result<(), ServerError> {
    SerialServer::new(engine, config).serve_forever()
}

/// Serves `engine` on `config.port` from a new thread; returns the handle that stops it.
pub fn start_serial_server_in_background(
    engine: Arc<Engine>,
    config: SerialServerConfig,
) -> Result<ServerHandle, ServerError> {
    let server = SerialServer::new(engine, config);
    let handle = server.handle();
    in_background("coilwork-serial", move || server.serve_forever())?;
    Ok(handle)
}
