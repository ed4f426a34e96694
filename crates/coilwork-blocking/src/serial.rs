//! Modbus RTU / ASCII server on a serial line (feature `serial`).
//!
//! One line, one [`Session`] of the line kind ([`SessionConfig::serial`]):
//! the session knows the line's RTU silences (t3.5) and its deadlines; this
//! adapter turns [`Output::Wait`]'s deadline into the port's read timeout
//! (at most [`SerialServerConfig::poll_interval`], so a stop is seen within
//! that long) and reports [`Input::Timeout`] when it passes. With `auto_open`, a port that cannot be opened, or
//! that fails while serving, is opened again after `reconnect_delay`.
//!
//! The port is opened with the `serialport` crate, built without libudev.

use crate::ServerError;
use crate::handle::ServerHandle;
use crate::net;
use coilwork_core::{Engine, Input, Output, Session, SessionConfig};
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How long writing one answer to the line may take before the line counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

pub use coilwork_core::Parity;

/// Settings of a [`SerialServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::SerialServerConfig;

/// Counters of a [`SerialServer`].
#[derive(Debug, Default)]
pub struct SerialStats {
    opened: AtomicU64,
    open_failures: AtomicU64,
    line_errors: AtomicU64,
}

impl SerialStats {
    /// Times the port was opened.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
    /// Failed open attempts.
    pub fn open_failures(&self) -> u64 {
        self.open_failures.load(Ordering::Relaxed)
    }
    /// Times an open line failed while serving.
    pub fn line_errors(&self) -> u64 {
        self.line_errors.load(Ordering::Relaxed)
    }
}

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
    opened: Mutex<Option<Box<dyn serialport::SerialPort>>>,
    serving: AtomicBool,
    handle: ServerHandle,
    stats: Arc<SerialStats>,
}

