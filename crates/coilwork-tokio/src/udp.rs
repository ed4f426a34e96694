//! Modbus over UDP: each datagram is one ADU, answered to its sender.

use crate::ServerError;
use crate::ServerHandle;
use crate::rt::Tokio;
use coilwork_core::{Engine, ServerStats};
use std::sync::Arc;

/// Settings of a [`UdpServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::UdpServerConfig;

/// Counters of a [`UdpServer`]: datagrams received, answered, malformed
/// (not exactly one valid ADU) and refused (allow-list), bytes in and out.
pub type UdpStats = ServerStats;

/// A Modbus/UDP server over an [`Engine`], on tokio (the driver's server
/// type). [`UdpServer::new`] does not bind.
pub type UdpServer = coilwork_driver::UdpServer<Tokio>;

/// Binds `config.address` and serves `engine` on a spawned task; returns the handle to stop it.
pub async fn start_udp_server(engine: Arc<Engine>, config: UdpServerConfig) -> Result<ServerHandle, ServerError> {
    let server = UdpServer::new(engine, config);
    server.bind()?;
    let handle = server.handle();
    crate::rt::spawn_server("modbus udp server", async move { server.serve_forever().await });
    Ok(handle)
}
