//! Settings shared by every transport and adapter, defined once: socket
//! options ([`SocketOptions`], `nodelay` included), admission
//! ([`AdmissionOptions`]), a stream connection's limits and timeouts
//! ([`StreamOptions`]), serial line framing ([`Parity`], [`bits_per_char`])
//! and the datagram size limit ([`MAX_DATAGRAM`]).

use crate::connection::DEFAULT_MAX_BUFFERED;
use crate::engine::Engine;
use crate::frame::Framing;
use crate::server::ServerStats;
use crate::session::{SessionConfig, SessionKind};
use crate::storage::Transport;
use crate::timeouts::StreamTimeoutConfig;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The Modbus port.
pub const MODBUS_PORT: u16 = 502;

/// Largest datagram a UDP server reads; a longer one is dropped as malformed.
pub const MAX_DATAGRAM: usize = 1024;

/// What to do with a new client when `max_connections` are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Close the new connection at once (default).
    #[default]
    RefuseNew,
    /// Evict the oldest connection not already being evicted, and take the new one.
    EvictOldest,
}

/// Which connections a server admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionOptions {
    /// Most connections open at once (default 1000).
    pub max_connections: usize,
    /// What happens to a client past `max_connections`.
    pub overflow: Overflow,
    /// If set, only these client IPs are served; others are closed at once.
    pub allow_list: Option<Vec<IpAddr>>,
}

impl Default for AdmissionOptions {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            overflow: Overflow::RefuseNew,
            allow_list: None,
        }
    }
}

impl AdmissionOptions {
    /// True if `ip` may be served (an IPv4-mapped IPv6 peer matches its IPv4 entry).
    pub fn allows(&self, ip: IpAddr) -> bool {
        allowed(self.allow_list.as_deref(), ip)
    }
}

/// True if `ip` is in `list` or there is no list (an IPv4-mapped IPv6 peer matches its IPv4 entry).
pub fn allowed(list: Option<&[IpAddr]>, ip: IpAddr) -> bool {
    let Some(list) = list else { return true };
    let ip = ip.to_canonical();
    list.iter().any(|a| a.to_canonical() == ip)
}

/// How a listening or datagram socket is opened and its connections set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// Listen backlog (default 20).
    pub backlog: u32,
    /// Set `SO_REUSEADDR` (default on, so a restart can bind at once).
    pub reuse_address: bool,
    /// Set `SO_REUSEPORT` where the OS has it (default off).
    pub reuse_port: bool,
    /// Set `TCP_NODELAY` on each connection (default on).
    pub nodelay: bool,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            backlog: 20,
            reuse_address: true,
            reuse_port: false,
            nodelay: true,
        }
    }
}

/// A stream connection's limits and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Close a connection that sent nothing for this long (default: never).
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose partial frame is not completed within this long of its first byte (default 5 s).
    pub partial_frame_timeout: Option<Duration>,
    /// Cap on unframed bytes held per connection; past it the connection is closed.
    pub max_buffered: usize,
    /// Size of the per-connection read buffer (default 4 KiB).
    pub read_buffer_size: usize,
    /// Free a connection's buffers after it was quiet this long (default 1 s).
    pub release_buffers_after: Duration,
    /// On shutdown, how long connections get to finish before they are cut (default 5 s).
    pub shutdown_timeout: Duration,
    /// A client that does not read its answers for this long is disconnected (default 10 s).
    pub write_timeout: Option<Duration>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            idle_timeout: None,
            partial_frame_timeout: Some(Duration::from_secs(5)),
            max_buffered: DEFAULT_MAX_BUFFERED,
            read_buffer_size: 4096,
            release_buffers_after: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(5),
            write_timeout: Some(Duration::from_secs(10)),
        }
    }
}

impl StreamOptions {
    /// The deadlines a session keeps for these options.
    pub fn timeouts(&self) -> StreamTimeoutConfig {
        StreamTimeoutConfig {
            partial_frame: self.partial_frame_timeout,
            idle: self.idle_timeout,
            release_buffers_after: self.release_buffers_after,
        }
    }
}

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parity {
    /// No parity bit (the spec then asks for 2 stop bits).
    None,
    /// Even parity (the Modbus default).
    #[default]
    Even,
    /// Odd parity.
    Odd,
}

/// Bits per character on a serial line: start + data + parity + stop.
pub fn bits_per_char(data_bits: u8, parity: Parity, stop_bits: u8) -> u32 {
    1 + u32::from(data_bits) + u32::from(parity != Parity::None) + u32::from(stop_bits)
}