impl std::fmt::Debug for SerialServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialServer")
            .field("config", &self.config)
            .field("handle", &self.handle)
            .field("stats", &self.stats)
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
            opened: Mutex::new(None),
            serving: AtomicBool::new(false),
            handle,
            stats: Arc::new(SerialStats::default()),
        }
    }

    /// Opens the port now (the serial counterpart of `bind`), so a bad path
    /// is reported before serving; [`SerialServer::serve_forever`] then
    /// serves this port first.
    pub fn open(&self) -> Result<(), ServerError> {
        let line = self.open_port().map_err(|source| {
            self.stats.open_failures.fetch_add(1, Ordering::Relaxed);
            ServerError::SerialOpen {
                port: self.config.port.clone(),
                source,
            }
        })?;
        *self.opened.lock().unwrap_or_else(PoisonError::into_inner) = Some(line);
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &SerialServerConfig {
        &self.config
    }

    /// A handle to stop this server from any thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<SerialStats> {
        &self.stats
    }

    /// Stops and blocks until `serve_forever` has returned.
    pub fn shutdown(&self) {
        self.handle.stop();
        if self.serving.load(Ordering::Acquire) {
            self.handle.wait_stopped();
        } else {
            self.handle.mark_stopped();
        }
    }

    /// Opens the port and serves on the calling thread until stopped.
    /// Without `auto_open`, an open or line failure is returned; with it,
    /// the port is opened again after `reconnect_delay`.
    pub fn serve_forever(&self) -> Result<(), ServerError> {
        if self.serving.swap(true, Ordering::AcqRel) {
            return Err(ServerError::AlreadyServing);
        }
        let result = self.run();
        self.handle.mark_stopped();
        result
    }

    fn run(&self) -> Result<(), ServerError> {
        let mut warned = false;
        loop {
            if self.handle.is_stopping() {
                return Ok(());
            }
            let opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner).take();
            match opened.map_or_else(|| self.open_port(), Ok) {
                Ok(line) => {
                    warned = false;
                    self.stats.opened.fetch_add(1, Ordering::Relaxed);
                    debug!(port = %self.config.port, "serial port opened");
                    match self.serve_line(line) {
                        Ok(()) => return Ok(()),
                        Err(e) if self.config.auto_open => {
                            warn!(port = %self.config.port, error = %e, "serial line failed; reopening");
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(source) => {
                    self.stats.open_failures.fetch_add(1, Ordering::Relaxed);
                    if !self.config.auto_open {
                        return Err(ServerError::SerialOpen {
                            port: self.config.port.clone(),
                            source,
                        });
                    }
                    if !warned {
                        warn!(port = %self.config.port, error = %source, "cannot open serial port; retrying");
                        warned = true;
                    }
                }
            }
            if self.handle.sleep_unless_stopped(self.config.reconnect_delay) {
                return Ok(());
            }
        }
    }

    fn open_port(&self) -> std::io::Result<Box<dyn serialport::SerialPort>> {
        let c = &self.config;
        let data_bits = match c.data_bits {
            5 => serialport::DataBits::Five,
            6 => serialport::DataBits::Six,
            7 => serialport::DataBits::Seven,
            _ => serialport::DataBits::Eight,
        };
        let parity = match c.parity {
            Parity::None => serialport::Parity::None,
            Parity::Even => serialport::Parity::Even,
            Parity::Odd => serialport::Parity::Odd,
        };
        let stop_bits = if c.stop_bits >= 2 {
            serialport::StopBits::Two
        } else {
            serialport::StopBits::One
        };
        serialport::new(&c.port, c.baud_rate)
            .data_bits(data_bits)
            .parity(parity)
            .stop_bits(stop_bits)
            .flow_control(serialport::FlowControl::None)
            .timeout(c.poll_interval.max(Duration::from_millis(1)))
            .open()
            .map_err(std::io::Error::from)
    }

    /// Serves one already-open line (a serial port, a socket, any
    /// [`SerialLine`]) on the calling thread until stopped (`Ok`) or until
    /// the line fails or closes (`Err`).
    pub fn serve_line<S: SerialLine>(&self, mut line: S) -> Result<(), ServerError> {
        let c = &self.config;
        let shared = SessionConfig {
            local_echo: c.local_echo,
            max_buffered: c.max_buffered,
            ..SessionConfig::serial(Arc::clone(&self.engine), c.framing, c.baud_rate, c.bits_per_char())
        };
        let mut session = Session::new(Arc::new(shared), Instant::now(), 0, None, None);
        let poll = c.poll_interval.max(Duration::from_millis(1));
        let mut timeout_set: Option<Duration> = None;
        // One buffer per line, reused for every read.
        let mut buf = vec![0u8; 512];
        loop {
            let now = Instant::now();
            match session.poll(now) {
                Output::Transmit(out) => {
                    // A serial port's timeout bounds writes too: give the answer time to go out.
                    if timeout_set != Some(WRITE_TIMEOUT) {
                        line.set_line_timeout(WRITE_TIMEOUT).map_err(|e| self.line_failed(e))?;
                        timeout_set = Some(WRITE_TIMEOUT);
                    }
                    let n = out.len();
                    line.write_all(out)
                        .and_then(|()| line.flush())
                        .map_err(|e| self.line_failed(e))?;
                    session.handle(Instant::now(), Input::Sent(n));
                }
                Output::Pause(until) => {
                    // A stop cuts a pause short; the rest is then written at once.
                    if self.handle.sleep_unless_stopped(until.saturating_duration_since(now)) {
                        session.handle(Instant::now(), Input::Stop);
                    }
                }
                Output::Wait(_) if self.handle.is_stopping() => session.handle(now, Input::Stop),
                Output::Wait(deadline) => {
                    let timeout = net::read_timeout(now, deadline, poll);
                    if timeout_set != Some(timeout) {
                        line.set_line_timeout(timeout).map_err(|e| self.line_failed(e))?;
                        timeout_set = Some(timeout);
                    }
                    let input = match line.read(&mut buf) {
                        Ok(0) => return Err(self.line_failed(ErrorKind::UnexpectedEof.into())),
                        Ok(n) => Input::Bytes(buf.get(..n).unwrap_or(&[])),
                        Err(e) if net::is_timeout(&e) || e.kind() == ErrorKind::Interrupted => Input::Timeout,
                        Err(e) => return Err(self.line_failed(e)),
                    };
                    session.handle(Instant::now(), input);
                }
                Output::Discarded => debug!(port = %c.port, "serial input discarded"),
                Output::ReleaseBuffers => {}
                Output::ReadQueued | Output::Close(_) => return Ok(()),
            }
        }
    }

    fn line_failed(&self, e: std::io::Error) -> ServerError {
        self.stats.line_errors.fetch_add(1, Ordering::Relaxed);
        e.into()
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
    std::thread::Builder::new()
        .name("coilwork-serial".into())
        .spawn(move || {
            if let Err(e) = server.serve_forever() {
                warn!(error = %e, "modbus serial server failed");
            }
        })?;
    Ok(handle)
}
