//! Modbus/TCP server: one task per connection.
//!
//! The accept loop and each connection's loop are `coilwork-driver`'s
//! ([`coilwork_driver::serve_listener`]), run on tokio: connections are
//! spawned tasks, timers are tokio timers, and the accepted socket is served
//! as it is (plain TCP) or after a TLS handshake (the `tls` module's upgrade).

use crate::ServerError;
use crate::ServerHandle;
use crate::rt::Tokio;
use coilwork_core::{Engine, Overflow, ServerStats};
use std::sync::Arc;

/// What to do with a new client when `max_connections` are open.
pub type OverflowPolicy = Overflow;

/// Settings of a [`TcpServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::TcpServerConfig;

/// Counters of a [`TcpServer`] (and of a TLS server, with its handshake failures).
pub type TcpStats = ServerStats;

/// A Modbus/TCP server over an [`Engine`], on tokio (the driver's server type).
///
/// [`TcpServer::new`] does not bind (pymodbus `defer_start`):
/// [`TcpServer::bind`] or [`TcpServer::serve_forever`] does.
pub type TcpServer = coilwork_driver::TcpServer<Tokio>;

/// Binds `config.address` and serves `engine` on a spawned task; returns
/// the handle to stop it (pymodbus `StartAsyncTcpServer` with a stop
/// handle; the bind error, if any, is returned here).
pub async fn start_tcp_server(engine: Arc<Engine>, config: TcpServerConfig) -> Result<ServerHandle, ServerError> {
    let server = TcpServer::new(engine, config);
    server.bind()?;
    let handle = server.handle();
    crate::rt::spawn_server("modbus tcp server", async move { server.serve_forever().await });
    Ok(handle)
}
