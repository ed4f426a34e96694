//! A Modbus RTU server on a serial line (pymodbus's "Serial Server"):
//! 19200 baud, 8 data bits, no parity, 1 stop bit.
//!
//! Run: `cargo run --example serial_server /dev/ttyUSB0`. Without hardware,
//! make a pair of linked pseudo terminals and put a client on the other end:
//!
//! ```text
//! socat -d -d pty,raw,echo=0,link=/tmp/modbus-a pty,raw,echo=0,link=/tmp/modbus-b &
//! cargo run --example serial_server /tmp/modbus-a
//! mbpoll -m rtu -b 19200 -P none -a 1 -0 -r 0 -c 5 /tmp/modbus-b
//! ```
//!
//! Ctrl-C stops it.

use coilwork::core::storage::{DeviceContext, SequentialBlock, ServerContext};
use coilwork::core::{Engine, Framing};
use coilwork::tokio::{Parity, SerialServer, SerialServerConfig};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(port) = std::env::args().nth(1) else {
        eprintln!("usage: serial_server PORT   (e.g. /dev/ttyUSB0)");
        std::process::exit(2);
    };

    let device = DeviceContext::shared(Arc::new(SequentialBlock::zeroed(0, 100)?));
    let engine = Engine::builder(ServerContext::single(device)).build();

    let config = SerialServerConfig {
        framing: Framing::Rtu, // or Framing::Ascii
        baud_rate: 19_200,
        data_bits: 8,
        parity: Parity::None, // the Modbus default is Even; 8N1 is what most devices use
        stop_bits: 1,
        // If the port is missing (a USB adapter not plugged in yet) or fails
        // while serving, keep trying to open it every 2 s.
        auto_open: true,
        reconnect_delay: Duration::from_secs(2),
        ..SerialServerConfig::new(port.clone())
    };
    let server = SerialServer::new(Arc::new(engine), config);
    // Try once now to report a bad path early; with auto_open, serving goes on retrying.
    if let Err(e) = server.open() {
        eprintln!("{e}; retrying every 2 s");
    }
    println!("serving Modbus RTU on {port} at 19200 8N1; Ctrl-C to stop");

    let handle = server.handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        handle.stop();
    });
    server.serve_forever().await?;
    println!("stopped");
    Ok(())
}
