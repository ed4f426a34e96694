//! The four adapters behind the one [`Harness`] trait.
//!
//! Each start builds the adapter's own config from the common options,
//! binds (or opens) on the calling thread so errors show at once, then
//! serves on a thread of its own: tokio in its own multi-thread runtime,
//! smol under `smol::block_on`, async-std under `async_std::task::block_on`,
//! blocking on a plain thread.

use crate::{
    AUTO_OPEN_RETRY, Counters, Harness, Running, SerialOptions, StopHandle, TlsConfig, UdpOptions, loopback,
    spawn_server,
};
use coilwork_core::options::{SerialServerConfig, TcpServerConfig, UdpServerConfig};
use coilwork_core::{Engine, Parity, SerialStats, ServerStats};
use std::sync::Arc;
use std::time::Duration;

/// Tokio: `coilwork-tokio` in a two-worker runtime.
#[derive(Debug)]
pub struct Tokio;

/// smol: `coilwork-async-std` under `smol::block_on`.
#[derive(Debug)]
pub struct Smol;

/// async-std: `coilwork-async-std` under `async_std::task::block_on`.
#[derive(Debug)]
pub struct AsyncStd;

/// Blocking: `coilwork-blocking` on `std::thread`.
#[derive(Debug)]
pub struct Blocking;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The counters of a TCP or TLS server, in the suite's shape.
fn tcp_stats(s: Arc<ServerStats>) -> impl Fn() -> Counters + Send + Sync + 'static {
    move || Counters {
        accepted: s.accepted(),
        refused: s.refused(),
        evicted: s.evicted(),
        bad_frames: s.bad_frames(),
        partial_timeouts: s.partial_timeouts(),
        idle_timeouts: s.idle_timeouts(),
        active: s.active(),
        handshake_failures: s.handshake_failures(),
        ..Counters::default()
    }
}

/// The counters of a UDP server, in the suite's shape.
fn udp_stats(s: Arc<ServerStats>) -> impl Fn() -> Counters + Send + Sync + 'static {
    move || Counters {
        received: s.received(),
        answered: s.answered(),
        malformed: s.malformed(),
        refused: s.refused(),
        ..Counters::default()
    }
}

/// The traffic and port counters of a serial server, in the suite's shape.
fn serial_stats(s: Arc<ServerStats>, line: Arc<SerialStats>) -> impl Fn() -> Counters + Send + Sync + 'static {
    move || Counters {
        bytes_in: s.bytes_in(),
        bytes_out: s.bytes_out(),
        opened: line.opened(),
        open_failures: line.open_failures(),
        line_errors: line.line_errors(),
        ..Counters::default()
    }
}

/// A serial server's stop handle and its counters in the suite's shape
/// (every adapter's `SerialServer` has the same three getters).
macro_rules! serial_parts {
    ($server:expr) => {
        (
            $server.handle(),
            serial_stats(Arc::clone($server.server_stats()), Arc::clone($server.stats())),
        )
    };
}

/// The TCP settings of every adapter (one type, the core's): the case's, on `127.0.0.1:0`.
fn tcp_config(o: &TcpServerConfig) -> TcpServerConfig {
    TcpServerConfig {
        address: loopback(),
        ..o.clone()
    }
}

/// The UDP settings of every adapter.
fn udp_config(o: &UdpOptions) -> UdpServerConfig {
    UdpServerConfig {
        framing: o.framing,
        allow_list: o.allow_list.clone(),
        ..UdpServerConfig::new(loopback())
    }
}

/// The serial settings of every adapter: no parity; reopening as the case says.
fn serial_config(o: &SerialOptions) -> SerialServerConfig {
    SerialServerConfig {
        framing: o.framing,
        baud_rate: o.baud_rate,
        data_bits: o.data_bits,
        parity: Parity::None,
        local_echo: o.local_echo,
        auto_open: o.auto_open,
        reconnect_delay: AUTO_OPEN_RETRY,
        ..SerialServerConfig::new(o.port.clone())
    }
}

