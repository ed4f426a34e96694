//! # coilwork-async-std: Modbus servers for async-std and smol
//!
//! A runtime-neutral adapter: sockets and timers come from [`async_io`] (the
//! reactor that async-std and smol both run on), streams are driven through
//! the `futures-io` traits, and the stop handle ([`ServerHandle`],
//! `coilwork-driver`'s, shared with `coilwork-tokio`) is runtime-neutral.
//! The servers spawn nothing: [`TcpServer::serve_forever`] drives the accept
//! loop and every connection itself, so the same server runs under
//! `smol::block_on`, `smol::spawn`, `async_std::task::block_on`,
//! `async_std::task::spawn`, or `futures_lite::future::block_on`.
//!
//! Like `coilwork-tokio`, this crate binds sockets, opens ports and runs TLS
//! handshakes; the loops that feed a [`coilwork_core::Session`] are
//! `coilwork-driver`'s, run on async-io. Every protocol and lifecycle
//! decision lives in `coilwork-core` (see the adapter contract in
//! [`coilwork_core::session`]).
//!
//! - [`TcpServer`]: Modbus/TCP (MBAP, or RTU / ASCII framing over TCP),
//!   pipelined requests answered in one write.
//! - [`UdpServer`]: one datagram is one ADU, answered to its sender.
//! - `SerialServer` (feature `serial`, on by default, unix): RTU or ASCII on
//!   a serial line set up with termios, t3.5 silences on async-io timers.
//! - `TlsServer` (feature `tls`, on by default): Modbus/TCP Security
//!   (mbaps) over rustls (futures-rustls), with client certificates and
//!   roles, the same rules as `coilwork-tokio` (shared `coilwork-tls`).
//! - [`ServerHandle`]: a cloneable stop switch usable from any task or thread.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use coilwork_core::{Engine, storage::{DeviceContext, ServerContext}};
//! use coilwork_async_std::{TcpServer, TcpServerConfig};
//! # let device = DeviceContext::with_sizes(10, 10, 10, 10).unwrap();
//! # let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
//! let server = TcpServer::new(engine, TcpServerConfig::new("127.0.0.1:5020".parse().unwrap()));
//! // smol::block_on(server.serve_forever()) or async_std::task::block_on(...) alike:
//! futures_lite::future::block_on(server.serve_forever()).unwrap();
//! ```
#![forbid(unsafe_code)]

mod rt;
#[cfg(all(unix, feature = "serial"))]
pub mod serial;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
pub mod udp;

pub use coilwork_core::ServerError;
pub use coilwork_driver::ServerHandle;
#[cfg(all(unix, feature = "serial"))]
pub use serial::{Parity, SerialServer, SerialServerConfig, SerialStats, start_serial_server};
pub use tcp::{OverflowPolicy, TcpServer, TcpServerConfig, TcpStats, start_tcp_server};
#[cfg(feature = "tls")]
pub use tls::{TlsClientAuth, TlsConfig, TlsError, TlsServer, TlsServerConfig, start_tls_server};
pub use udp::{UdpServer, UdpServerConfig, UdpStats, start_udp_server};

/// Default Modbus port.
pub const MODBUS_PORT: u16 = 502;
