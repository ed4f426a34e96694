//! Modbus/TCP server, driven without spawning.
//!
//! [`TcpServer::serve_forever`] runs `coilwork-driver`'s accept loop
//! ([`coilwork_driver::serve_listener`]) with every connection future held
//! in place (a `FuturesUnordered`), so it needs no executor and no spawner:
//! any `block_on` or task of async-std, smol or `futures-lite` can drive it.
//! Sockets and timers come from [`async_io`]; the TLS server (`tls` module)
//! serves its streams with the same loop after a handshake step.

use crate::ServerError;
use crate::ServerHandle;
use crate::rt::AsyncIo;
use coilwork_core::{Engine, Overflow, ServerStats};
use std::sync::Arc;
use tracing::warn;

/// What to do with a new client when `max_connections` are open.
pub type OverflowPolicy = Overflow;

/// Settings of a [`TcpServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::TcpServerConfig;

/// Counters of a [`TcpServer`] (and of a TLS server, with its handshake failures).
pub type TcpStats = ServerStats;

/// A Modbus/TCP server over an [`Engine`], for async-std, smol or any
/// executor (the driver's server type on async-io).
///
/// [`TcpServer::new`] does not bind (pymodbus `defer_start`):
/// [`TcpServer::bind`] or [`TcpServer::serve_forever`] does.
/// `serve_forever` drives the listener and all connections itself; it is
/// `Send`, so it can also be handed to `smol::spawn` or
/// `async_std::task::spawn` (inside an `Arc<TcpServer>`).
pub type TcpServer = coilwork_driver::TcpServer<AsyncIo>;

/// Binds `config.address` now and serves `engine` on a thread of its own
/// (driven by `async_io::block_on`, so no runtime is needed); returns the
/// handle to stop it. The bind error, if any, is returned here.
pub fn start_tcp_server(engine: Arc<Engine>, config: TcpServerConfig) -> Result<ServerHandle, ServerError> {
    let server = TcpServer::new(engine, config);
    server.bind()?;
    let handle = server.handle();
    std::thread::Builder::new().name("coilwork-tcp".into()).spawn(move || {
        if let Err(e) = async_io::block_on(server.serve_forever()) {
            warn!(error = %e, "modbus tcp server failed");
        }
    })?;
    Ok(handle)
}