/// An adapter's TLS settings (its own type) around [`tcp_config`].
macro_rules! tls_config {
    ($krate:ident, $opts:expr, $handshake_timeout:expr) => {
        $krate::TlsServerConfig {
            tcp: tcp_config($opts),
            handshake_timeout: $handshake_timeout,
        }
    };
}

macro_rules! stop_handle {
    ($($krate:ident),*) => {$(
        impl StopHandle for $krate::ServerHandle {
            fn stop(&self) {
                $krate::ServerHandle::stop(self);
            }
            fn wait_stopped_timeout(&self, timeout: Duration) -> bool {
                $krate::ServerHandle::wait_stopped_timeout(self, timeout)
            }
        }
    )*};
}

// coilwork_async_std::ServerHandle is the same type as tokio's (coilwork-driver's).
stop_handle!(coilwork_tokio, coilwork_blocking);

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Harness for Tokio {
    const NAME: &'static str = "tokio";

    fn start_tcp(engine: Arc<Engine>, opts: &TcpServerConfig) -> Running {
        let server = coilwork_tokio::TcpServer::new(engine, tcp_config(opts));
        let addr = server.bind().expect("bind");
        let (handle, stats) = (server.handle(), Arc::clone(server.stats()));
        let rt = runtime();
        let done = spawn_server("tokio-tcp", move || rt.block_on(server.serve_forever()).map_err(err));
        Running::new(Some(addr), handle, done, tcp_stats(stats))
    }

    fn start_udp(engine: Arc<Engine>, opts: &UdpOptions) -> Running {
        let server = coilwork_tokio::UdpServer::new(engine, udp_config(opts));
        let addr = server.bind().expect("bind");
        let (handle, stats) = (server.handle(), Arc::clone(server.stats()));
        let rt = runtime();
        let done = spawn_server("tokio-udp", move || rt.block_on(server.serve_forever()).map_err(err));
        Running::new(Some(addr), handle, done, udp_stats(stats))
    }

    fn start_serial(engine: Arc<Engine>, opts: &SerialOptions) -> Running {
        let server = coilwork_tokio::SerialServer::new(engine, serial_config(opts));
        let rt = runtime();
        if !opts.auto_open {
            // tokio-serial registers the port with the runtime's reactor.
            let _in_rt = rt.enter();
            server.open().expect("open serial port");
        }
        let (handle, counters) = serial_parts!(server);
        let done = spawn_server("tokio-serial", move || rt.block_on(server.serve_forever()).map_err(err));
        Running::new(None, handle, done, counters)
    }

    fn start_tls(engine: Arc<Engine>, opts: &TcpServerConfig, tls: TlsConfig, handshake_timeout: Duration) -> Running {
        let server = coilwork_tokio::TlsServer::new(engine, tls_config!(coilwork_tokio, opts, handshake_timeout), tls);
        let addr = server.bind().expect("bind");
        let (handle, stats) = (server.handle(), Arc::clone(server.stats()));
        let rt = runtime();
        let done = spawn_server("tokio-tls", move || rt.block_on(server.serve_forever()).map_err(err));
        Running::new(Some(addr), handle, done, tcp_stats(stats))
    }
}

