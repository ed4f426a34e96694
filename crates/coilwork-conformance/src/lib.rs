//! # coilwork-conformance: one behaviour, proven once for every adapter
//!
//! A test-support library: the same cases run against the tokio, async-std,
//! smol and blocking servers. A case that one adapter fails is a bug in that
//! adapter, not a skip.
//!
//! - [`Harness`]: how to start a TCP, TLS, UDP or serial server of one adapter
//!   from the core's [`TcpServerConfig`] ([`tcp_defaults`]) or a small common
//!   set of options ([`UdpOptions`], [`SerialOptions`]), returning a [`Running`] server (address, counters,
//!   a bounded stop). [`adapters`] has the four implementations.
//! - [`client`]: a tiny hand-written MBAP / RTU client on `std::net` with
//!   read timeouts, so no case can hang; [`tokio_client`]: the same calls on
//!   tokio streams, for the tokio adapter's and the gateway's own tests.
//! - [`cases`]: the cases, each generic over a [`Harness`] and bounded in time.
//! - [`conformance_suite!`]: expands to one `#[test]` per case for a harness:
//!   `coilwork_conformance::conformance_suite!(coilwork_conformance::adapters::Tokio);`
//!
//! Serial cases run over a socat pty pair; without socat they are skipped
//! with a message, unless `COILWORK_REQUIRE_CLIENTS` is set (then they fail).
//!
//! What the suite covers, per adapter: every public function code over MBAP
//! with exact answer bytes (spec examples where the spec has one) and one
//! exception per class; a byte-counted request past the PDU limit (FC16 of
//! 124 registers, FC23 writing 122) answered with exception 03 over MBAP,
//! RTU, ASCII, UDP and serial lines; pipelining (8 requests, and 400 past the read
//! buffer); requests split one byte at a time and across writes; RTU / ASCII
//! over TCP (garbage shed); bad protocol id and bad MBAP length close the
//! connection; unit ids echoed; half close; clients vanishing mid-stream;
//! 50 concurrent clients × 20 requests; `max_connections` (refuse, evict);
//! partial-frame and idle timeouts; allow-list; graceful stop with a request
//! in flight and with a client that does not read; writes seen by another
//! client; UDP round trip, malformed datagrams, several senders; serial RTU
//! and ASCII round trips, broadcast, local echo; Modbus/TCP Security (TLS,
//! certificates from [`pki`], client from [`tls_common`]): a CA-signed
//! client's role reaches the engine's `Authorizer` on FC16 + FC3, a role
//! denied writes gets exception 01 on FC16 while FC3 works, a client
//! without a certificate, one from another CA and one whose role extension
//! is doubled or not a UTF8String are refused (TLS 1.2 and 1.3) before the
//! engine sees anything, a certificate without a role is served with none,
//! server-only TLS serves a client without a certificate, the handshake
//! timeout closes a silent client and a stop cuts a handshake short,
//! graceful stop with a request in flight. A hook's delivery ([`delivery`]): a delay and a split are made,
//! a stop or an eviction during a long pause is not held up by it, and an
//! idle timeout does not cut a delayed answer off. Under full load ([`load`]: clients keeping eight requests each
//! in flight): a graceful stop that loses no acknowledged write and cuts no
//! answer in half; the partial-frame and idle timeouts and
//! `max_connections` still at work, and the busy clients untouched.
//! A client nobody here wrote ([`pymodbus`]): pymodbus's, over TCP (MBAP
//! and RTU framing) and UDP (needs `COILWORK_PYTHON`, as the serial cases
//! need socat).
//!
//! The adapters' own tests keep only their own API; [`replaced`] lists the
//! tests this suite took over and the case that covers each.
//!
//! A new adapter: implement [`Harness`] (bind on the calling thread, serve
//! on a thread, wrap the handle and counters in a [`Running`]), then add a
//! test file with `conformance_suite!(YourHarness);`.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod cases;
pub mod client;
pub mod delivery;
pub mod fixture;
pub mod load;
pub mod pymodbus;
pub mod replaced;
pub mod serial;
pub mod tokio_client;

