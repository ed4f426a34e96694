//! # coilwork-test-support: what coilwork's tests share
//!
//! A dev-dependency only (never published), so every crate's tests take one
//! copy of these instead of including files from each other with `#[path]`:
//!
//! - [`pki`]: test certificates made fresh with rcgen (a CA, a server, clients
//!   with and without the Modbus/TCP Security role extension, one of another
//!   CA), made once per process by [`pki::pki`], and their rustls types.
//! - [`tls`]: a blocking rustls client on a std `TcpStream`, an authorizer
//!   that records roles, and MBAP helpers for TLS tests.
//! - [`hooks`]: a hook that delivers FC3 answers as a
//!   [`Delivery`](coilwork_core::Delivery) says (delay, split), and its engine.
//! - [`mock`]: in-memory streams (scripted reads, recorded writes, injected
//!   failures) for code that takes any `Read + Write`.
//! - [`ports`]: free loopback ports outside the kernel's ephemeral range, for
//!   tests that must name a port before the server binds it.
//! - [`clients`]: the real clients some tests drive (`COILWORK_PYTHON`),
//!   skipped when missing unless `COILWORK_REQUIRE_CLIENTS` is set.
//! - [`pty`]: a serial line for tests, two pseudo terminals linked by
//!   socat ([`PtyPair`]), skipped without socat unless clients are required.
//! - [`clock`]: a virtual clock for sans-IO tests: `t0` plus what the test
//!   advanced, no sleeping.
#![forbid(unsafe_code)]

pub mod clients;
pub mod clock;
pub mod hooks;
pub mod mock;
pub mod pki;
pub mod ports;
pub mod pty;
pub mod tls;

pub use clock::VirtualClock;
pub use mock::MockStream;
pub use ports::free_port;
pub use pty::PtyPair;