macro_rules! async_io_harness {
    ($ty:ty, $name:literal, $block_on:path) => {
        impl Harness for $ty {
            const NAME: &'static str = $name;

            fn start_tcp(engine: Arc<Engine>, opts: &TcpServerConfig) -> Running {
                let server = coilwork_async_std::TcpServer::new(engine, tcp_config(opts));
                let addr = server.bind().expect("bind");
                let (handle, stats) = (server.handle(), Arc::clone(server.stats()));
                let done = spawn_server(concat!($name, "-tcp"), move || {
                    $block_on(server.serve_forever()).map_err(err)
                });
                Running::new(Some(addr), handle, done, tcp_stats(stats))
            }

            fn start_udp(engine: Arc<Engine>, opts: &UdpOptions) -> Running {
                let server = coilwork_async_std::UdpServer::new(engine, udp_config(opts));
                let addr = server.bind().expect("bind");
                let (handle, stats) = (server.handle(), Arc::clone(server.stats()));
                let done = spawn_server(concat!($name, "-udp"), move || {
                    $block_on(server.serve_forever()).map_err(err)
                });
                Running::new(Some(addr), handle, done, udp_stats(stats))
            }

            fn start_serial(engine: Arc<Engine>, opts: &SerialOptions) -> Running {
                let server = coilwork_async_std::SerialServer::new(engine, serial_config(opts));
                if !opts.auto_open {
                    server.open().expect("open serial port");
                }
                let (handle, counters) = serial_parts!(server);
                let done = spawn_server(concat!($name, "-serial"), move || {
                    $block_on(server.serve_forever()).map_err(err)
                });
                Running::new(None, handle, done, counters)
            }

            fn start_tls(
                engine: Arc<Engine>,
                opts: &TcpServerConfig,
                tls: TlsConfig,
                handshake_timeout: Duration,
            ) -> Running {
                let server = coilwork_async_std::TlsServer::new(
                    engine,
                    tls_config!(coilwork_async_std, opts, handshake_timeout),
                    tls,
                );
                let addr = server.bind().expect("bind");
                let (handle, stats) = (server.handle(), Arc::clone(server.stats()));
                let done = spawn_server(concat!($name, "-tls"), move || {
                    $block_on(server.serve_forever()).map_err(err)
                });
                Running::new(Some(addr), handle, done, tcp_stats(stats))
            }
        }
    };
}

async_io_harness!(Smol, "smol", smol::block_on);
async_io_harness!(AsyncStd, "async-std", async_std::task::block_on);

impl Harness for Blocking {
    const NAME: &'static str = "blocking";

    fn start_tcp(engine: Arc<Engine>, opts: &TcpServerConfig) -> Running {
        let server = coilwork_blocking::TcpServer::new(engine, tcp_config(opts));
        let addr = server.bind().expect("bind");
        let (handle, stats) = (server.handle(), Arc::clone(server.stats()));
        let done = spawn_server("blocking-tcp", move || server.serve_forever().map_err(err));
        Running::new(Some(addr), handle, done, tcp_stats(stats))
    }

    fn start_udp(engine: Arc<Engine>, opts: &UdpOptions) -> Running {
        let server = coilwork_blocking::UdpServer::new(engine, udp_config(opts));
        let addr = server.bind().expect("bind");
        let (handle, stats) = (server.handle(), Arc::clone(server.stats()));
        let done = spawn_server("blocking-udp", move || server.serve_forever().map_err(err));
        Running::new(Some(addr), handle, done, udp_stats(stats))
    }

    fn start_serial(engine: Arc<Engine>, opts: &SerialOptions) -> Running {
        let server = coilwork_blocking::SerialServer::new(engine, serial_config(opts));
        if !opts.auto_open {
            server.open().expect("open serial port");
        }
        let (handle, counters) = serial_parts!(server);
        let done = spawn_server("blocking-serial", move || server.serve_forever().map_err(err));
        Running::new(None, handle, done, counters)
    }

    fn start_tls(engine: Arc<Engine>, opts: &TcpServerConfig, tls: TlsConfig, handshake_timeout: Duration) -> Running {
        let server =
            coilwork_blocking::TlsServer::new(engine, tls_config!(coilwork_blocking, opts, handshake_timeout), tls);
        let addr = server.bind().expect("bind");
        let (handle, stats) = (server.handle(), Arc::clone(server.stats()));
        let done = spawn_server("blocking-tls", move || server.serve_forever().map_err(err));
        Running::new(Some(addr), handle, done, tcp_stats(stats))
    }
}
