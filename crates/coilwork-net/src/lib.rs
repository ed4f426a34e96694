//! # coilwork-net: socket set-up shared by the coilwork adapters
//!
//! Opens the listening TCP socket and the UDP socket every adapter serves
//! (`SO_REUSEADDR`, `SO_REUSEPORT` where the OS has it), non-blocking, and
//! turns a failure into the core's [`ServerError`] (address in use, bind,
//! set-up). The adapters wrap the std sockets in their runtime's types.
//! With feature `serial`, `serial_port` turns a serial server's settings
//! into a `serialport` builder, which each adapter opens its own way.
#![forbid(unsafe_code)]

use coilwork_core::ServerError;
use coilwork_core::options::{TcpServerConfig, UdpServerConfig};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::ErrorKind;
use std::net::SocketAddr;

/// How to open a listening or datagram socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// The address to bind.
    pub addr: SocketAddr,
    /// Set `SO_REUSEADDR`.
    pub reuse_address: bool,
    /// Set `SO_REUSEPORT` where the OS has it.
    pub reuse_port: bool,
}

impl From<&TcpServerConfig> for SocketOptions {
    fn from(c: &TcpServerConfig) -> Self {
        Self {
            addr: c.address,
            reuse_address: c.allow_reuse_address,
            reuse_port: c.allow_reuse_port,
        }
    }
}

impl From<&UdpServerConfig> for SocketOptions {
    fn from(c: &UdpServerConfig) -> Self {
        Self {
            addr: c.address,
            reuse_address: c.allow_reuse_address,
            reuse_port: c.allow_reuse_port,
        }
    }
}

/// True for an accept error that concerns one would-be connection only (or
/// none yet): the accept loop goes on at once.
pub fn is_per_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted | ErrorKind::WouldBlock
    )
}

/// A set-up failure on `addr`.
fn setup_err(addr: SocketAddr) -> impl Fn(std::io::Error) -> ServerError {
    move |source| ServerError::Socket { addr, source }
}

/// A bind or listen failure on `addr`.
fn bind_err(addr: SocketAddr, source: std::io::Error) -> ServerError {
    if source.kind() == ErrorKind::AddrInUse {
        ServerError::AddrInUse { addr, source }
    } else {
        ServerError::Bind { addr, source }
    }
}

/// A socket of `ty` bound to `opts.addr`, non-blocking.
fn open(opts: &SocketOptions, ty: Type, protocol: Protocol) -> Result<Socket, ServerError> {
    let addr = opts.addr;
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol)).map_err(setup_err(addr))?;
    socket.set_reuse_address(opts.reuse_address).map_err(setup_err(addr))?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
    if opts.reuse_port {
        socket.set_reuse_port(true).map_err(setup_err(addr))?;
    }
    socket.set_nonblocking(true).map_err(setup_err(addr))?;
    socket.bind(&addr.into()).map_err(|e| bind_err(addr, e))?;
    Ok(socket)
}

/// A bound, listening, non-blocking TCP socket.
pub fn tcp_listener(opts: &SocketOptions, backlog: u32) -> Result<std::net::TcpListener, ServerError> {
    let socket = open(opts, Type::STREAM, Protocol::TCP)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog).map_err(|e| bind_err(opts.addr, e))?;
    Ok(socket.into())
}

/// A bound, non-blocking UDP socket.
pub fn udp_socket(opts: &SocketOptions) -> Result<std::net::UdpSocket, ServerError> {
    Ok(open(opts, Type::DGRAM, Protocol::UDP)?.into())
}

/// A `serialport` builder for `config.port` with the line's settings (baud
/// rate, data bits, parity, stop bits, no flow control), not opened yet.
#[cfg(feature = "serial")]
pub fn serial_port(config: &coilwork_core::options::SerialServerConfig) -> serialport::SerialPortBuilder {
    use coilwork_core::Parity;
    let data_bits = match config.data_bits {
        5 => serialport::DataBits::Five,
        6 => serialport::DataBits::Six,
        7 => serialport::DataBits::Seven,
        _ => serialport::DataBits::Eight,
    };
    let parity = match config.parity {
        Parity::None => serialport::Parity::None,
        Parity::Even => serialport::Parity::Even,
        Parity::Odd => serialport::Parity::Odd,
    };
    let stop_bits = if config.stop_bits >= 2 {
        serialport::StopBits::Two
    } else {
        serialport::StopBits::One
    };
    serialport::new(&config.port, config.baud_rate)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(serialport::FlowControl::None)
}
