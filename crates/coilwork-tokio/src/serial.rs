//! Modbus RTU / ASCII server on a serial line (feature `serial`).
//!
//! One line, one [`Connection`] built with [`ConnectionConfig::serial`]: the
//! connection knows the line's RTU silences (t3.5) and asks for a timer with
//! [`Connection::poll_timeout`]; this adapter sleeps until then and calls
//! [`Connection::handle_timeout`]. With `auto_open`, a port that cannot be
//! opened, or that fails while serving, is opened again after
//! `reconnect_delay`.

use crate::ServerError;
use crate::handle::{ServerHandle, pause_unless_stopped};
use coilwork_core::connection::DEFAULT_MAX_BUFFERED;
use coilwork_core::{Connection, ConnectionConfig, Engine, Framing};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, warn};

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parity {
    /// No parity bit (the spec then asks for 2 stop bits).
    None,
    /// Even parity (the Modbus default).
    #[default]
    Even,
    /// Odd parity.
    Odd,
}

/// Settings of a [`SerialServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialServerConfig {
    /// Device path (`/dev/ttyUSB0`, `COM3`).
    pub port: String,
    /// RTU (default) or ASCII.
    pub framing: Framing,
    /// Baud rate (default 19200, the spec's default).
    pub baud_rate: u32,
    /// Data bits: 7 or 8 (default 8).
    pub data_bits: u8,
    /// Parity (default even).
    pub parity: Parity,
    /// Stop bits: 1 or 2 (default 1).
    pub stop_bits: u8,
    /// 2-wire RS-485 adapters echo what is sent: drop that echo.
    pub local_echo: bool,
    /// Keep trying to open the port (and reopen it after a failure) instead of returning an error.
    pub auto_open: bool,
    /// Wait between open attempts (default 2 s).
    pub reconnect_delay: Duration,
    /// Cap on unframed bytes held.
    pub max_buffered: usize,
    /// After a stop, how long an answer still being written may take before
    /// the line is let go (default 5 s): a line that never takes the bytes
    /// (held by flow control, say) does not hold the stop.
    pub shutdown_timeout: Duration,
}

impl SerialServerConfig {
    /// RTU at 19200 8E1 on `port`, reopened on failure.
    pub fn new(port: impl Into<String>) -> Self {
        Self {
            port: port.into(),
            framing: Framing::Rtu,
            baud_rate: 19_200,
            data_bits: 8,
            parity: Parity::Even,
            stop_bits: 1,
            local_echo: false,
            auto_open: true,
            reconnect_delay: Duration::from_secs(2),
            max_buffered: DEFAULT_MAX_BUFFERED,
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    /// Bits per character on the wire: start + data + parity + stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits) + u32::from(self.parity != Parity::None) + u32::from(self.stop_bits)
    }
}

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
    pub async fn serve_line<S: AsyncRead + AsyncWrite + Unpin>(&self, mut line: S) -> Result<(), ServerError> {
        let c = &self.config;
        let mut conn = Connection::new(
            Arc::clone(&self.engine),
            ConnectionConfig {
                local_echo: c.local_echo,
                max_buffered: c.max_buffered,
                ..ConnectionConfig::serial(c.framing, c.baud_rate, c.bits_per_char())
            },
        );
        let stop = self.handle.token().clone();
        // One buffer per line, reused for every read.
        let mut buf = vec![0u8; 512];
        loop {
            let deadline = conn.poll_timeout().map(Instant::from_std);
            let timer = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ok(()),
                read = line.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => {
                            self.stats.line_errors.fetch_add(1, Ordering::Relaxed);
                            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                        }
                        Ok(n) => n,
                        Err(e) => {
                            self.stats.line_errors.fetch_add(1, Ordering::Relaxed);
                            return Err(e.into());
                        }
                    };
                    let input = conn.handle_input(std::time::Instant::now(), buf.get(..n).unwrap_or(&[]));
                    // Pieces with pauses only when a hook's delivery asked for
                    // them. A stop ends a pause: the rest goes out at once, each
                    // piece given at most `shutdown_timeout` once stopped.
                    while conn.has_output() {
                        let (pause, _) = conn.next_output();
                        pause_unless_stopped(pause, &stop).await;
                        let (_, out) = conn.next_output();
                        let len = out.len();
                        let write = async {
                            line.write_all(out).await?;
                            line.flush().await
                        };
                        let given_up = async {
                            stop.cancelled().await;
                            tokio::time::sleep(c.shutdown_timeout).await;
                        };
                        tokio::select! {
                            biased;
                            written = write => written?,
                            () = given_up => {
                                warn!(port = %c.port, "the line took no answer within the shutdown timeout; letting it go");
                                return Ok(());
                            }
                        }
                        conn.consume_output(len);
                    }
                    if let Err(e) = input {
                        // A line cannot be closed like a socket: drop what is held and go on.
                        debug!(port = %c.port, error = %e, "serial input discarded");
                        conn.discard_partial_frame();
                    }
                }
                () = timer => conn.handle_timeout(std::time::Instant::now()),
            }
        }
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
