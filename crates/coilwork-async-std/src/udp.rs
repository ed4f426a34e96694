//! Modbus over UDP: each datagram is one ADU, answered to its sender.
//!
//! The socket is an [`async_io::Async`] `UdpSocket`, so the server runs under
//! any executor (async-std, smol, `futures_lite::future::block_on`).

use crate::ServerError;
use crate::ServerHandle;
use crate::rt::AsyncIo;
use coilwork_core::{Engine, ServerStats};
use std::sync::Arc;
use tracing::warn;

/// Settings of a [`UdpServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::UdpServerConfig;

/// Counters of a [`UdpServer`]: datagrams received, answered, malformed
/// (not exactly one valid ADU) and refused (allow-list), bytes in and out.
pub type UdpStats = ServerStats;

/// A Modbus/UDP server over an [`Engine`], for any executor (the driver's
/// server type on async-io). [`UdpServer::new`] does not bind.
pub type UdpServer = coilwork_driver::UdpServer<AsyncIo>;

/// Binds `config.address` now and serves `engine` on a thread of its own
/// (driven by `async_io::block_on`, so no runtime is needed); returns the
/// handle to stop it.
pub fn start_udp_server(engine: Arc<Engine>, config: UdpServerConfig) -> Result<ServerHandle, ServerError> {
    let server = UdpServer::new(engine, config);
    server.bind()?;
    let handle = server.handle();
    std::thread::Builder::new().name("coilwork-udp".into()).spawn(move || {
        if let Err(e) = async_io::block_on(server.serve_forever()) {
            warn!(error = %e, "modbus udp server failed");
        }
    })?;
    Ok(handle)
}
