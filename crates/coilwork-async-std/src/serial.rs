//! Modbus RTU / ASCII server on a serial line (feature `serial`, unix).
//!
//! The port is opened and set up with termios (through `rustix`: raw mode,
//! baud rate, data bits, parity, stop bits, no flow control, exclusive
//! access), and its file descriptor is driven by [`async_io::Async`], so the
//! server runs under async-std, smol or any `block_on`. The server type and
//! its loop are `coilwork-driver`'s. With `auto_open`, a port that cannot be
//! opened, or that fails while serving, is opened again after
//! `reconnect_delay`.

use crate::ServerError;
use crate::ServerHandle;
use crate::rt::{AsyncIo, Io};
use async_io::Async;
use coilwork_core::Engine;
use coilwork_driver::{LineOf, SerialAdapter};
use futures_lite::io::{AsyncRead, AsyncWrite};
use std::fs::File;
use std::sync::Arc;
use tracing::warn;

/// An open serial port, driven by the async-io reactor.
pub type SerialPort = Async<File>;

pub use coilwork_core::Parity;
pub use coilwork_driver::SerialStats;

/// Settings of a [`SerialServer`] (the core's, shared by every adapter).
pub use coilwork_core::options::SerialServerConfig;

/// A Modbus server on one serial line, for any executor (the driver's
/// server type on async-io).
pub type SerialServer = coilwork_driver::SerialServer<AsyncIo>;

impl SerialAdapter for AsyncIo {
    type Port = Io<SerialPort>;
    fn open_port(config: &SerialServerConfig) -> std::io::Result<Io<SerialPort>> {
        open_port(config).map(Io)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> LineOf<S> for AsyncIo {
    type Line = Io<S>;
    fn line(stream: S) -> Io<S> {
        Io(stream)
    }
}

/// Opens `config.port` non-blocking, sets up the line with termios, and registers it with async-io.
pub fn open_port(config: &SerialServerConfig) -> std::io::Result<SerialPort> {
    use rustix::fs::{Mode, OFlags};
    use rustix::termios::{self, ControlModes, InputModes, OptionalActions};
    let fd = rustix::fs::open(
        config.port.as_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut t = termios::tcgetattr(&fd)?;
    t.make_raw();
    t.set_speed(config.baud_rate)?;
    let size = match config.data_bits {
        5 => ControlModes::CS5,
        6 => ControlModes::CS6,
        7 => ControlModes::CS7,
        _ => ControlModes::CS8,
    };
    let parity = match config.parity {
        Parity::None => ControlModes::empty(),
        Parity::Even => ControlModes::PARENB,
        Parity::Odd => ControlModes::PARENB | ControlModes::PARODD,
    };
    let stop = if config.stop_bits >= 2 {
        ControlModes::CSTOPB
    } else {
        ControlModes::empty()
    };
    t.control_modes.remove(
        ControlModes::CSIZE
            | ControlModes::PARENB
            | ControlModes::PARODD
            | ControlModes::CSTOPB
            | ControlModes::CRTSCTS,
    );
    t.control_modes
        .insert(size | parity | stop | ControlModes::CREAD | ControlModes::CLOCAL);
    t.input_modes
        .remove(InputModes::IXON | InputModes::IXOFF | InputModes::IXANY);
    termios::tcsetattr(&fd, OptionalActions::Now, &t)?;
    // Like other serial libraries: one server per port. Not every device supports it.
    let _ = termios::ioctl_tiocexcl(&fd);
    Async::new(File::from(fd))
}

/// Opens `config.port` and serves `engine` on a thread of its own (driven by
/// `async_io::block_on`); returns the handle to stop it.
pub fn start_serial_server(engine: Arc<Engine>, config: SerialServerConfig) -> Result<ServerHandle, ServerError> {
    let server = SerialServer::new(engine, config);
    let handle = server.handle();
    std::thread::Builder::new()
        .name("coilwork-serial".into())
        .spawn(move || {
            if let Err(e) = async_io::block_on(server.serve_forever()) {
                warn!(error = %e, "modbus serial server failed");
            }
        })?;
    Ok(handle)
}
