//! The serial server type, written once: open the port (again after
//! `reconnect_delay` with `auto_open`), serve the line with [`serve_line`],
//! stop gracefully. An adapter supplies only how a port is opened.

use crate::seam::{ByteStream, Stop};
use crate::serial::{LineError, serve_line};
use crate::server::{Adapter, Handle};
use crate::time::sleep_unless_stopped;
use coilwork_core::options::SerialServerConfig;
use coilwork_core::{Engine, SerialStats, ServerError, ServerStats, SessionConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{debug, warn};

/// An adapter's serial ports.
pub trait SerialAdapter: Adapter {
    /// An open port, driven by the runtime.
    type Port: ByteStream + 'static;
    /// Opens and sets up `config.port`.
    fn open_port(config: &SerialServerConfig) -> std::io::Result<Self::Port>;
}

/// How an adapter serves any byte stream of its runtime `S` as a line.
pub trait LineOf<S>: Adapter {
    /// `S` as the driver's stream.
    type Line: ByteStream;
    /// Wraps `stream`.
    fn line(stream: S) -> Self::Line;
}

/// A Modbus RTU / ASCII server on one serial line.
#[derive(Debug)]
pub struct SerialServer<A: SerialAdapter> {
    engine: Arc<Engine>,
    config: SerialServerConfig,
    opened: Mutex<Option<A::Port>>,
    serving: AtomicBool,
    handle: A::Handle,
    stats: Arc<SerialStats>,
    /// Bytes in and out of every line served (the sessions count them).
    server_stats: Arc<ServerStats>,
}

impl<A: SerialAdapter> SerialServer<A> {
    /// A server for `engine`; the port is opened by `serve_forever`.
    pub fn new(engine: Arc<Engine>, config: SerialServerConfig) -> Self {
        Self {
            engine,
            config,
            opened: Mutex::new(None),
            serving: AtomicBool::new(false),
            handle: A::Handle::default(),
            stats: Arc::new(SerialStats::default()),
            server_stats: Arc::new(ServerStats::default()),
        }
    }

    /// Opens the port now (the serial counterpart of `bind`), so a bad path
    /// is reported before serving; `serve_forever` then serves this port
    /// first. On tokio: must be called within a runtime.
    pub fn open(&self) -> Result<(), ServerError> {
        let line = self.open_port()?;
        *self.opened.lock().unwrap_or_else(PoisonError::into_inner) = Some(line);
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &SerialServerConfig {
        &self.config
    }

    /// A handle to stop this server from anywhere.
    pub fn handle(&self) -> A::Handle {
        self.handle.clone()
    }

    /// The counters of the port: opens, open failures, line errors.
    pub fn stats(&self) -> &Arc<SerialStats> {
        &self.stats
    }

    /// The session counters of every line served, across reopens: bytes
    /// in and out (a line has no connections to accept or close).
    pub fn server_stats(&self) -> &Arc<ServerStats> {
        &self.server_stats
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
        let mut warned = false;
        while !self.handle.is_raised() {
            let opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner).take();
            match opened.map_or_else(|| self.open_port(), Ok) {
                Ok(mut line) => {
                    warned = false;
                    self.stats.count_opened();
                    debug!(port = %self.config.port, "serial port opened");
                    match self.serve(&mut line).await {
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
            let delay = A::now().checked_add(self.config.reconnect_delay);
            if sleep_unless_stopped::<A>(delay.unwrap_or_else(A::now), &self.handle).await {
                return Ok(());
            }
        }
        Ok(())
    }

    fn open_port(&self) -> Result<A::Port, ServerError> {
        A::open_port(&self.config).map_err(|source| {
            self.stats.count_open_failure();
            ServerError::SerialOpen {
                port: self.config.port.clone(),
                source,
            }
        })
    }

    /// Serves one already-open line (a serial port, a pty, any byte pipe of
    /// the adapter's runtime) until stopped (`Ok`) or until the line fails
    /// or closes (`Err`).
    pub async fn serve_line<S>(&self, line: S) -> Result<(), ServerError>
    where
        A: LineOf<S>,
    {
        self.serve(&mut A::line(line)).await
    }

    async fn serve<L: ByteStream>(&self, line: &mut L) -> Result<(), ServerError> {
        let shared = SessionConfig {
            stats: Arc::clone(&self.server_stats),
            ..self.config.session(Arc::clone(&self.engine))
        };
        match serve_line::<A, L>(line, shared, &self.handle, self.config.shutdown_timeout).await {
            Ok(()) => Ok(()),
            Err(LineError::Read(e)) => {
                self.stats.count_line_error();
                Err(e.into())
            }
            Err(LineError::Write(e)) => Err(e.into()),
        }
    }
}
