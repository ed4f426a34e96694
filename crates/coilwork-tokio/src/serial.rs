//! Modbus RTU / ASCII server on a serial line (feature `serial`).
//!
//! One line, one [`Session`] of the line kind ([`SessionConfig::serial`]):
//! the session knows the line's RTU silences (t3.5) and its deadlines; this
//! adapter reads, sleeps and writes as [`Session::poll`] says. With `auto_open`, a port that cannot be
//! opened, or that fails while serving, is opened again after
//! `reconnect_delay`.

use crate::ServerError;
use crate::handle::ServerHandle;
use crate::rt::{Io, Tokio};
use coilwork_core::{Engine, SessionConfig};
use coilwork_driver::LineError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

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
    opened: Mutex<Option<tokio_serial::SerialStream>>,
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
    /// serves this port first. Must be called within a tokio runtime.
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
        let stop = self.handle.token().clone();
        let mut warned = false;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner).take();
            match opened.map_or_else(|| self.open_port(), Ok) {
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
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.config.reconnect_delay) => {}
            }
        }
    }

    fn open_port(&self) -> std::io::Result<tokio_serial::SerialStream> {
        use tokio_serial::SerialPortBuilderExt;
        let c = &self.config;
        let data_bits = match c.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        };
        let parity = match c.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        };
        let stop_bits = if c.stop_bits >= 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        };
        tokio_serial::new(&c.port, c.baud_rate)
            .data_bits(data_bits)
            .parity(parity)
            .stop_bits(stop_bits)
            .flow_control(tokio_serial::FlowControl::None)
            .open_native_async()
            .map_err(std::io::Error::from)
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
        match coilwork_driver::serve_line::<Tokio, _>(&mut line, shared, &self.handle, c.shutdown_timeout).await {
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

/// Opens `config.port` and serves `engine` on a spawned task; returns the handle to stop it.
pub fn start_serial_server(engine: Arc<Engine>, config: SerialServerConfig) -> ServerHandle {
    let server = SerialServer::new(engine, config);
    let handle = server.handle();
    tokio::spawn(async move {
        if let Err(e) = server.serve_forever().await {
            warn!(error = %e, "modbus serial server failed");
        }
    });
    handle
}
