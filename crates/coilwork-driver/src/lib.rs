//! # coilwork-driver: the async driver, written once
//!
//! The loops that move bytes and time between sockets (or a serial line)
//! and a sans-IO [`coilwork_core::Session`], for every async runtime:
//!
//! - [`serve_listener`]: the accept loop of a TCP or TLS server (admission,
//!   one task per connection, the stop drain bounded by `shutdown_timeout`)
//!   and each connection's loop, with the performance rules listed in the
//!   `conn` module;
//! - [`serve_datagrams`]: a UDP socket;
//! - [`serve_line`]: RTU or ASCII over a byte stream (a serial port);
//! - [`TcpServer`], [`UdpServer`], [`SerialServer`] and (feature `tls`)
//!   `tls::TlsServer`: the server types (bind or open, serve, stop) every
//!   async adapter re-exports for its own [`Adapter`], with one
//!   runtime-neutral [`ServerHandle`].
//!
//! The driver depends on no runtime. An adapter (`coilwork-tokio`,
//! `coilwork-async-std`) implements the [`seam`]: its streams as
//! [`ByteStream`], its listener and UDP socket as [`Listener`] and
//! [`Datagram`], its clock, timer and task set as a [`Runtime`], its stop
//! switch as a [`Stop`], and a TLS handshake as an [`Upgrade`]. Then it binds
//! sockets, opens ports and calls these functions; it never parses a frame,
//! knows a function code or decides a policy.
#![forbid(unsafe_code)]

mod accept;
mod conn;
mod handle;
pub mod seam;
mod serial;
mod serial_server;
mod server;
pub mod time;
#[cfg(feature = "tls")]
pub mod tls;
mod udp;

pub use accept::{TcpServe, serve_listener};
pub use coilwork_core::SerialStats;
pub use handle::ServerHandle;
pub use seam::{ByteStream, Datagram, Listener, Plain, Runtime, Stop, TaskSet, Timer, Upgrade};
pub use serial::{LineError, serve_line};
pub use serial_server::{LineOf, SerialAdapter, SerialServer};
pub use server::{Adapter, Handle, TcpServer, UdpServer};
pub use udp::serve_datagrams;

#[cfg(test)]
mod tests;