/// Settings of a TCP (or TLS) server, the same for every adapter;
/// `Default` gives pymodbus-like defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpServerConfig {
    /// Address to listen on (default `127.0.0.1:502`).
    pub address: SocketAddr,
    /// Framing on the stream: MBAP (default), or RTU / ASCII over TCP.
    pub framing: Framing,
    /// Listen backlog (default 20).
    pub backlog: u32,
    /// Set `SO_REUSEADDR` (default on, so a restart can bind at once).
    pub allow_reuse_address: bool,
    /// Set `SO_REUSEPORT` where the OS has it (default off).
    pub allow_reuse_port: bool,
    /// Most connections (blocking: connection threads) open at once (default 1000).
    pub max_connections: usize,
    /// What happens to a client past `max_connections`.
    pub overflow: Overflow,
    /// If set, only these client IPs are served; others are closed at once.
    pub allow_list: Option<Vec<IpAddr>>,
    /// Close a connection that sent nothing for this long (default: never).
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose partial frame is not completed within this
    /// long of its first byte (default 5 s).
    pub partial_frame_timeout: Option<Duration>,
    /// Cap on unframed bytes held per connection; past it the connection is closed.
    pub max_buffered: usize,
    /// Size of the per-connection read buffer (default 4 KiB).
    pub read_buffer_size: usize,
    /// Free a connection's buffers after it was quiet this long (default 1 s).
    ///
    /// Blocking server: a connection thread sleeps in its read with no
    /// timer, so it frees the connection's buffers when it next wakes (on
    /// the next input, before handling it) if it was quiet this long; its
    /// read buffer (`read_buffer_size`) stays allocated while the connection
    /// is open.
    pub release_buffers_after: Duration,
    /// On shutdown, how long connections get to finish before they are cut (default 5 s).
    pub shutdown_timeout: Duration,
    /// Blocking adapter: how often the accept loop checks for a stop (the
    /// listener's receive timeout) and, as the timeout watchdog, for passed
    /// idle and partial-frame deadlines (default 100 ms): how late a stop or
    /// those timeouts can be seen. Connection threads have no read timeout:
    /// they are woken.
    pub poll_interval: Duration,
    /// Blocking adapter: the socket write timeout; a client that does not read its answers for
    /// this long is disconnected (default 10 s; `None`: wait forever).
    pub write_timeout: Option<Duration>,
    /// Blocking adapter: the stack size of each connection thread (default: the std default).
    pub thread_stack_size: Option<usize>,
    /// Set `TCP_NODELAY` on accepted connections (default on: answers go out at once).
    pub nodelay: bool,
}

impl Default for TcpServerConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), MODBUS_PORT),
            framing: Framing::Mbap,
            backlog: 20,
            allow_reuse_address: true,
            allow_reuse_port: false,
            max_connections: 1000,
            overflow: Overflow::RefuseNew,
            allow_list: None,
            idle_timeout: None,
            partial_frame_timeout: Some(Duration::from_secs(5)),
            max_buffered: DEFAULT_MAX_BUFFERED,
            read_buffer_size: 4096,
            release_buffers_after: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(100),
            write_timeout: Some(Duration::from_secs(10)),
            thread_stack_size: None,
            nodelay: true,
        }
    }
}

impl TcpServerConfig {
    /// Defaults, listening on `address`.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            ..Self::default()
        }
    }

    /// Which connections the server admits.
    pub fn admission(&self) -> AdmissionOptions {
        AdmissionOptions {
            max_connections: self.max_connections,
            overflow: self.overflow,
            allow_list: self.allow_list.clone(),
        }
    }

    /// The settings every connection's session shares, on `transport` (TCP or TLS).
    pub fn session(&self, engine: Arc<Engine>, stats: Arc<ServerStats>, transport: Transport) -> SessionConfig {
        SessionConfig {
            timeouts: StreamTimeoutConfig {
                partial_frame: self.partial_frame_timeout,
                idle: self.idle_timeout,
                release_buffers_after: self.release_buffers_after,
            },
            max_buffered: self.max_buffered,
            stats,
            ..SessionConfig::new(engine, SessionKind::Stream, self.framing, transport)
        }
    }
}