/// Test certificates made fresh with rcgen (CA, server, clients with and
/// without a role, a client of another CA), from `coilwork-test-support`.
pub use coilwork_test_support::pki;

/// The blocking rustls test client (std `TcpStream`), the role-recording
/// [`Authorizer`](coilwork_core::engine::Authorizer) and helpers, from
/// `coilwork-test-support`.
pub use coilwork_test_support::tls as tls_common;

/// The FC3 delivery hook and its engine, from `coilwork-test-support`.
pub use coilwork_test_support::hooks as delivery_hook;

use coilwork_core::{Engine, Framing};
pub use coilwork_tls::TlsConfig;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server may take to return after a stop before the case fails.
pub const STOP_LIMIT: Duration = Duration::from_secs(10);

/// What a server does with a client past `max_connections` (the core's).
pub use coilwork_core::Overflow;

/// The TCP settings of a case's server: the core's, which every adapter takes.
pub use coilwork_core::options::TcpServerConfig;

/// The TCP settings the cases start from: the core's defaults on
/// [`loopback`], with a listen backlog of 128 for the load cases.
pub fn tcp_defaults() -> TcpServerConfig {
    TcpServerConfig {
        backlog: 128,
        ..TcpServerConfig::new(loopback())
    }
}

/// The UDP settings every adapter has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpOptions {
    /// Framing of each datagram.
    pub framing: Framing,
    /// If set, only these client IPs are answered.
    pub allow_list: Option<Vec<IpAddr>>,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            framing: Framing::Mbap,
            allow_list: None,
        }
    }
}

/// The serial settings every adapter has (no parity, one stop bit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialOptions {
    /// The port's path.
    pub port: String,
    /// RTU or ASCII.
    pub framing: Framing,
    /// Baud rate.
    pub baud_rate: u32,
    /// Data bits (7 or 8).
    pub data_bits: u8,
    /// The server reads back what it sends (2-wire RS-485) and drops it.
    pub local_echo: bool,
    /// The server is started without opening the port first: it waits for
    /// a port that is missing and reopens one that fails, retrying every
    /// [`AUTO_OPEN_RETRY`]. Off: the port is opened before serving and a
    /// failing line ends the server.
    pub auto_open: bool,
}

/// How often a server with [`SerialOptions::auto_open`] tries the port again.
pub const AUTO_OPEN_RETRY: Duration = Duration::from_millis(20);

/// Counters of a running server, in one shape for every adapter and
/// transport (a counter a server does not have reads 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// TCP: connections accepted and served.
    pub accepted: u64,
    /// TCP / UDP: connections or datagrams refused (allow-list, limit).
    pub refused: u64,
    /// TCP: connections evicted to make room.
    pub evicted: u64,
    /// TCP: connections closed for a stream that can never be valid again.
    pub bad_frames: u64,
    /// TCP: connections closed by the partial-frame timeout.
    pub partial_timeouts: u64,
    /// TCP: connections closed by the idle timeout.
    pub idle_timeouts: u64,
    /// TCP: connections open now.
    pub active: u64,
    /// TLS: connections refused by the handshake or the role check.
    pub handshake_failures: u64,
    /// UDP: datagrams received.
    pub received: u64,
    /// UDP: datagrams answered.
    pub answered: u64,
    /// UDP: malformed datagrams dropped.
    pub malformed: u64,
    /// Serial: bytes read from the line.
    pub bytes_in: u64,
    /// Serial: bytes written to the line.
    pub bytes_out: u64,
    /// Serial: times the port was opened.
    pub opened: u64,
    /// Serial: failed attempts to open the port.
    pub open_failures: u64,
    /// Serial: times an open line failed while serving.
    pub line_errors: u64,
}

/// What a server thread reports when `serve_forever` returns.
pub type ServeResult = Result<(), String>;

