//! # coilwork-blocking: Modbus servers on `std::net` and `std::thread`
//!
//! The same servers as `coilwork-tokio`, with no async runtime anywhere in
//! the dependency tree (a test, `tests/no_async_runtime.rs`, checks it with
//! `cargo tree`). This crate only moves bytes and time: it reads from
//! sockets, feeds a [`coilwork_core::Session`] with `Instant::now()`, and
//! does what it says (write, wait, close). Every protocol and lifecycle
//! decision lives in `coilwork-core` (see the adapter contract in
//! [`coilwork_core::session`]).
//!
//! - [`TcpServer`]: Modbus/TCP (MBAP, or RTU / ASCII framing over TCP), one
//!   OS thread per connection up to `max_connections` (default 1000); see
//!   [`tcp`] for the model and its limits.
//! - [`UdpServer`]: one datagram is one ADU, answered to its sender.
//! - `SerialServer` (feature `serial`, on by default): RTU or ASCII on a
//!   serial line, the t3.5 silences driven by the port's read timeout.
//! - `TlsServer` (feature `tls`, on by default): Modbus/TCP Security
//!   (mbaps) over rustls (`StreamOwned` on std sockets), with client
//!   certificates and roles, the same rules as `coilwork-tokio` (shared
//!   `coilwork-tls`). rustls is no async runtime: the promise above holds.
//! - [`ServerHandle`]: a cloneable stop switch usable from any thread.
//!
//! `serve_forever` blocks the calling thread; `shutdown` (or
//! [`ServerHandle::stop`]) from another thread makes it return after the
//! requests already received are answered, normally within about
//! `poll_interval` (100 ms). [`start_tcp_server`] / [`start_udp_server`]
//! block like pymodbus's `StartTcpServer` / `StartUdpServer`;
//! [`start_tcp_server_in_background`] and friends return a [`ServerHandle`]
//! whose [`ServerHandle::stop`] is pymodbus's `ServerStop`.
//!
//! ```no_run
//! use coilwork_blocking::{TcpServer, TcpServerConfig};
//! use coilwork_core::Engine;
//! use coilwork_core::storage::{DeviceContext, ServerContext};
//! use std::sync::Arc;
//!
//! let device = DeviceContext::with_sizes(100, 100, 100, 100).unwrap();
//! let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
//! let server = TcpServer::new(engine, TcpServerConfig::new("127.0.0.1:5020".parse().unwrap()));
//! let handle = server.handle();
//! std::thread::spawn(move || {
//!     std::thread::sleep(std::time::Duration::from_secs(60));
//!     handle.stop();
//! });
//! server.serve_forever().unwrap();
//! ```
#![forbid(unsafe_code)]

mod conn;
mod drive;
mod handle;
#[cfg(feature = "serial")]
pub mod serial;
mod server;
mod table;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
pub mod udp;

pub use coilwork_core::ServerError;
pub use handle::ServerHandle;
#[cfg(feature = "serial")]
pub use serial::{
    Parity, SerialLine, SerialServer, SerialServerConfig, SerialStats, start_serial_server,
    start_serial_server_in_background,
};
pub use server::Server;
pub use tcp::{OverflowPolicy, TcpServer, TcpServerConfig, TcpStats, start_tcp_server, start_tcp_server_in_background};
#[cfg(feature = "tls")]
pub use tls::{
    TlsClientAuth, TlsConfig, TlsError, TlsServer, TlsServerConfig, start_tls_server, start_tls_server_in_background,
};
pub use udp::{UdpServer, UdpServerConfig, UdpStats, start_udp_server, start_udp_server_in_background};

/// Default Modbus port.
pub const MODBUS_PORT: u16 = 502;