/// Settings of a UDP server, the same for every adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpServerConfig {
    /// Address to listen on (default `127.0.0.1:502`).
    pub address: SocketAddr,
    /// Framing of each datagram: MBAP (default), RTU or ASCII.
    pub framing: Framing,
    /// Set `SO_REUSEADDR` (default on).
    pub allow_reuse_address: bool,
    /// Set `SO_REUSEPORT` where the OS has it (default off).
    pub allow_reuse_port: bool,
    /// If set, only datagrams from these IPs are served; others are dropped.
    pub allow_list: Option<Vec<IpAddr>>,
    /// Blocking adapter: the socket read timeout, how soon the server sees a
    /// stop (default 100 ms). The async adapters are woken by a stop.
    pub poll_interval: Duration,
}

impl Default for UdpServerConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), MODBUS_PORT),
            framing: Framing::Mbap,
            allow_reuse_address: true,
            allow_reuse_port: false,
            allow_list: None,
            poll_interval: Duration::from_millis(100),
        }
    }
}

impl UdpServerConfig {
    /// Defaults, listening on `address`.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            ..Self::default()
        }
    }

    /// The settings of the server's one datagram session.
    pub fn session(&self, engine: Arc<Engine>, stats: Arc<ServerStats>) -> SessionConfig {
        SessionConfig {
            allow_list: self.allow_list.clone(),
            stats,
            ..SessionConfig::new(engine, SessionKind::Datagram, self.framing, Transport::Udp)
        }
    }
}

/// Settings of a serial server, the same for every adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialServerConfig {
    /// Device path (`/dev/ttyUSB0`, `COM3`).
    pub port: String,
    /// RTU (default) or ASCII.
    pub framing: Framing,
    /// Baud rate (default 19200, the spec's default).
    pub baud_rate: u32,
    /// Data bits: 7 or 8 (default 8).
    pub data_bits: u8,
    /// Parity (default even).
    pub parity: Parity,
    /// Stop bits: 1 or 2 (default 1).
    pub stop_bits: u8,
    /// 2-wire RS-485 adapters echo what is sent: drop that echo.
    pub local_echo: bool,
    /// Keep trying to open the port (and reopen it after a failure) instead of returning an error.
    pub auto_open: bool,
    /// Wait between open attempts (default 2 s).
    pub reconnect_delay: Duration,
    /// Cap on unframed bytes held.
    pub max_buffered: usize,
    /// Async adapters: after a stop, how long an answer still being written
    /// may take before the line is let go (default 5 s): a line that never
    /// takes the bytes (held by flow control, say) does not hold the stop.
    pub shutdown_timeout: Duration,
    /// Blocking adapter: the longest read timeout, how soon the server sees
    /// a stop (default 100 ms).
    pub poll_interval: Duration,
}

impl SerialServerConfig {
    /// RTU at 19200 8E1 on `port`, reopened on failure.
    pub fn new(port: impl Into<String>) -> Self {
        Self {
            port: port.into(),
            framing: Framing::Rtu,
            baud_rate: 19_200,
            data_bits: 8,
            parity: Parity::Even,
            stop_bits: 1,
            local_echo: false,
            auto_open: true,
            reconnect_delay: Duration::from_secs(2),
            max_buffered: DEFAULT_MAX_BUFFERED,
            shutdown_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(100),
        }
    }

    /// Bits per character on the wire: start + data + parity + stop.
    pub fn bits_per_char(&self) -> u32 {
        bits_per_char(self.data_bits, self.parity, self.stop_bits)
    }

    /// The settings of the line's session.
    pub fn session(&self, engine: Arc<Engine>) -> SessionConfig {
        SessionConfig {
            local_echo: self.local_echo,
            max_buffered: self.max_buffered,
            ..SessionConfig::serial(engine, self.framing, self.baud_rate, self.bits_per_char())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn bits_per_char_counts_start_data_parity_and_stop() {
        assert_eq!(bits_per_char(8, Parity::Even, 1), 11);
        assert_eq!(bits_per_char(8, Parity::None, 2), 11);
        assert_eq!(bits_per_char(7, Parity::Odd, 1), 10);
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_its_ipv4_entry() {
        let v4 = Ipv4Addr::new(192, 0, 2, 1);
        let options = AdmissionOptions {
            allow_list: Some(vec![IpAddr::V4(v4)]),
            ..AdmissionOptions::default()
        };
        assert!(options.allows(IpAddr::V6(v4.to_ipv6_mapped())));
        assert!(!options.allows(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(AdmissionOptions::default().allows(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }
}