/// The stop switch of one adapter's servers (its `ServerHandle`): the only
/// two things the suite needs to stop a server and know it has stopped.
pub trait StopHandle: Send + Sync + 'static {
    /// Asks the server to stop; never blocks.
    fn stop(&self);
    /// Blocks until the server has stopped serving or `timeout` passed;
    /// true if it stopped.
    fn wait_stopped_timeout(&self, timeout: Duration) -> bool;
}

/// A server started by a [`Harness`]: its address, its counters, and a
/// bounded stop. Dropping it without [`Running::stop`] asks the server to
/// stop and does not wait.
pub struct Running {
    addr: Option<SocketAddr>,
    handle: Box<dyn StopHandle>,
    thread: Option<JoinHandle<ServeResult>>,
    counters: Box<dyn Fn() -> Counters + Send + Sync>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// A running server: `handle` stops it and tells when it has stopped,
    /// `thread` is the one [`spawn_server`] started, `counters` reads its
    /// counters.
    pub fn new(
        addr: Option<SocketAddr>,
        handle: impl StopHandle,
        thread: JoinHandle<ServeResult>,
        counters: impl Fn() -> Counters + Send + Sync + 'static,
    ) -> Self {
        Self {
            addr,
            handle: Box::new(handle),
            thread: Some(thread),
            counters: Box::new(counters),
        }
    }

