//! Modbus RTU / ASCII server on a serial line (feature `serial`).
//!
//! The server type and its loop are `coilwork-driver`'s; this module opens
//! the port with tokio-serial. With `auto_open`, a port that cannot be
//! opened, or that fails while serving, is opened again after
//! `reconnect_delay`.

use crate::ServerHandle;
use crate::rt::{Io, Tokio};
use coilwork_core::Engine;
use coilwork_driver::{LineOf, SerialAdapter};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

pub use coilwork_core::Parity;
pub use coilwork_driver::SerialStats;

/// Settings of a [`SerialServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::SerialServerConfig;

/// A Modbus server on one serial line, on tokio (the driver's server type).
pub type SerialServer = coilwork_driver::SerialServer<Tokio>;

impl SerialAdapter for Tokio {
    type Port = Io<tokio_serial::SerialStream>;

    fn open_port(config: &SerialServerConfig) -> std::io::Result<Io<tokio_serial::SerialStream>> {
        use tokio_serial::SerialPortBuilderExt;
        let port = coilwork_net::serial_port(config).open_native_async();
        port.map(Io).map_err(std::io::Error::from)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> LineOf<S> for Tokio {
    type Line = Io<S>;
    fn line(stream: S) -> Io<S> {
        Io(stream)
    }
}

/// Opens `config.port` and serves `engine` on a spawned task; returns the handle to stop it.
pub fn start_serial_server(engine: Arc<Engine>, config: SerialServerConfig) -> ServerHandle {
    let server = SerialServer::new(engine, config);
    let handle = server.handle();
    crate::rt::spawn_server("modbus serial server", async move { server.serve_forever().await });
    handle
}
