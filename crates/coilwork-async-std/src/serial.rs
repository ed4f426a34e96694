//! Modbus RTU / ASCII server on a serial line (feature `serial`, unix).
//!
//! The port is opened and set up with termios (through `rustix`: raw mode,
//! baud rate, data bits, parity, stop bits, no flow control, exclusive
//! access), and its file descriptor is driven by [`async_io::Async`], so the
//! server runs under async-std, smol or any `block_on`.
//!
//! One line, one [`Session`] of the line kind ([`SessionConfig::serial`]):
//! the session knows the line's RTU silences (t3.5) and its deadlines; this
//! adapter reads, sets an `async-io` timer and writes as [`Session::poll`]
//! says. With `auto_open`, a port
//! that cannot be opened, or that fails while serving, is opened again after
//! `reconnect_delay`.

use crate::ServerError;
use crate::handle::ServerHandle;
use crate::rt::{AsyncIo, Io};
use async_io::{Async, Timer};
use coilwork_core::{Engine, SessionConfig};
use coilwork_driver::LineError;
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncWrite};
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{debug, warn};

/// An open serial port, driven by the async-io reactor.
pub type SerialPort = Async<File>;

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

/// A Modbus server on one serial line.
#[derive(Debug)]
pub struct SerialServer {
    engine: Arc<Engine>,
    config: SerialServerConfig,
    opened: Mutex<Option<SerialPort>>,
    serving: AtomicBool,
    handle: ServerHandle,
    stats: Arc<SerialStats>,
}

impl SerialServer {
    /// A server for `engine`; the port is opened by [`SerialServer::serve_forever`].
    pub fn new(engine: Arc<Engine>, config: SerialServerConfig) -> Self {
        Self {
            engine,
            config,
            opened: Mutex::new(None),
            serving: AtomicBool::new(false),
            handle: ServerHandle::new(),
            stats: Arc::new(SerialStats::default()),
        }
    }

    /// Opens the port now (the serial counterpart of `bind`), so a bad path
    /// is reported before serving; [`SerialServer::serve_forever`] then
    /// serves this port first.
    pub fn open(&self) -> Result<(), ServerError> {
        let line = open_port(&self.config).map_err(|source| {
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

    /// A handle to stop this server from anywhere.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<SerialStats> {
        &self.stats
    }

    /// Stops and waits until `serve_forever` has returned.
    pub async fn shutdown(&self) {
        self.handle.stop();
        if self.serving.load(Ordering::Acquire) {
            self.handle.stopped().await;
        } else {
            self.handle.mark_stopped();
        }
    }

    /// Opens the port and serves until stopped. Without `auto_open`, an open
    /// or line failure is returned; with it, the port is opened again after
    /// `reconnect_delay`.
    pub async fn serve_forever(&self) -> Result<(), ServerError> {
        if self.serving.swap(true, Ordering::AcqRel) {
            return Err(ServerError::AlreadyServing);
        }
        let result = self.run().await;
        self.handle.mark_stopped();
        result
    }

    async fn run(&self) -> Result<(), ServerError> {
        let stop = self.handle.stop_signal();
        let mut warned = false;
        loop {
            if stop.is_raised() {
                return Ok(());
            }
            let opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner).take();
            match opened.map_or_else(|| open_port(&self.config), Ok) {
                Ok(line) => {
                    warned = false;
                    self.stats.opened.fetch_add(1, Ordering::Relaxed);
                    debug!(port = %self.config.port, "serial port opened");
                    match self.serve_line(line).await {
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
            let stopped = future::or(
                async {
                    stop.raised().await;
                    true
                },
                async {
                    Timer::after(self.config.reconnect_delay).await;
                    false
                },
            )
            .await;
            if stopped {
                return Ok(());
            }
        }
    }

    /// Serves one already-open line (a serial port, a pty, any byte pipe)
    /// until stopped (`Ok`) or until the line fails or closes (`Err`).
    pub async fn serve_line<S: AsyncRead + AsyncWrite + Unpin + Send>(&self, line: S) -> Result<(), ServerError> {
        let c = &self.config;
        let shared = SessionConfig {
            local_echo: c.local_echo,
            max_buffered: c.max_buffered,
            ..SessionConfig::serial(Arc::clone(&self.engine), c.framing, c.baud_rate, c.bits_per_char())
        };
        let mut line = Io(line);
        match coilwork_driver::serve_line::<AsyncIo, _>(&mut line, shared, &self.handle, c.shutdown_timeout).await {
            Ok(()) => Ok(()),
            Err(LineError::Read(e)) => Err(self.line_failed(e)),
            Err(LineError::Write(e)) => Err(e.into()),
        }
    }

    fn line_failed(&self, e: std::io::Error) -> ServerError {
        self.stats.line_errors.fetch_add(1, Ordering::Relaxed);
        e.into()
    }
}

/// Opens `config.port` non-blocking, sets up the line with termios, and registers it with async-io.
pub fn open_port(config: &SerialServerConfig) -> std::io::Result<SerialPort> {
    use rustix::fs::{Mode, OFlags};
    use rustix::termios::{self, ControlModes, InputModes, OptionalActions};
    let fd = rustix::fs::open(
        config.port.as_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut t = termios::tcgetattr(&fd)?;
    t.make_raw();
    t.set_speed(config.baud_rate)?;
    let size = match config.data_bits {
        5 => ControlModes::CS5,
        6 => ControlModes::CS6,
        7 => ControlModes::CS7,
        _ => ControlModes::CS8,
    };
    let parity = match config.parity {
        Parity::None => ControlModes::empty(),
        Parity::Even => ControlModes::PARENB,
        Parity::Odd => ControlModes::PARENB | ControlModes::PARODD,
    };
    let stop = if config.stop_bits >= 2 {
        ControlModes::CSTOPB
    } else {
        ControlModes::empty()
    };
    t.control_modes.remove(
        ControlModes::CSIZE
            | ControlModes::PARENB
            | ControlModes::PARODD
            | ControlModes::CSTOPB
            | ControlModes::CRTSCTS,
    );
    t.control_modes
        .insert(size | parity | stop | ControlModes::CREAD | ControlModes::CLOCAL);
    t.input_modes
        .remove(InputModes::IXON | InputModes::IXOFF | InputModes::IXANY);
    termios::tcsetattr(&fd, OptionalActions::Now, &t)?;
    // Like other serial libraries: one server per port. Not every device supports it.
    let _ = termios::ioctl_tiocexcl(&fd);
    Async::new(File::from(fd))
}

/// Opens `config.port` and serves `engine` on a thread of its own (driven by
/// `async_io::block_on`); returns the handle to stop it.
pub fn start_serial_server(engine: Arc<Engine>, config: SerialServerConfig) -> Result<ServerHandle, ServerError> {
    let server = SerialServer::new(engine, config);
    let handle = server.handle();
    std::thread::Builder::new()
        .name("coilwork-serial".into())
        .spawn(move || {
            if let Err(e) = async_io::block_on(server.serve_forever()) {
                warn!(error = %e, "modbus serial server failed");
            }
        })?;
    Ok(handle)
}