    /// The address it serves (TCP, UDP).
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("a network server has an address")
    }

    /// Its counters now.
    pub fn counters(&self) -> Counters {
        (self.counters)()
    }

    /// Waits up to `d` for `cond` on the counters; true if it held.
    pub fn counters_reach(&self, d: Duration, cond: impl Fn(&Counters) -> bool) -> bool {
        let end = Instant::now() + d;
        loop {
            if cond(&self.counters()) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks the server to stop; never blocks. [`Running::stop`] then waits.
    pub fn ask_stop(&self) {
        self.handle.stop();
    }

    /// Asks the server to stop and waits (the handle's
    /// `wait_stopped_timeout`) until it has stopped serving; returns how
    /// long that took. Panics if it took more than [`STOP_LIMIT`], or if
    /// its thread then returned an error or panicked.
    pub fn stop(mut self) -> Duration {
        let t0 = Instant::now();
        self.handle.stop();
        assert!(
            self.handle.wait_stopped_timeout(STOP_LIMIT),
            "server did not stop within {STOP_LIMIT:?} of a stop"
        );
        let took = t0.elapsed();
        let thread = self.thread.take().expect("stopped once");
        // Stopped: its thread returns at once (tokio: after dropping its runtime).
        let end = Instant::now() + STOP_LIMIT;
        while !thread.is_finished() {
            assert!(
                Instant::now() < end,
                "server thread still running {STOP_LIMIT:?} after it stopped"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        match thread.join() {
            Ok(Ok(())) => took,
            Ok(Err(e)) => panic!("serve_forever returned an error: {e}"),
            Err(_) => panic!("server thread panicked"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.stop();
        }
    }
}

/// Runs `serve` on a new named thread.
pub fn spawn_server(name: &str, serve: impl FnOnce() -> ServeResult + Send + 'static) -> JoinHandle<ServeResult> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(serve)
        .expect("spawn server thread")
}

/// How one adapter starts its servers. Each start binds (or opens) before
/// returning, so a client may connect at once.
pub trait Harness {
    /// The adapter's name, for messages.
    const NAME: &'static str;
    /// Starts a TCP server for `engine` on `127.0.0.1:0`.
    fn start_tcp(engine: Arc<Engine>, opts: &TcpServerConfig) -> Running;
    /// Starts a UDP server for `engine` on `127.0.0.1:0`.
    fn start_udp(engine: Arc<Engine>, opts: &UdpOptions) -> Running;
    /// Opens `opts.port` and starts a serial server on it.
    fn start_serial(engine: Arc<Engine>, opts: &SerialOptions) -> Running;
    /// Starts a Modbus/TCP Security server for `engine` on `127.0.0.1:0`
    /// with the TCP settings `opts`, the TLS side `tls` and the time a
    /// client may take to finish its handshake.
    fn start_tls(engine: Arc<Engine>, opts: &TcpServerConfig, tls: TlsConfig, handshake_timeout: Duration) -> Running;
}

/// The loopback address with port 0, where every case binds.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Expands to one `#[test]` per conformance case, run on harness `$h`.
#[macro_export]
macro_rules! conformance_suite {
    ($h:ty) => {
        $crate::conformance_suite!(@cases $h;
            bit_functions,
            register_functions,
            diagnostic_functions,
            file_record_functions,
            device_identification,
            one_exception_per_class,
            pipelined_requests_in_one_write,
            request_one_byte_at_a_time,
            burst_beyond_the_read_buffer,
            requests_split_across_writes,
            unit_ids_echoed,
            bad_mbap_length_closes_the_connection,
            oversized_quantity_gets_exception_03,
            request_then_half_close_is_answered,
            clients_vanishing_mid_stream,
            rtu_and_ascii_over_tcp,
            udp_answers_go_to_their_sender,
            rtu_over_tcp_garbage_then_good_request,
            bad_protocol_id_closes_the_connection,
            concurrent_clients,
            max_connections_refuses_the_next,
            max_connections_evicts_the_oldest,
            partial_frame_timeout,
            idle_timeout,
            idle_timeout_after_answers_waited_for_the_client,
            allow_list,
            graceful_shutdown_with_a_request_in_flight,
            stop_with_a_client_that_does_not_read,
            writes_seen_by_another_client,
            partial_frame_timeout_after_traffic,
            buffers_released_and_reallocated,
            buffer_cap_closes_a_connection_holding_too_much,
            udp_round_trip_and_malformed_datagram,
            serial_rtu_round_trip,
            serial_rtu_frame_cut_by_silence_is_dropped,
            serial_ascii_round_trip,
            serial_oversized_quantity_gets_exception_03,
            serial_broadcast_is_silent,
            serial_unit_zero_without_broadcast_is_ignored,
            serial_local_echo_is_dropped,
            serial_auto_open_waits_for_the_port_and_reopens_it,
            tls_role_reaches_the_authorizer,
            tls_role_denied_writes,
            tls_client_without_certificate_is_refused,
            tls_certificate_from_another_ca_is_refused,
            tls_invalid_role_extension_is_refused,
            tls_certificate_without_role_has_no_role,
            tls_server_only_serves_a_client_without_certificate,
            tls_handshake_timeout_closes_a_silent_client,
            tls_stop_cuts_a_handshake_in_progress,
            tls_graceful_shutdown_with_a_request_in_flight
        );
        $crate::conformance_suite!(@delivery $h;
            delivery_delay_holds_the_answer_back,
            delivery_split_sends_two_pieces,
            a_stop_cuts_a_delivery_pause_short,
            an_eviction_ends_a_delivery_pause,
            an_idle_timeout_does_not_cut_a_delayed_answer,
            udp_delivery_split_sends_two_datagrams,
            udp_stop_cuts_a_delivery_pause_short,
            serial_delivery_split_pauses_the_line,
            serial_stop_cuts_a_delivery_pause_short
        );
        $crate::conformance_suite!(@load $h;
            stop_under_load_keeps_every_acknowledged_write,
            timeouts_and_limits_under_load
        );
        $crate::conformance_suite!(@pymodbus $h;
            pymodbus_over_tcp,
            pymodbus_rtu_over_tcp,
            pymodbus_over_udp
        );
    };
    (@cases $h:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::cases::$case::<$h>();
            }
        )*
    };
    (@delivery $h:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::delivery::$case::<$h>();
            }
        )*
    };
    (@load $h:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::load::$case::<$h>();
            }
        )*
    };
    (@pymodbus $h:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::pymodbus::$case::<$h>();
            }
        )*
    };
}
